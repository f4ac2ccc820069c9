"""Generations outlive connections: cancel, resume, disconnects, shutdown and crashes."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx

from tests.conftest import Relay, Stack
from tests.fakes.sse_client import Frame, collect, content_of, events, frames
from tests.fakes.upstream import Reply
from tests.integration.helpers import new_conversation, post_accepted, wait_final


async def _follow(
    client: httpx.AsyncClient, mid: str, last_event_id: str | None = None
) -> tuple[int, list[Frame]]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    async with client.stream("GET", f"/v1/messages/{mid}/events", headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, []
        return 200, events(await collect(response))


def _triples(evs: list[Frame]) -> list[tuple[str | None, str | None, str | None]]:
    return [(e.event, e.id, e.data) for e in evs]


async def test_cancel_closes_upstream_and_keeps_partial_text(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=[f"c{i} " for i in range(200)], delay=0.05))
    relay.upstream.wait_for_disconnect(timeout=0)  # forget earlier disconnects
    async with relay.client() as client:
        cid = await new_conversation(client)
        posted = await post_accepted(client, cid, "long one")
        mid = posted["assistant_message"]["id"]
        seen: list[Frame] = []
        async with client.stream("GET", f"/v1/messages/{mid}/events") as response:
            async for frame in frames(response):
                if frame.event is None:
                    continue
                seen.append(frame)
                if len([f for f in seen if f.event == "delta"]) == 3 and len(seen) == 4:
                    cancelled_at = time.monotonic()
                    answer = await client.post(f"/v1/messages/{mid}/cancel")
                    assert answer.status_code == 200, answer.text
                    assert answer.json()["status"] == "cancelled"
        upstream_saw = await asyncio.to_thread(relay.upstream.wait_for_disconnect, 5.0)
        assert upstream_saw is not None, "the upstream never saw the connection close"
        assert upstream_saw - cancelled_at < 1.0
        assert seen[-1].event == "done"
        final = seen[-1].json["message"]
        assert final["status"] == "cancelled"
        stored = await wait_final(client, mid)
        assert stored["status"] == "cancelled"
        assert stored["content"] == content_of(seen) == final["content"]
        assert stored["content"].startswith("c0 c1 c2 ")
        again = await client.post(f"/v1/messages/{mid}/cancel")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "message_finished"
        user_mid = posted["user_message"]["id"]
        assert (await client.post(f"/v1/messages/{user_mid}/cancel")).status_code == 409


async def test_cancel_on_disconnect_cancels_when_client_leaves(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=[f"d{i} " for i in range(200)], delay=0.05))
    relay.upstream.wait_for_disconnect(timeout=0)
    async with relay.client() as client:
        cid = await new_conversation(client)
        mid = None
        async with client.stream(
            "POST",
            f"/v1/conversations/{cid}/messages",
            json={"content": "bye", "cancel_on_disconnect": True},
            headers={"Accept": "text/event-stream"},
        ) as response:
            deltas = 0
            async for frame in frames(response):
                if frame.event == "start":
                    mid = frame.json["message"]["id"]
                deltas += frame.event == "delta"
                if deltas == 2:
                    break
        assert mid is not None
        final = await wait_final(client, mid)
        assert final["status"] == "cancelled"
        assert final["content"].startswith("d0 d1 ")
        assert await asyncio.to_thread(relay.upstream.wait_for_disconnect, 5.0) is not None


async def test_resume_at_every_cursor_while_running_and_after(relay: Relay) -> None:
    tokens = [f"r{i} " for i in range(12)]
    relay.upstream.enqueue(Reply(tokens=tokens, delay=0.1))
    async with relay.client() as client:
        cid = await new_conversation(client)
        posted = await post_accepted(client, cid, "resume me")
        mid = posted["assistant_message"]["id"]

        # While running: at every cursor the uninterrupted subscriber receives, a client
        # reconnects from it at once and must get exactly the rest.
        resumes: dict[int, asyncio.Task[tuple[int, list[Frame]]]] = {}
        full: list[Frame] = []
        async with client.stream("GET", f"/v1/messages/{mid}/events") as response:
            async for frame in frames(response):
                if frame.event is None:
                    continue
                full.append(frame)
                if frame.event != "done":
                    cursor = int(frame.id or "0")
                    resumes[cursor] = asyncio.create_task(_follow(client, mid, str(cursor)))
        assert len(resumes) == len(full) - 1 == len(tokens) + 1
        for cursor, task in resumes.items():
            status, rest = await task
            assert status == 200, cursor
            assert _triples(rest) == _triples(full[cursor:]), cursor

        # Finished: the log still in memory, then the same process after the TTL (which
        # path serves it then is not visible over HTTP: tests/unit/generation proves the
        # switch to the database), then a second process on the same database that never
        # ran the generation, so only the stored message can answer there.
        await _check_finished_log(client, mid, full, "memory")
        await asyncio.sleep(1.5)  # CHATRELAY_FINISHED_LOG_TTL=1 in tests
        await _check_finished_log(client, mid, full, "after the TTL")
    second = relay.second_service()
    try:
        second.start()
        async with relay.client(service=second) as other:
            await _check_finished_log(other, mid, full, "database")
    finally:
        second.terminate()


async def _check_finished_log(
    client: httpx.AsyncClient, mid: str, full: list[Frame], phase: str
) -> None:
    """From every cursor, a finished message's log is the rest of what streamed live."""
    for cursor in range(1, len(full)):
        status, rest = await _follow(client, mid, str(cursor))
        assert status == 200, (phase, cursor)
        assert _triples(rest) == _triples(full[cursor:]), (phase, cursor)
    status, _ = await _follow(client, mid, full[-1].id)
    assert status == 204, "resuming from the terminal event must answer 204"
    status, whole = await _follow(client, mid)
    assert _triples(whole) == _triples(full), phase
    by_query = await client.get(f"/v1/messages/{mid}/events?last_event_id={len(full)}")
    assert by_query.status_code == 204
    for bad in ("abc", "999", "-1", "0"):
        bad_answer = await client.get(f"/v1/messages/{mid}/events", headers={"Last-Event-ID": bad})
        assert bad_answer.status_code == 400, (phase, bad)
        assert bad_answer.json()["error"]["code"] == "invalid_cursor"


async def test_sigterm_finishes_short_and_interrupts_long_generations(stack: Stack) -> None:
    service = stack.service(CHATRELAY_SHUTDOWN_GRACE="1.5")
    stack.upstream.enqueue(
        Reply(tokens=[f"s{i} " for i in range(5)], delay=0.1),
        Reply(tokens=[f"l{i} " for i in range(300)], delay=0.05),
    )
    async with stack.client(service) as client:
        cid = await new_conversation(client)
        short = (await post_accepted(client, cid, "short"))["assistant_message"]["id"]
        await asyncio.to_thread(stack.upstream.wait_for_requests, 1)
        long_ = (await post_accepted(client, cid, "long"))["assistant_message"]["id"]
        await asyncio.to_thread(stack.upstream.wait_for_requests, 2)
        short_task = asyncio.create_task(_follow(client, short))
        long_task = asyncio.create_task(_follow(client, long_))
        await asyncio.sleep(0.3)
        assert service.proc is not None
        service.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        refused = await client.post(f"/v1/conversations/{cid}/messages", json={"content": "x"})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "shutting_down"
        _, short_events = await short_task
        _, long_events = await long_task
        exit_code = await asyncio.to_thread(service.proc.wait, 30)
    assert exit_code == 0, service.log()
    assert short_events[-1].event == "done"
    assert short_events[-1].json["message"]["status"] == "completed"
    assert long_events[-1].event == "error"
    assert long_events[-1].json["error"]["code"] == "shutting_down"
    interrupted = long_events[-1].json["message"]
    assert interrupted["status"] == "interrupted"
    assert interrupted["content"] == content_of(long_events) != ""

    restarted = stack.service()
    async with stack.client(restarted) as client:
        stored_long = (await client.get(f"/v1/messages/{long_}")).json()
        stored_short = (await client.get(f"/v1/messages/{short}")).json()
        conv = (await client.get(f"/v1/conversations/{cid}")).json()
    assert stored_long["status"] == "interrupted"
    assert stored_long["content"] == interrupted["content"]
    assert stored_short["status"] == "completed"
    assert stored_short["content"] == "".join(f"s{i} " for i in range(5))
    assert [m["content"] for m in conv["messages"] if m["role"] == "user"] == ["short", "long"]


async def test_kill_9_then_restart_marks_interrupted_with_checkpoint(stack: Stack) -> None:
    service = stack.service(CHATRELAY_CHECKPOINT_INTERVAL="0.2")
    stack.upstream.enqueue(Reply(tokens=[f"k{i} " for i in range(400)], delay=0.02))
    async with stack.client(service) as client:
        cid = await new_conversation(client)
        mid = (await post_accepted(client, cid, "crash"))["assistant_message"]["id"]
        seen: list[Frame] = []
        async with client.stream("GET", f"/v1/messages/{mid}/events") as response:
            async for frame in frames(response):
                if frame.event == "delta":
                    seen.append(frame)
                if len(seen) == 40:
                    break
        await asyncio.sleep(0.6)  # a few checkpoints happen after what we saw
        service.kill()
    restarted = stack.service()
    async with stack.client(restarted) as client:
        stored = (await client.get(f"/v1/messages/{mid}")).json()
        status, replay = await _follow(client, mid)
    expected_prefix = content_of(seen)
    assert stored["status"] == "interrupted"
    assert stored["error"]["code"] == "interrupted"
    assert stored["content"].startswith(expected_prefix), "checkpoint lost text already streamed"
    assert "".join(f"k{i} " for i in range(400)).startswith(stored["content"])
    assert status == 200 and replay[-1].event == "error"
    assert content_of(replay) == stored["content"]

    # The client reconnects with the last id it saw: it gets what was saved after that,
    # then the terminal event.
    async with stack.client(restarted) as client:
        status, resumed = await _follow(client, mid, seen[-1].id)
        assert status == 200 and resumed[-1].event == "error"
        assert content_of(seen) + content_of(resumed) == stored["content"]
        # An id the crashed process gave out after its last checkpoint (the stored log
        # never had it) still leads to the terminal event, and that event's id ends it.
        lost_id = str(len(replay) + 5)
        status, resumed = await _follow(client, mid, lost_id)
        assert status == 200
        assert [e.event for e in resumed] == ["error"]
        assert resumed[0].json["message"]["status"] == "interrupted"
        status, _ = await _follow(client, mid, resumed[0].id)
        assert status == 204


async def test_second_signal_exits_at_once(stack: Stack) -> None:
    service = stack.service()  # default 25 s grace: only the second signal can end it soon
    stack.upstream.enqueue(Reply(tokens=[f"x{i} " for i in range(400)], delay=0.05))
    async with stack.client(service) as client:
        cid = await new_conversation(client)
        mid = (await post_accepted(client, cid, "stay"))["assistant_message"]["id"]
        await asyncio.to_thread(stack.upstream.wait_for_requests, 1)
        await asyncio.sleep(0.3)
        assert service.proc is not None
        service.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert service.proc.poll() is None, "the first signal drains"
        started = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(service.proc.wait, 15)
        assert time.monotonic() - started < 7, "a second signal must not wait for the grace"
    restarted = stack.service()
    async with stack.client(restarted) as client:
        stored = (await client.get(f"/v1/messages/{mid}")).json()
    assert stored["status"] == "interrupted"
    assert stored["content"].startswith("x0 ")


async def test_cancel_on_disconnect_waits_for_the_last_watcher(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=[f"w{i} " for i in range(200)], delay=0.05))
    async with relay.client() as client:
        cid = await new_conversation(client)
        posted = await post_accepted(client, cid, "two tabs", cancel_on_disconnect=True)
        mid = posted["assistant_message"]["id"]

        async def watch(deltas: int) -> None:
            async with client.stream("GET", f"/v1/messages/{mid}/events") as response:
                seen = 0
                async for frame in frames(response):
                    seen += frame.event == "delta"
                    if seen >= deltas:
                        return

        first = asyncio.create_task(watch(3))
        second = asyncio.create_task(watch(10_000))
        await first  # one tab closes early
        await asyncio.sleep(0.5)
        running = (await client.get(f"/v1/messages/{mid}")).json()
        assert running["status"] == "streaming", "another tab is still watching"
        second.cancel()  # the last tab closes
        await asyncio.gather(second, return_exceptions=True)
        final = await wait_final(client, mid)
    assert final["status"] == "cancelled"
