"""Leases: a dead owner's message is closed by another instance, a live one never is.

Two real `chatrelay serve` processes on one database with a 2 s (or 1 s) lease, so the
bounds are seconds: TTL + sweep interval (TTL / 3) + the follower's poll.
"""

from __future__ import annotations

import asyncio
import signal
import time

from tests.conftest import Stack
from tests.fakes.sse_client import Frame, content_of, frames
from tests.fakes.upstream import Reply
from tests.integration.helpers import new_conversation, post_accepted, wait_final
from tests.integration.test_control_channel import (
    follow_to_end,
    long_reply,
    read_deltas,
    scale_out_env,
)

TTL = 2.0


async def test_kill_9_owner_then_another_instance_closes_the_message(stack: Stack) -> None:
    env = scale_out_env()
    a, b = stack.service(**env), stack.service(**env)
    stack.upstream.enqueue(long_reply("k", n=600, delay=0.02))
    async with stack.client(a) as on_a, stack.client(b) as on_b:
        cid = await new_conversation(on_a)
        mid = (await post_accepted(on_a, cid, "crash"))["assistant_message"]["id"]
        seen_on_a = await read_deltas(on_a, mid, 30)
        await asyncio.sleep(0.5)  # a checkpoint or two after what A's client saw

        seen_on_b: list[Frame] = []
        error_at: list[float] = []

        async def follow_on_b() -> None:
            async with on_b.stream("GET", f"/v1/messages/{mid}/events") as response:
                async for frame in frames(response):
                    if frame.event is not None:
                        seen_on_b.append(frame)
                    if frame.event == "error":
                        error_at.append(time.monotonic())

        following = asyncio.create_task(follow_on_b())
        await asyncio.sleep(0.3)
        a.kill()
        killed_at = time.monotonic()

        # The owner is gone: a cancel says so at once instead of hanging.
        refused = await on_b.post(f"/v1/messages/{mid}/cancel")
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "owner_unreachable"

        await asyncio.wait_for(following, TTL * 4)
        stored = await wait_final(on_b, mid)
        finished = await on_b.post(f"/v1/messages/{mid}/cancel")

    assert error_at, "B's subscriber never got the error event"
    assert error_at[0] - killed_at < TTL + TTL / 3 + 1.5
    assert seen_on_b[-1].event == "error"
    assert seen_on_b[-1].json["error"]["code"] == "interrupted"
    assert stored["status"] == "interrupted"
    assert stored["error"]["code"] == "interrupted"
    assert stored["content"].startswith(content_of(seen_on_a)), "checkpointed text was lost"
    # Live through Redis, B may have seen tokens past A's last checkpoint; what is stored
    # is that checkpoint, a prefix of what B saw.
    assert content_of(seen_on_b).startswith(stored["content"])
    assert finished.status_code == 409
    assert finished.json()["error"]["code"] == "message_finished"


async def test_a_live_owner_outlives_many_lease_ttls(stack: Stack) -> None:
    # A 1 s lease and an upstream that stays silent for 1.2 s between tokens (nothing to
    # checkpoint meanwhile): only the renewals keep the message the owner's.
    env = {**scale_out_env(), "CHATRELAY_LEASE_TTL": "1"}
    a = stack.service(**env)
    tokens = [f"t{i} " for i in range(5)]
    stack.upstream.enqueue(Reply(tokens=tokens, delay=1.2))
    async with stack.client(a) as on_a:
        cid = await new_conversation(on_a)
        started = time.monotonic()
        mid = (await post_accepted(on_a, cid, "slow"))["assistant_message"]["id"]
        await read_deltas(on_a, mid, 1)
        b = stack.service(**env)  # its start-up and its sweeps run beside the live owner
        async with stack.client(b) as on_b:
            seen_on_b = await follow_to_end(on_b, mid)
            stored = await wait_final(on_a, mid)
    assert time.monotonic() - started > 4.0, "the generation must outlive several TTLs"
    assert stored["status"] == "completed"
    assert stored["content"] == "".join(tokens)
    assert seen_on_b[-1].event == "done"


async def test_a_stalled_owner_that_still_listens_is_not_overruled(stack: Stack) -> None:
    """A live owner whose event loop stalls past its lease (here: SIGSTOP for 3 TTLs, as an
    overloaded process misses renewals) keeps its message: it is still subscribed to its
    control channel, which a dead process never is. Resumed, it finishes the answer."""
    env = {**scale_out_env(), "CHATRELAY_LEASE_TTL": "1"}
    a, b = stack.service(**env), stack.service(**env)
    tokens = [f"s{i} " for i in range(30)]
    stack.upstream.enqueue(Reply(tokens=tokens, delay=0.05))
    async with stack.client(a) as on_a, stack.client(b) as on_b:
        cid = await new_conversation(on_a)
        mid = (await post_accepted(on_a, cid, "stall"))["assistant_message"]["id"]
        await read_deltas(on_a, mid, 2)
        assert a.proc is not None
        a.proc.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(3.5)  # B sweeps every 1/3 s; A's lease expired long ago
            during = (await on_b.get(f"/v1/messages/{mid}")).json()
        finally:
            a.proc.send_signal(signal.SIGCONT)
        assert during["status"] == "streaming", during.get("error")
        stored = await wait_final(on_b, mid)
    assert stored["status"] == "completed"
    assert stored["content"] == "".join(tokens)
