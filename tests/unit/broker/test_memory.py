"""The in-process broker: publishing never waits for a reader; readers get batches."""

from __future__ import annotations

import asyncio

import pytest

from chatrelay.broker.event import EventKind
from chatrelay.broker.memory import WIRE_KEPT, MemoryBroker, MemoryTopic
from chatrelay.errors import BadRequest
from chatrelay.sse.framing import event_frame
from chatrelay.web.sse import encode_frame, native_payload
from tests.fakes.messages import streaming_reply


async def test_slow_reader_does_not_block_publishing_and_sees_everything() -> None:
    topic = MemoryTopic("m")
    topic.publish(EventKind.START)
    reader = topic.read_batches(None)
    first = await anext(reader)
    assert [e.kind for e in first] == ["start"]
    for i in range(1000):  # the writer never waits for the reader
        topic.publish(EventKind.DELTA, text=str(i))
    topic.publish(EventKind.DONE)
    rest = [batch async for batch in reader]
    assert len(rest) == 1, "everything the reader missed comes as one batch"
    assert len(rest[0]) == 1001 and rest[0][-1].kind is EventKind.DONE
    assert topic.closed and topic.last_seq == 1002
    with pytest.raises(RuntimeError):
        topic.publish(EventKind.DELTA, text="late")


async def test_heartbeat_when_quiet() -> None:
    topic = MemoryTopic("m")
    topic.publish(EventKind.START)
    reader = topic.read_batches(1, heartbeat=0.05)
    assert await asyncio.wait_for(anext(reader), 1) == [], "an empty batch is a heartbeat"
    topic.publish(EventKind.DELTA, text="x")
    batch = await asyncio.wait_for(anext(reader), 1)
    assert [(e.kind, e.text, e.seq) for e in batch] == [(EventKind.DELTA, "x", 2)]


async def test_many_readers_at_different_cursors() -> None:
    topic = MemoryTopic("m")
    for kind in (EventKind.START, EventKind.DELTA, EventKind.DELTA):
        topic.publish(kind, text="t")
    readers = [topic.read_batches(cursor) for cursor in (None, 1, 2, 3)]
    pending = [asyncio.ensure_future(anext(r)) for r in readers]
    await asyncio.sleep(0)
    assert [len(p.result()) for p in pending[:3]] == [3, 2, 1]
    assert not pending[3].done(), "a reader at the newest event waits"
    topic.publish(EventKind.DONE)
    assert [e.seq for e in await asyncio.wait_for(pending[3], 1)] == [4]


def test_cursors_must_name_a_published_event() -> None:
    topic = MemoryTopic("m")
    topic.publish(EventKind.START)
    topic.check_cursor(None)
    topic.check_cursor(1)
    for bad in (0, 2, 99):
        with pytest.raises(BadRequest):
            topic.check_cursor(bad)


async def test_broker_finds_open_topics_until_discarded() -> None:
    broker = MemoryBroker()
    topic = broker.open("msg_1")
    assert await broker.find("msg_1") is topic
    broker.discard("msg_1")
    assert await broker.find("msg_1") is None
    broker.discard("msg_1")  # idempotent


async def test_heartbeats_repeat_while_quiet_and_not_while_events_flow() -> None:
    topic = MemoryTopic("m")
    topic.publish(EventKind.START)
    reader = topic.read_batches(1, heartbeat=0.05)
    quiet = [await asyncio.wait_for(anext(reader), 1) for _ in range(3)]
    assert quiet == [[], [], []], "a heartbeat every period while nothing happens"

    received: list[list[str]] = []

    async def read() -> None:
        async for batch in reader:
            received.append([e.text for e in batch])

    reading = asyncio.create_task(read())
    for i in range(15):  # an event every 20 ms: more often than the 50 ms heartbeat
        topic.publish(EventKind.DELTA, text=str(i))
        await asyncio.sleep(0.02)
    topic.publish(EventKind.DONE)
    await asyncio.wait_for(reading, 1)
    assert [] not in received, "no heartbeat between events closer than its period"
    assert [t for batch in received for t in batch][:15] == [str(i) for i in range(15)]


async def test_a_reader_cancelled_while_waiting_leaves_the_others_alone() -> None:
    topic = MemoryTopic("m")
    topic.publish(EventKind.START)
    gone, staying = topic.read_batches(1, heartbeat=0.05), topic.read_batches(1)
    waiting_gone = asyncio.ensure_future(anext(gone))
    waiting_staying = asyncio.ensure_future(anext(staying))
    await asyncio.sleep(0)
    waiting_gone.cancel()
    await asyncio.gather(waiting_gone, return_exceptions=True)
    await gone.aclose()  # its heartbeat timer goes with it
    topic.publish(EventKind.DELTA, text="after")
    batch = await asyncio.wait_for(waiting_staying, 1)
    assert [e.text for e in batch] == ["after"]


def test_only_the_newest_events_keep_their_native_frame() -> None:
    """Followers at the end share frames; older events drop theirs, and a reader from far
    behind gets the same bytes encoded again."""
    topic = MemoryTopic("m")
    topic.publish(EventKind.START, message=streaming_reply())
    for i in range(40):
        topic.publish(EventKind.DELTA, text=f"piece {i}")
        for event in topic.events[-2:]:
            encode_frame(event)  # what a live native follower does as each event arrives
    events = topic.events
    kept = [e.seq for e in events if e.wire is not None]
    assert kept == [e.seq for e in events[-WIRE_KEPT:]], "only the newest keep a frame"
    assert all(e.text for e in events[1:]), "the events themselves are all there"
    shared = events[-1].wire
    assert encode_frame(events[-1]) is shared, "a second follower at the end reuses it"
    again = [encode_frame(e) for e in events]
    assert again == [event_frame(e.id, e.kind, native_payload(e)) for e in events]
