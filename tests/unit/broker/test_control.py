"""The control channel on the real Redis: requests get replies, a missing listener is
known at once, notices arrive in order, and junk on a channel breaks nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from chatrelay.broker.control import CancelReply, Command
from chatrelay.broker.redis_control import RedisControlBus
from tests.conftest import require_redis
from tests.unit.generation.harness import until


@pytest.fixture
def prefix() -> str:
    return f"chatrelay-test-{uuid.uuid4().hex[:10]}:"


@pytest.fixture
async def pair(
    prefix: str,
) -> AsyncIterator[tuple[RedisControlBus, RedisControlBus, list[Command]]]:
    url = require_redis()
    received: list[Command] = []

    async def answer(command: Command) -> CancelReply | None:
        received.append(command)
        if command["kind"] == "cancel":
            return {"outcome": "not_running", "message": {"id": command["message_id"]}}
        return None

    async def ignore(command: Command) -> CancelReply | None:
        return None

    a = RedisControlBus(url, prefix=prefix, instance_id="inst_a")
    b = RedisControlBus(url, prefix=prefix, instance_id="inst_b")
    await a.start(answer)
    await b.start(ignore)
    try:
        yield a, b, received
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_request_gets_the_owners_reply(
    pair: tuple[RedisControlBus, RedisControlBus, list[Command]],
) -> None:
    _, b, received = pair
    reply = await b.request(
        "inst_a", {"kind": "cancel", "tenant": "t", "message_id": "m1"}, reply_within=5
    )
    assert reply == {"outcome": "not_running", "message": {"id": "m1"}}
    assert received == [{"kind": "cancel", "tenant": "t", "message_id": "m1"}]


async def test_a_request_to_nobody_is_none_at_once(
    pair: tuple[RedisControlBus, RedisControlBus, list[Command]],
) -> None:
    _, b, _ = pair
    started = time.monotonic()
    reply = await b.request(
        "inst_dead", {"kind": "cancel", "tenant": "t", "message_id": "m"}, reply_within=5
    )
    assert reply is None
    assert time.monotonic() - started < 1.0, "no listener is known without waiting"


async def test_notices_arrive_in_order_and_junk_is_ignored(
    pair: tuple[RedisControlBus, RedisControlBus, list[Command]], prefix: str
) -> None:
    _, b, received = pair
    raw = redis.Redis.from_url(require_redis())
    try:
        await raw.publish(f"{prefix}control:inst_a", b"not json")
        await raw.publish(f"{prefix}control:inst_a", b"[1, 2]")
    finally:
        await raw.aclose()
    for i in range(50):
        b.notify("inst_a", {"kind": "watcher_joined", "message_id": f"m{i}", "watch_id": "w"})
    await until(lambda: len(received) >= 50, what="50 notices")
    assert [c["message_id"] for c in received if c["kind"] == "watcher_joined"] == [
        f"m{i}" for i in range(50)
    ]
