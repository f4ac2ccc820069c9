"""The event log and its rebuild from a stored message must agree event for event."""

from __future__ import annotations

import asyncio

import pytest

from chatrelay.errors import BadRequest
from chatrelay.generation.log import (
    DELTA,
    REASONING,
    EventLog,
    events_from_message,
    parse_cursor,
    start_data,
    terminal_event,
)
from chatrelay.models import Message, Status


def _message(**changes: object) -> Message:
    base = Message(
        id="msg_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        conversation_id="conv_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        tenant="t",
        seq=2,
        role="assistant",
        content="",
        status=Status.STREAMING,
        model="m",
        created_at="2026-01-01T00:00:00.000Z",
    )
    return base.evolve(**changes)


def _live_log(pieces: list[tuple[str, str]], final: Message) -> EventLog:
    log = EventLog(final.id)
    log.append("start", start_data(_message()))
    for kind, text in pieces:
        log.append(DELTA if kind == "c" else REASONING, {"content": text})
    name, data = terminal_event(final)
    log.append(name, data)
    return log


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.CANCELLED, Status.FAILED])
def test_rebuilt_events_equal_live_events(status: Status) -> None:
    pieces = [("r", "think "), ("c", "Hé"), ("c", "llo 👋"), ("r", "more"), ("c", "\n!")]
    final = _message(
        content="Héllo 👋\n!",
        reasoning="think more",
        pieces=[(k, len(t)) for k, t in pieces],
        status=status,
        finish_reason="stop",
        usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        error={"code": "upstream_error", "message": "x"} if status is Status.FAILED else None,
        completed_at="2026-01-01T00:00:01.000Z",
    )
    live = _live_log(pieces, final)
    assert events_from_message(final) == live.events
    assert live.events[-1].kind == ("error" if status is Status.FAILED else "done")


def test_checkpointed_message_rebuilds_without_terminal() -> None:
    partial = _message(content="ab", pieces=[("c", 1), ("c", 1)])
    rebuilt = events_from_message(partial)
    assert [e.kind for e in rebuilt] == ["start", "delta", "delta"]
    assert [e.id for e in rebuilt] == ["1", "2", "3"]


def test_cursor_parsing() -> None:
    assert parse_cursor(None) is None
    assert parse_cursor("") is None
    assert parse_cursor(" 7 ") == 7
    for bad in ("x", "-1", "1.5", "9" * 20):
        with pytest.raises(BadRequest):
            parse_cursor(bad)


async def test_slow_reader_does_not_block_appends_and_sees_everything() -> None:
    log = EventLog("m")
    log.append("start", {})
    reader = log.read_batches(None)
    first = await anext(reader)
    assert [e.kind for e in first] == ["start"]
    for i in range(1000):  # the writer never waits for the reader
        log.append(DELTA, {"content": str(i)})
    log.append("done", {})
    rest = [batch async for batch in reader]
    assert len(rest) == 1, "everything the reader missed comes as one batch"
    assert len(rest[0]) == 1001 and rest[0][-1].kind == "done"
    with pytest.raises(RuntimeError):
        log.append(DELTA, {"content": "late"})


async def test_heartbeat_when_quiet() -> None:
    log = EventLog("m")
    log.append("start", {})
    reader = log.read_batches(1, heartbeat=0.05)
    assert await asyncio.wait_for(anext(reader), 1) == [], "an empty batch is a heartbeat"
    log.append(DELTA, {"content": "x"})
    batch = await asyncio.wait_for(anext(reader), 1)
    assert [e.kind for e in batch] == [DELTA]
