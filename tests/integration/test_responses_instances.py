"""A response is a recorded message like any other: it survives its process and is
served, resumed, cancelled and deleted from any instance sharing the database and Redis.

Real `chatrelay serve` processes (`Stack`), the official async `openai` SDK, the fake
upstream recording when its connection closes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest

from tests.conftest import CLIENT_KEYS, Stack
from tests.fakes.service import ServiceProcess
from tests.fakes.upstream import Reply
from tests.integration.test_control_channel import long_reply, scale_out_env


def _sdk(service: ServiceProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=service.base_url + "/v1", api_key=CLIENT_KEYS["acme"], max_retries=0, timeout=20
    )


async def _events(
    client: openai.AsyncOpenAI, rid: str, *, after: int | None = None, stop_after: int = 0
) -> list[Any]:
    """The stream of `rid` (after sequence number `after`), to its end or `stop_after`
    text deltas."""
    extra = {} if after is None else {"starting_after": after}
    seen: list[Any] = []
    deltas = 0
    async with await client.responses.retrieve(rid, stream=True, **extra) as stream:
        async for event in stream:
            seen.append(event)
            deltas += event.type == "response.output_text.delta"
            if stop_after and deltas >= stop_after:
                break
    return seen


def _dumped(events: list[Any]) -> list[dict[str, Any]]:
    return [e.model_dump() for e in events]


async def test_followed_resumed_and_cancelled_from_another_instance(stack: Stack) -> None:
    env = scale_out_env()
    a, b = stack.service(**env), stack.service(**env)
    stack.upstream.enqueue(Reply(tokens=[f"t{i} " for i in range(40)], delay=0.03))
    on_a, on_b = _sdk(a), _sdk(b)
    created = await on_a.responses.create(model="fake-model", input="Go", background=True)
    first = await _events(on_b, created.id, stop_after=5)  # live, on the other instance
    cut = first[-1].sequence_number
    rest = await _events(on_b, created.id, after=cut)
    whole = await _events(on_a, created.id)
    assert _dumped(first + rest) == _dumped(whole), "no gap, no duplicate across instances"
    assert whole[-1].type == "response.completed"
    assert (await on_b.responses.retrieve(created.id)).output_text == "".join(
        f"t{i} " for i in range(40)
    )

    stack.upstream.enqueue(long_reply("c"))
    running = await on_a.responses.create(model="fake-model", input="Long", background=True)
    await _events(on_b, running.id, stop_after=2)
    asked = time.monotonic()
    cancelled = await on_b.responses.cancel(running.id)
    closed = await asyncio.to_thread(stack.upstream.wait_for_disconnect, 5)
    assert closed is not None and closed - asked < 1.0, "A's upstream request closed"
    assert cancelled.status == "cancelled" and cancelled.output_text.startswith("c0 ")
    assert (await on_a.responses.retrieve(running.id)).status == "cancelled"


async def test_deleted_from_another_instance_while_running(stack: Stack) -> None:
    env = scale_out_env()
    a, b = stack.service(**env), stack.service(**env)
    stack.upstream.enqueue(long_reply("d"))
    on_a, on_b = _sdk(a), _sdk(b)
    running = await on_a.responses.create(model="fake-model", input="Long", background=True)
    await _events(on_a, running.id, stop_after=2)
    asked = time.monotonic()
    await on_b.responses.delete(running.id)
    closed = await asyncio.to_thread(stack.upstream.wait_for_disconnect, 5)
    assert closed is not None and closed - asked < 1.0, "A stopped generating it"
    for client in (on_a, on_b):
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(running.id)


async def test_a_response_whose_process_died_reads_failed_and_replays(stack: Stack) -> None:
    """kill -9 mid-answer: the next process marks it interrupted; the response reads
    `failed` with the partial output kept, and its stream replays to `response.failed`
    at the same sequence numbers a live reader saw."""
    a = stack.service()
    stack.upstream.enqueue(long_reply("k", n=400))
    on_a = _sdk(a)
    running = await on_a.responses.create(model="fake-model", input="Long", background=True)
    seen = await _events(on_a, running.id, stop_after=4)
    await asyncio.sleep(0.5)  # past a checkpoint (CHATRELAY_CHECKPOINT_INTERVAL 0.2 s)
    a.kill()
    b = stack.service()
    on_b = _sdk(b)
    after = await on_b.responses.retrieve(running.id)
    assert after.status == "failed"
    assert after.error is not None
    assert after.output_text.startswith("k0 k1 k2 k3 ")
    replay = await _events(on_b, running.id)
    assert _dumped(replay[: len(seen)]) == _dumped(seen), "same events, same numbers"
    assert replay[-1].type == "response.failed"
    assert [e.sequence_number for e in replay] == list(range(len(replay)))
