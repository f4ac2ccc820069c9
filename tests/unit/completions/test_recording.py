"""`unrecorded`: which requested messages a continued conversation does not hold yet."""

from __future__ import annotations

from typing import Any

from chatrelay.completions.recording import unrecorded
from chatrelay.models import Message, Status


def _recorded(role: str, content: str, status: Status = Status.COMPLETED, **more: Any) -> Message:
    return Message(
        id="msg_1",
        conversation_id="conv_1",
        tenant="acme",
        seq=0,
        role=role,
        content=content,
        status=status,
        model=None,
        created_at="2026-01-01T00:00:00.000Z",
        **more,
    )


def test_only_what_follows_the_recorded_prefix_is_new() -> None:
    history = [_recorded("user", "hi"), _recorded("assistant", "hello")]
    requested = [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},  # same text, as parts
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "and?"},
    ]
    assert unrecorded(requested, history) == requested[2:]


def test_a_diverging_history_is_recorded_from_where_it_diverges() -> None:
    history = [_recorded("user", "hi"), _recorded("assistant", "hello")]
    requested = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "bye"}]
    assert unrecorded(requested, history) == requested[1:]


def test_superseded_and_unanswered_messages_are_not_compared() -> None:
    history = [
        _recorded("user", "old", superseded_by="msg_2"),
        _recorded("user", "q"),
        _recorded("assistant", "partial", Status.FAILED),
        _recorded("assistant", "a"),
    ]
    requested = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert unrecorded(requested, history) == []
