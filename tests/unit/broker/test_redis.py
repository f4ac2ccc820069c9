"""The Redis broker at its seam, against a real Redis: what the owner publishes, another
instance (a second `RedisBroker` on the same Redis and prefix) reads with the same ids
and data; one round trip per batch; expiry; the backlog after an outage."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from chatrelay.broker.base import BrokerUnavailable
from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.broker.redis import RedisBroker, redacted_url
from chatrelay.errors import BadRequest
from chatrelay.models import Message, PieceKind, Status, ToolCallHead
from tests.conftest import require_redis
from tests.fakes.messages import streaming_reply
from tests.fakes.redis_server import RedisServer

pytestmark = pytest.mark.redis


def _message(mid: str, **changes: object) -> Message:
    base: dict[str, object] = {
        "id": mid,
        "conversation_id": "conv_1",
        "tenant": "acme",
        "model": "fake-model",
        "created_at": "2026-12-02T10:00:00.000Z",
        "params": {"temperature": 0.5},
    }
    return streaming_reply(**{**base, **changes})


def _final(mid: str, text: str) -> Message:
    return _message(
        mid,
        content=text,
        status=Status.COMPLETED,
        finish_reason="stop",
        usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        pieces=[(PieceKind.CONTENT, len(text))],
        completed_at="2026-12-02T10:00:01.000Z",
    )


async def until(predicate: Callable[[], object], *, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {predicate}")
        await asyncio.sleep(0.005)


@pytest.fixture
def prefix() -> str:
    return f"chatrelay-test-{uuid.uuid4().hex[:10]}:"


@pytest.fixture
async def pair(prefix: str) -> AsyncIterator[tuple[RedisBroker, RedisBroker, aioredis.Redis]]:
    """Two instances on the machine's Redis (the owner, another one) and a plain client."""
    url = require_redis()
    owner, other = RedisBroker(url, prefix=prefix), RedisBroker(url, prefix=prefix)
    plain = aioredis.Redis.from_url(url)
    try:
        yield owner, other, plain
    finally:
        await owner.aclose()
        await other.aclose()
        keys = [key async for key in plain.scan_iter(match=f"{prefix}*")]
        if keys:
            await plain.delete(*keys)
        await plain.aclose()


async def _read_all(batches: AsyncIterator[list[LogEvent]]) -> list[LogEvent]:
    events: list[LogEvent] = []
    async for batch in batches:
        events.extend(batch)
    return events


async def test_another_instance_reads_the_same_events_live_and_resumes(
    pair: tuple[RedisBroker, RedisBroker, aioredis.Redis],
) -> None:
    owner, other, _ = pair
    mid = "msg_live"
    topic = owner.open(mid)
    topic.publish(EventKind.START, message=_message(mid))
    topic.publish(EventKind.DELTA, text="Hel")
    topic.publish(EventKind.REASONING, text="think \ud800 \x00 é")  # any str round-trips
    await until(lambda: topic.sent == 3)

    remote = await other.find(mid)
    assert remote is not None and remote is not topic
    assert remote.last_seq == 3 and not remote.closed
    follower = asyncio.ensure_future(_read_all(remote.read_batches(None)))
    resumed = asyncio.ensure_future(_read_all(remote.read_batches(2)))
    topic.publish(EventKind.DELTA, text="lo")
    topic.publish(EventKind.DONE, message=_final(mid, "Hello"))
    everything = await asyncio.wait_for(follower, 5)
    assert everything == topic.events, "same seq, kind, text and message as the owner's"
    assert [e.seq for e in everything] == [1, 2, 3, 4, 5]
    assert everything[-1].final == _final(mid, "Hello")
    assert await asyncio.wait_for(resumed, 5) == topic.events[2:]


async def test_tool_call_events_reach_another_instance_unchanged(
    pair: tuple[RedisBroker, RedisBroker, aioredis.Redis],
) -> None:
    """A call's start (id, type, name) and its argument pieces, interleaved across two
    calls, read on another instance exactly as the owner published them."""
    owner, other, _ = pair
    mid = "msg_tools"
    topic = owner.open(mid)
    topic.publish(EventKind.START, message=_message(mid))
    topic.publish(EventKind.TOOL_CALL, index=0, call=ToolCallHead("call_a", "function", "f"))
    topic.publish(EventKind.TOOL_CALL, index=0, text='{"city": ')
    topic.publish(EventKind.TOOL_CALL, index=1, call=ToolCallHead(None, "function", "g\u00e9"))
    topic.publish(EventKind.TOOL_CALL, index=1, text="{}")
    topic.publish(EventKind.TOOL_CALL, index=0, text='"Rome \ud800"}')
    topic.publish(EventKind.DONE, message=_final(mid, ""))
    await until(lambda: topic.sent == 7)
    remote = await other.find(mid)
    assert remote is not None
    everything = await asyncio.wait_for(_read_all(remote.read_batches(None)), 5)
    assert everything == topic.events
    assert [(e.index, e.call, e.text) for e in everything[1:6]] == [
        (e.index, e.call, e.text) for e in topic.events[1:6]
    ]


async def test_a_cursor_just_published_elsewhere_is_waited_for_and_bad_ones_refused(
    pair: tuple[RedisBroker, RedisBroker, aioredis.Redis],
) -> None:
    owner, other, _ = pair
    mid = "msg_cursor"
    topic = owner.open(mid)
    topic.publish(EventKind.START, message=_message(mid))
    await until(lambda: topic.sent == 1)
    remote = await other.find(mid)
    assert remote is not None
    topic.publish(EventKind.DELTA, text="a")  # a client of the owner saw id 2 at once
    again = await other.find(mid, after=2)
    assert again is remote and remote.last_seq == 2
    remote.check_cursor(2)
    for bad in (0, 3, 99):
        with pytest.raises(BadRequest):
            remote.check_cursor(bad)


async def test_events_of_one_burst_go_in_one_round_trip(
    pair: tuple[RedisBroker, RedisBroker, aioredis.Redis],
) -> None:
    owner, _, plain = pair
    warm = owner.open("msg_warm")  # the flusher is running and its script loaded
    warm.publish(EventKind.START, message=_message("msg_warm"))
    await until(lambda: warm.sent == 1)
    before = owner.flushes
    topics = [owner.open(f"msg_burst{i}") for i in range(3)]
    for topic in topics:  # no await between: what one upstream read (or several) publishes
        topic.publish(EventKind.START, message=_message(topic.message_id))
        for i in range(50):
            topic.publish(EventKind.DELTA, text=str(i))
    await until(lambda: all(t.sent == 51 for t in topics))
    assert owner.flushes == before + 1
    assert await plain.xlen(owner.key("msg_burst0")) == 51
    ids = [entry for entry, _ in await plain.xrange(owner.key("msg_burst0"), "-", "+")]
    assert ids[:3] == [b"1-0", b"2-0", b"3-0"], "stream ids are the SSE cursors"


async def test_a_stream_redis_lost_is_re_sent_whole_and_a_long_backlog_in_pieces(
    pair: tuple[RedisBroker, RedisBroker, aioredis.Redis],
) -> None:
    owner, other, plain = pair
    mid = "msg_lost"
    topic = owner.open(mid)
    topic.publish(EventKind.START, message=_message(mid))
    for i in range(12_000):  # more than one script call's worth, published at once
        topic.publish(EventKind.DELTA, text=f"{i} ")
    await until(lambda: topic.sent == 12_001)
    await plain.delete(owner.key(mid))  # expired, evicted, or Redis restarted empty
    topic.publish(EventKind.DONE, message=_final(mid, ""))
    await until(lambda: topic.sent == 12_002)
    assert await plain.xlen(owner.key(mid)) == 12_002, "re-sent from the first event"
    remote = await other.find(mid)
    assert remote is not None
    assert await _read_all(remote.read_batches(None)) == topic.events


async def test_streams_expire_after_the_terminal_event(prefix: str) -> None:
    url = require_redis()
    owner = RedisBroker(url, prefix=prefix, finished_ttl=40, live_ttl=900)
    plain = aioredis.Redis.from_url(url)
    try:
        mid = "msg_ttl"
        topic = owner.open(mid)
        topic.publish(EventKind.START, message=_message(mid))
        await until(lambda: topic.sent == 1)
        assert 800 < await plain.ttl(owner.key(mid)) <= 900, "a dead owner's stream goes too"
        topic.publish(EventKind.DONE, message=_final(mid, ""))
        await until(lambda: topic.sent == 2)
        assert 0 < await plain.ttl(owner.key(mid)) <= 40
    finally:
        await owner.aclose()
        await plain.delete(owner.key("msg_ttl"))
        await plain.aclose()


async def test_readers_are_bounded_beyond_that_the_database_serves(prefix: str) -> None:
    url = require_redis()
    owner = RedisBroker(url, prefix=prefix)
    other = RedisBroker(url, prefix=prefix, max_readers=1)
    try:
        topics = [owner.open(f"msg_r{i}") for i in range(2)]
        for topic in topics:
            topic.publish(EventKind.START, message=_message(topic.message_id))
        await until(lambda: all(t.sent == 1 for t in topics))
        first = await other.find("msg_r0")
        assert first is not None and await other.find("msg_r0") is first, "one reader, shared"
        assert await other.find("msg_r1") is None, "a second reader would pass the bound"
    finally:
        await owner.aclose()
        await other.aclose()


async def test_unknown_message_is_not_found(
    pair: tuple[RedisBroker, RedisBroker, aioredis.Redis],
) -> None:
    _, other, _ = pair
    assert await other.find("msg_nowhere") is None
    assert await other.check() is None


async def test_backlog_is_written_after_a_redis_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    owner = RedisBroker(server.url, prefix="t:")
    other = RedisBroker(server.url, prefix="t:")
    try:
        mid = "msg_outage"
        topic = owner.open(mid)
        topic.publish(EventKind.START, message=_message(mid))
        topic.publish(EventKind.DELTA, text="before")
        await until(lambda: topic.sent == 2)
        remote = await other.find(mid)
        assert remote is not None
        follower = remote.read_batches(2)
        waiting = asyncio.ensure_future(anext(follower))

        server.stop()  # every key is lost with it
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(waiting, 5)  # the follower goes to the database instead
        for i in range(5):  # the generation goes on; the owner's memory has everything
            topic.publish(EventKind.DELTA, text=f"during{i}")
        assert [e.text for e in topic.events[-5:]] == [f"during{i}" for i in range(5)]
        problem = await owner.check()
        assert problem is not None and "Connection" in problem
        assert owner.backlog == 5
        assert await other.find(mid) is None, "nothing to follow while Redis is down"

        server.start()  # same port, empty
        topic.publish(EventKind.DONE, message=_final(mid, "done"))
        await until(lambda: topic.sent == 8, within=10)
        assert await owner.check() is None
        await asyncio.sleep(1.1)  # `find` leaves Redis alone for a second after a failure
        back = await other.find(mid)
        assert back is not None
        events = await _read_all(back.read_batches(None))
        assert events == topic.events, "the whole log re-sent, at the same ids"
    finally:
        await owner.aclose()
        await other.aclose()
        server.stop()


def test_redacted_url_never_shows_the_password() -> None:
    assert redacted_url("redis://user:s3cret@redis.internal:6380/2") == (
        "redis://redis.internal:6380/2"
    )
    assert "s3cret" not in RedisBroker("redis://:s3cret@127.0.0.1:1/0").description


async def test_an_end_the_lease_sweeper_publishes_reaches_followers_once(
    pair: tuple[RedisBroker, RedisBroker, aioredis.Redis],
) -> None:
    from chatrelay.generation.replay import RECOVERED_END_ID

    owner, other, plain = pair
    mid = "msg_swept"
    topic = owner.open(mid)
    topic.publish(EventKind.START, message=_message(mid))
    topic.publish(EventKind.DELTA, text="part")
    await until(lambda: topic.sent == 2)
    remote = await other.find(mid)
    assert remote is not None
    follower = asyncio.ensure_future(_read_all(remote.read_batches(None)))
    interrupted = _message(
        mid,
        content="part",
        status=Status.INTERRUPTED,
        error={"code": "interrupted", "message": "its instance stopped"},
        pieces=[(PieceKind.CONTENT, 4)],
        completed_at="2026-12-02T10:00:05.000Z",
    )
    end = LogEvent(RECOVERED_END_ID, EventKind.ERROR, message=interrupted)
    await other.publish_external_end(end)
    await other.publish_external_end(end)  # a second sweeper's (or a retry) changes nothing
    events = await asyncio.wait_for(follower, 5)
    assert [e.seq for e in events] == [1, 2, RECOVERED_END_ID]
    assert events[-1].kind is EventKind.ERROR and events[-1].final == interrupted
    assert await plain.xlen(owner.key(mid)) == 3


async def test_an_external_end_leaves_ended_and_unknown_streams_alone(
    pair: tuple[RedisBroker, RedisBroker, aioredis.Redis],
) -> None:
    from chatrelay.generation.replay import RECOVERED_END_ID

    owner, other, plain = pair
    mid = "msg_done_first"
    topic = owner.open(mid)
    topic.publish(EventKind.START, message=_message(mid))
    topic.publish(EventKind.DONE, message=_final(mid, ""))
    await until(lambda: topic.sent == 2)
    swept = _message(mid, status=Status.INTERRUPTED, error={"code": "interrupted", "message": "x"})
    await other.publish_external_end(LogEvent(RECOVERED_END_ID, EventKind.ERROR, message=swept))
    key = owner.key(mid)
    entries = await plain.xrange(key, "-", "+")
    assert [entry for entry, _ in entries] == [b"1-0", b"2-0"], "the real end stays the end"
    await other.publish_external_end(
        LogEvent(
            RECOVERED_END_ID,
            EventKind.ERROR,
            message=_message("msg_nowhere", status=Status.INTERRUPTED),
        )
    )
    assert not await plain.exists(owner.key("msg_nowhere")), "no stream is created"
