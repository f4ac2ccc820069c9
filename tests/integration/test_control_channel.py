"""Cancel, delete, supersede and watchers reach the instance that runs the generation.

Two real `chatrelay serve` processes on one database (SQLite file or PostgreSQL) and the
machine's Redis, each test under its own Redis key prefix. The fake upstream records
when a connection closed, which is how "the owner stopped reading" is observed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx

from tests.conftest import Stack, require_redis
from tests.fakes.service import ServiceProcess
from tests.fakes.sse_client import Frame, frames
from tests.fakes.upstream import Reply
from tests.integration.helpers import new_conversation, post_accepted, wait_final


def scale_out_env() -> dict[str, str]:
    """Settings of instances that share Redis; a prefix of their own per test."""
    return {
        "REDIS_URL": require_redis(),
        "CHATRELAY_REDIS_PREFIX": f"chatrelay-test-{uuid.uuid4().hex[:10]}:",
        "CHATRELAY_LEASE_TTL": "2",
    }


def two_instances(stack: Stack, **extra: str) -> tuple[ServiceProcess, ServiceProcess]:
    env = {**scale_out_env(), **extra}
    return stack.service(**env), stack.service(**env)


def long_reply(tag: str, n: int = 300, delay: float = 0.05) -> Reply:
    return Reply(tokens=[f"{tag}{i} " for i in range(n)], delay=delay)


async def read_deltas(client: httpx.AsyncClient, mid: str, n: int) -> list[Frame]:
    """Follow the message until `n` deltas arrived, then leave."""
    seen: list[Frame] = []
    async with client.stream("GET", f"/v1/messages/{mid}/events") as response:
        assert response.status_code == 200
        async for frame in frames(response):
            if frame.event is not None:
                seen.append(frame)
            if sum(f.event == "delta" for f in seen) >= n:
                break
    return seen


async def follow_to_end(client: httpx.AsyncClient, mid: str) -> list[Frame]:
    async with client.stream("GET", f"/v1/messages/{mid}/events") as response:
        assert response.status_code == 200
        return [f async for f in frames(response) if f.event is not None]


def without_stream_url(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "stream_url"}


async def test_cancel_via_another_instance_stops_the_owner_within_a_second(stack: Stack) -> None:
    a, b = two_instances(stack)
    stack.upstream.enqueue(long_reply("c"))
    stack.upstream.wait_for_disconnect(timeout=0)  # forget earlier disconnects
    async with stack.client(a) as on_a, stack.client(b) as on_b:
        cid = await new_conversation(on_a)
        mid = (await post_accepted(on_a, cid, "long one"))["assistant_message"]["id"]
        following = asyncio.create_task(follow_to_end(on_a, mid))
        await read_deltas(on_a, mid, 3)

        cancelled_at = time.monotonic()
        answer = await on_b.post(f"/v1/messages/{mid}/cancel")
        upstream_closed = await asyncio.to_thread(stack.upstream.wait_for_disconnect, 5.0)
        assert answer.status_code == 200, answer.text
        assert upstream_closed is not None, "the owner never closed its upstream connection"
        assert upstream_closed - cancelled_at < 1.0

        cancelled = answer.json()
        assert cancelled["status"] == "cancelled"
        assert cancelled["content"].startswith("c0 c1 c2 ")
        # Exactly what a cancel on the owner answers: the cancelled message as recorded.
        stored = await wait_final(on_b, mid)
        assert without_stream_url(stored) == cancelled
        seen_on_a = await following
        assert seen_on_a[-1].event == "done"
        assert seen_on_a[-1].json["message"] == cancelled

        for client in (on_b, on_a):  # a second cancel, anywhere: the same 409
            again = await client.post(f"/v1/messages/{mid}/cancel")
            assert again.status_code == 409
            assert again.json()["error"]["code"] == "message_finished"


async def test_cancel_of_a_message_that_ended_meanwhile_is_message_finished(stack: Stack) -> None:
    a, b = two_instances(stack)
    stack.upstream.enqueue(Reply(tokens=["short ", "answer"], delay=0.05))
    async with stack.client(a) as on_a, stack.client(b) as on_b:
        cid = await new_conversation(on_a)
        mid = (await post_accepted(on_a, cid, "quick"))["assistant_message"]["id"]
        await wait_final(on_a, mid)
        answer = await on_b.post(f"/v1/messages/{mid}/cancel")
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "message_finished"


async def test_delete_on_another_instance_stops_the_generation(stack: Stack) -> None:
    a, b = two_instances(stack)
    stack.upstream.enqueue(long_reply("d"))
    stack.upstream.wait_for_disconnect(timeout=0)
    async with stack.client(a) as on_a, stack.client(b) as on_b:
        cid = await new_conversation(on_a)
        mid = (await post_accepted(on_a, cid, "delete me"))["assistant_message"]["id"]
        await read_deltas(on_a, mid, 2)
        deleted_at = time.monotonic()
        deleted = await on_b.delete(f"/v1/conversations/{cid}")
        assert deleted.status_code == 204
        upstream_closed = await asyncio.to_thread(stack.upstream.wait_for_disconnect, 5.0)
        assert upstream_closed is not None, "the owner kept generating a deleted message"
        assert upstream_closed - deleted_at < 1.0
        assert (await on_a.get(f"/v1/messages/{mid}")).status_code == 404
        assert (await on_b.get(f"/v1/messages/{mid}")).status_code == 404


async def test_regenerate_on_another_instance_supersedes_the_running_answer(
    stack: Stack,
) -> None:
    a, b = two_instances(stack)
    stack.upstream.enqueue(
        Reply(tokens=["first ", "answer"]),
        long_reply("s"),
        Reply(tokens=["regenerated ", "answer"]),
    )
    stack.upstream.wait_for_disconnect(timeout=0)
    async with stack.client(a) as on_a, stack.client(b) as on_b:
        cid = await new_conversation(on_a)
        first = (await post_accepted(on_a, cid, "one"))["assistant_message"]["id"]
        await wait_final(on_a, first)
        running = (await post_accepted(on_a, cid, "two"))["assistant_message"]["id"]
        await read_deltas(on_a, running, 2)

        regenerated_at = time.monotonic()
        answer = await on_b.post(f"/v1/messages/{first}/regenerate", json={})
        assert answer.status_code == 202, answer.text
        upstream_closed = await asyncio.to_thread(stack.upstream.wait_for_disconnect, 5.0)
        assert upstream_closed is not None, "the superseded generation kept running"
        assert upstream_closed - regenerated_at < 1.0
        replaced = await wait_final(on_b, running)  # the record (A shows its memory)
        assert replaced["status"] == "cancelled"
        assert replaced["superseded_by"] is not None
        new = await wait_final(on_b, answer.json()["assistant_message"]["id"])
        assert new["status"] == "completed"
        assert new["content"] == "regenerated answer"


async def test_cancel_on_disconnect_counts_watchers_on_every_instance(stack: Stack) -> None:
    a, b = two_instances(stack)
    stack.upstream.enqueue(long_reply("w", n=400))
    stack.upstream.wait_for_disconnect(timeout=0)
    async with stack.client(a) as on_a, stack.client(b) as on_b:
        cid = await new_conversation(on_a)
        posted = await post_accepted(on_a, cid, "tabs", cancel_on_disconnect=True)
        mid = posted["assistant_message"]["id"]

        async def watch(
            client: httpx.AsyncClient, joined: asyncio.Event, leave: asyncio.Event
        ) -> None:
            async with client.stream("GET", f"/v1/messages/{mid}/events") as response:
                async for frame in frames(response):
                    if frame.event == "delta":
                        joined.set()
                    if leave.is_set():
                        return

        async def open_tab(client: httpx.AsyncClient) -> tuple[asyncio.Task[None], asyncio.Event]:
            joined, leave = asyncio.Event(), asyncio.Event()
            task = asyncio.create_task(watch(client, joined, leave))
            await asyncio.wait_for(joined.wait(), 10)
            return task, leave

        async def close_tab(tab: tuple[asyncio.Task[None], asyncio.Event]) -> None:
            task, leave = tab
            leave.set()
            await asyncio.wait_for(task, 10)

        async def still_streaming() -> bool:
            await asyncio.sleep(0.6)  # let the watcher notice cross Redis and the stop land
            return bool((await on_a.get(f"/v1/messages/{mid}")).json()["status"] == "streaming")

        tab_b1 = await open_tab(on_b)
        tab_a = await open_tab(on_a)
        await close_tab(tab_b1)  # a watcher on B leaves; the one on A still watches
        assert await still_streaming(), "a watcher on the owner keeps it alive"
        tab_b2 = await open_tab(on_b)
        await asyncio.sleep(0.5)  # B's `joined` reaches A before A's own tab closes
        await close_tab(tab_a)  # the owner's own watcher leaves; B's still counts
        assert await still_streaming(), "a watcher on another instance keeps it alive"
        left_at = time.monotonic()
        await close_tab(tab_b2)  # the last watcher anywhere leaves
        final = await wait_final(on_a, mid)
        upstream_closed = await asyncio.to_thread(stack.upstream.wait_for_disconnect, 5.0)
    assert final["status"] == "cancelled"
    assert upstream_closed is not None and upstream_closed - left_at < 1.5


async def test_without_redis_a_cancel_elsewhere_stays_not_owner(stack: Stack) -> None:
    a, b = stack.service(), stack.service()
    stack.upstream.enqueue(long_reply("n", n=100))
    async with stack.client(a) as on_a, stack.client(b) as on_b:
        cid = await new_conversation(on_a)
        mid = (await post_accepted(on_a, cid, "local only"))["assistant_message"]["id"]
        await read_deltas(on_a, mid, 1)
        answer = await on_b.post(f"/v1/messages/{mid}/cancel")
        assert answer.status_code == 409
        assert answer.json()["error"]["code"] == "not_owner"
        assert (await on_a.post(f"/v1/messages/{mid}/cancel")).status_code == 200
