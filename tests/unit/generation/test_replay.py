"""A topic's live events and their rebuild from the stored message agree event for event."""

from __future__ import annotations

import pytest

from chatrelay.broker.event import EventKind
from chatrelay.broker.memory import MemoryTopic
from chatrelay.errors import BadRequest
from chatrelay.generation.replay import (
    RECOVERED_END_ID,
    as_started,
    events_from_message,
    terminal_kind,
)
from chatrelay.models import Message, PieceKind, Status
from chatrelay.web.validation import event_cursor
from tests.fakes.messages import streaming_reply

C, R = PieceKind.CONTENT, PieceKind.REASONING


def _live_topic(pieces: list[tuple[PieceKind, str]], final: Message) -> MemoryTopic:
    topic = MemoryTopic(final.id)
    topic.publish(EventKind.START, message=as_started(streaming_reply()))
    for kind, text in pieces:
        topic.publish(EventKind.DELTA if kind is C else EventKind.REASONING, text=text)
    topic.publish(terminal_kind(final), message=final)
    return topic


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.CANCELLED, Status.FAILED])
def test_rebuilt_events_equal_live_events(status: Status) -> None:
    pieces = [(R, "think "), (C, "Hé"), (C, "llo 👋"), (R, "more"), (C, "\n!")]
    final = streaming_reply(
        content="Héllo 👋\n!",
        reasoning="think more",
        pieces=[(k, len(t)) for k, t in pieces],
        status=status,
        finish_reason="stop",
        usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        error={"code": "upstream_error", "message": "x"} if status is Status.FAILED else None,
        completed_at="2026-01-01T00:00:01.000Z",
    )
    live = _live_topic(pieces, final)
    assert events_from_message(final) == live.events
    expected = EventKind.ERROR if status is Status.FAILED else EventKind.DONE
    assert live.events[-1].kind is expected


def test_checkpointed_message_rebuilds_without_terminal() -> None:
    partial = streaming_reply(content="ab", pieces=[(C, 1), (C, 1)])
    rebuilt = events_from_message(partial)
    assert [e.kind for e in rebuilt] == ["start", "delta", "delta"]
    assert [e.id for e in rebuilt] == ["1", "2", "3"]
    assert [e.text for e in rebuilt[1:]] == ["a", "b"]


def test_recovered_message_ends_at_an_id_no_live_stream_reaches() -> None:
    recovered = streaming_reply(
        content="a",
        pieces=[(C, 1)],
        status=Status.INTERRUPTED,
        error={"code": "interrupted", "message": "the service stopped during generation"},
    )
    end = events_from_message(recovered)[-1]
    assert end.seq == RECOVERED_END_ID and end.kind is EventKind.ERROR
    assert end.error["code"] == "interrupted"


def test_an_error_event_without_a_recorded_error_names_the_status() -> None:
    interrupted = streaming_reply(status=Status.INTERRUPTED, error=None)
    end = events_from_message(interrupted)[-1]
    assert end.error == {"code": "interrupted", "message": "generation ended"}


def test_cursor_parsing() -> None:
    assert event_cursor(None) is None
    assert event_cursor("") is None
    assert event_cursor(" 7 ") == 7
    for bad in ("x", "-1", "1.5", "9" * 20, "²", "①", "\u0661", "1_0", "+1"):
        with pytest.raises(BadRequest):
            event_cursor(bad)
