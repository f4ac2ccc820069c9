"""A message's event log rebuilt from its stored row, identical to the one it streamed.

`pieces` records how the text was streamed, so every `delta`/`reasoning` event comes back
with the same id and text; a finished message replays from the database exactly as its
live subscribers saw it.
"""

from __future__ import annotations

from typing import Any

from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.models import Message, PieceKind, Status, ToolCallHead

_PIECE_EVENTS = {PieceKind.CONTENT: EventKind.DELTA, PieceKind.REASONING: EventKind.REASONING}

# A crash loses the events sent after the last checkpoint, so ids past the stored pieces
# were already given out with other meanings. The recovered message's terminal event
# takes an id no live stream reaches, so a client resuming from any of those ids still
# gets it instead of a 204 or an error.
RECOVERED_END_ID = 2**31 - 1


def as_started(message: Message) -> Message:
    """The message as it was when generation began: what the `start` event carries."""
    return message.evolve(
        content="",
        status=Status.STREAMING,
        finish_reason=None,
        usage=None,
        error=None,
        completed_at=None,
        reasoning=None,
        refusal=None,
        tool_calls=None,
        pieces=[],
        superseded_by=None,
    )


def terminal_kind(message: Message) -> EventKind:
    """`done` for completed/cancelled, `error` for failed/interrupted."""
    if message.status in (Status.COMPLETED, Status.CANCELLED):
        return EventKind.DONE
    return EventKind.ERROR


def was_recovered(message: Message) -> bool:
    """Interrupted by a dead process and closed at the next start (not by a drain)."""
    error = message.error
    return (
        message.status is Status.INTERRUPTED
        and error is not None
        and (error["code"] == "interrupted")
    )


def _call_head(call: dict[str, Any]) -> ToolCallHead:
    function = call.get("function") or {}
    return ToolCallHead(call.get("id"), call.get("type") or "function", function.get("name") or "")


def _call_arguments(call: dict[str, Any]) -> str:
    arguments = (call.get("function") or {}).get("arguments")
    return arguments if isinstance(arguments, str) else ""


def events_from_message(message: Message) -> list[LogEvent]:
    """Rebuild the event log of a stored message (checkpointed or final)."""
    message = message.evolve(superseded_by=None)  # a later edit is not part of its events
    events = [LogEvent(1, EventKind.START, message=as_started(message))]
    offsets = {PieceKind.CONTENT: 0, PieceKind.REASONING: 0}
    texts = {PieceKind.CONTENT: message.content, PieceKind.REASONING: message.reasoning or ""}
    calls = message.tool_calls or []
    call_offsets: dict[int, int] = {}  # started calls → how much of their arguments was sent
    focus = 0
    for kind, number in message.pieces:
        if kind is PieceKind.TOOL_CALL:
            focus = number
            if number not in call_offsets:
                call_offsets[number] = 0
                head = _call_head(calls[number])
                events.append(
                    LogEvent(len(events) + 1, EventKind.TOOL_CALL, index=number, call=head)
                )
            continue
        if kind is PieceKind.TOOL_ARGUMENTS:
            start = call_offsets[focus]
            call_offsets[focus] = start + number
            piece = _call_arguments(calls[focus])[start : start + number]
            events.append(LogEvent(len(events) + 1, EventKind.TOOL_CALL, text=piece, index=focus))
            continue
        start = offsets[kind]
        offsets[kind] = start + number
        piece = texts[kind][start : start + number]
        events.append(LogEvent(len(events) + 1, _PIECE_EVENTS[kind], text=piece))
    if message.status.is_terminal:
        seq = RECOVERED_END_ID if was_recovered(message) else len(events) + 1
        events.append(LogEvent(seq, terminal_kind(message), message=message))
    return events
