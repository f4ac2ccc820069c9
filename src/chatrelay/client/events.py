"""Typed events of a followed message, decoded from the native event stream's frames.

The client hands its callers values, not SSE frames, so that a consumer never parses JSON
or compares `event:` strings itself (README, "Event stream", is the contract).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from chatrelay.client.errors import ProtocolError
from chatrelay.sse.event import SSEEvent

__all__ = ["Event", "EventKind", "decode_event"]


class EventKind(StrEnum):
    START = "start"
    DELTA = "delta"
    REASONING = "reasoning"
    DONE = "done"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a message's stream.

    `id` is the event's position, what `follow(mid, last_event_id=...)` resumes after.
    `content` is the text piece of a `delta` or `reasoning` event (empty otherwise);
    `message` is the message carried by `start`, `done` and `error`; `error` is the
    `{"code", "message"}` of an `error` event.
    """

    kind: EventKind
    id: int
    content: str = ""
    message: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @property
    def is_terminal(self) -> bool:
        """`done` and `error` end a message's stream."""
        return self.kind in (EventKind.DONE, EventKind.ERROR)

    @property
    def error_code(self) -> str | None:
        return None if self.error is None else str(self.error.get("code"))

    @property
    def error_message(self) -> str | None:
        return None if self.error is None else str(self.error.get("message"))


def event_id(raw: SSEEvent) -> int | None:
    """The frame's id as an int, None when it has none; ids are log positions."""
    if raw.id is None or raw.id == "":
        return None
    if not raw.id.isascii() or not raw.id.isdigit():
        raise ProtocolError(f"the event id {raw.id[:32]!r} is not a position")
    return int(raw.id)


def decode_event(raw: SSEEvent) -> Event | None:
    """The typed event of a frame; None for a kind this client does not know."""
    try:
        kind = EventKind(raw.event)
    except ValueError:
        return None
    position = event_id(raw)
    if position is None:
        raise ProtocolError(f"a {kind} event came without an id")
    try:
        payload = json.loads(raw.data)
    except ValueError as exc:
        raise ProtocolError(f"the {kind} event {position} is not JSON") from exc
    if not isinstance(payload, dict):
        raise ProtocolError(f"the {kind} event {position} is not a JSON object")
    if kind in (EventKind.DELTA, EventKind.REASONING):
        return Event(kind, position, content=str(payload.get("content", "")))
    message = payload.get("message")
    error = payload.get("error")
    return Event(
        kind,
        position,
        message=message if isinstance(message, dict) else None,
        error=error if isinstance(error, dict) else None,
    )
