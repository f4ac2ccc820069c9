"""Two chatrelay processes on one database and one Redis: a message generated on A is
followed live on B, with the same ids and data as A's own subscriber and little lag;
B resumes with `Last-Event-ID`; Redis stopped and restarted mid-stream loses nothing."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack, require_redis
from tests.fakes.redis_server import RedisServer
from tests.fakes.service import ServiceProcess
from tests.fakes.sse_client import Frame, frames
from tests.fakes.upstream import Reply
from tests.integration.helpers import new_conversation, post_accepted, wait_final
from tests.integration.scrape import scrape

pytestmark = pytest.mark.redis


def _redis_env(url: str) -> dict[str, str]:
    return {"REDIS_URL": url, "CHATRELAY_REDIS_PREFIX": f"chatrelay-it-{uuid.uuid4().hex[:10]}:"}


@dataclass
class Follower:
    """One subscriber's events, each with the moment it arrived."""

    frames: list[Frame] = field(default_factory=list)
    arrived: dict[str, float] = field(default_factory=dict)

    @property
    def wire(self) -> list[tuple[str | None, str | None, str | None]]:
        return [(f.id, f.event, f.data) for f in self.frames]


async def follow(
    client: httpx.AsyncClient,
    mid: str,
    *,
    last_event_id: str | None = None,
    stop_after: int | None = None,
    started: asyncio.Event | None = None,
) -> Follower:
    """Read `/events` until the terminal event (or `stop_after` events, then hang up)."""
    out = Follower()
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    async with client.stream("GET", f"/v1/messages/{mid}/events", headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        async for frame in frames(response):
            if frame.event is None:
                continue
            assert frame.id is not None
            out.arrived[frame.id] = time.monotonic()
            out.frames.append(frame)
            if started is not None:
                started.set()
            if frame.event in ("done", "error") or len(out.frames) == stop_after:
                break
    return out


def lags(owner: Follower, other: Follower) -> list[float]:
    """Per delta event: how much later it reached B's subscriber than A's."""
    return [
        other.arrived[f.id] - owner.arrived[f.id]
        for f in owner.frames
        if f.event == "delta" and f.id in other.arrived
    ]


def _slow_reply(tokens: int, delay: float = 0.05) -> tuple[Reply, str]:
    words = [f"w{i} " for i in range(tokens)]
    return Reply(tokens=words, delay=delay, first_delay=0.3), "".join(words)


async def _follow_on_both(
    stack: Stack, a: ServiceProcess, b: ServiceProcess, reply: Reply
) -> tuple[str, Follower, Follower]:
    """Post on A (202), follow on A and, once A has the `start`, on B; both to the end."""
    stack.upstream.enqueue(reply)
    async with stack.client(a) as client_a, stack.client(b) as client_b:
        cid = await new_conversation(client_a)
        mid = (await post_accepted(client_a, cid, "go slowly"))["assistant_message"]["id"]
        started = asyncio.Event()
        on_a = asyncio.ensure_future(follow(client_a, mid, started=started))
        await asyncio.wait_for(started.wait(), 10)
        on_b = await follow(client_b, mid)
        return mid, await on_a, on_b


async def test_follow_live_and_resume_on_another_instance(stack: Stack) -> None:
    env = _redis_env(require_redis())
    a, b = stack.service(**env), stack.service(**env)
    reply, text = _slow_reply(30)
    mid, on_a, on_b = await _follow_on_both(stack, a, b, reply)

    assert on_b.wire == on_a.wire, "identical ids, event names and data on both instances"
    assert [f.id for f in on_a.frames] == [str(i) for i in range(1, 33)]
    assert on_a.frames[-1].json["message"]["content"] == text
    gaps = sorted(lags(on_a, on_b))
    p50, p99 = statistics.median(gaps), gaps[int(len(gaps) * 0.99) - 1]
    print(f"follower lag on B ({stack.backend}): p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    # Polling the database (the path without Redis) lags 250 ms on average.
    assert p50 < 0.1 and p99 < 0.5, gaps

    # Drop B's connection mid-stream, resume on B at the last id it got.
    reply, text = _slow_reply(20)
    stack.upstream.enqueue(reply)
    async with stack.client(a) as client_a, stack.client(b) as client_b:
        cid = await new_conversation(client_a)
        mid = (await post_accepted(client_a, cid, "again"))["assistant_message"]["id"]
        owner = asyncio.ensure_future(follow(client_a, mid))
        first = await follow(client_b, mid, stop_after=6)
        assert first.frames[-1].id == "6"
        rest = await follow(client_b, mid, last_event_id="6")
        whole = await owner
        assert first.wire + rest.wire == whole.wire, "no gap, no duplicate"
        final = await wait_final(client_b, mid)
        assert final["status"] == "completed" and final["content"] == text
        after_end = await client_b.get(
            f"/v1/messages/{mid}/events", headers={"Last-Event-ID": whole.frames[-1].id or ""}
        )
        assert after_end.status_code == 204
    for service in (a, b):  # SIGTERM: drained, Redis connections closed, nothing raised
        assert service.terminate() == 0
        assert "Traceback" not in service.log_path.read_text(errors="replace")


async def test_redis_restarted_mid_stream_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path, password="redis-pw-SECRET-42")
    redis_server.start()
    try:
        env = _redis_env(redis_server.url)
        a, b = stack.service(**env), stack.service(**env)
        reply, text = _slow_reply(40, delay=0.05)
        stack.upstream.enqueue(reply)
        async with stack.client(a) as client_a, stack.client(b) as client_b:
            cid = await new_conversation(client_a)
            mid = (await post_accepted(client_a, cid, "through it"))["assistant_message"]["id"]
            started = asyncio.Event()
            on_a = asyncio.ensure_future(follow(client_a, mid, started=started))
            await asyncio.wait_for(started.wait(), 10)
            on_b = asyncio.ensure_future(follow(client_b, mid))
            await asyncio.sleep(0.8)  # some tokens reach both through Redis

            redis_server.stop()
            ready = await client_a.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert ready.json()["checks"]["redis"] != "ok"
            assert ready.json()["checks"]["database"] == "ok"
            assert "redis-pw-SECRET-42" not in ready.text
            await asyncio.sleep(0.5)
            redis_server.start()

            owner, other = await asyncio.wait_for(asyncio.gather(on_a, on_b), 20)
            final = await wait_final(client_a, mid)
            assert final["status"] == "completed" and final["content"] == text
            assert [f.id for f in owner.frames] == [str(i) for i in range(1, 43)]
            assert owner.frames[-1].json["message"]["content"] == text
            assert other.wire == owner.wire, "B went on from the database, same ids and data"
            assert (await client_a.get("/readyz")).status_code == 200
            # Operators see the outage: A failed writing events, B following them.
            errors = "chatrelay_broker_errors_total"
            assert (await scrape(client_a)).value(errors, operation="write") > 0
            assert (await scrape(client_b)).value(errors, operation="follow") > 0

        # Following across instances works again, live.
        reply, _ = _slow_reply(20)
        _, on_a2, on_b2 = await _follow_on_both(stack, a, b, reply)
        assert on_b2.wire == on_a2.wire
        assert statistics.median(lags(on_a2, on_b2)) < 0.1
        for service in (a, b):
            assert "redis-pw-SECRET-42" not in service.log_path.read_text(errors="replace")
        assert "following" in b.log_path.read_text(), "B's follower went to the database"
    finally:
        redis_server.stop()
