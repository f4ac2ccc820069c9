"""The parsed form of one Server-Sent Event, as the WHATWG EventSource spec dispatches it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event.

    `event` is the type (`"message"` when the stream named none), `data` the data lines
    joined with LF, `id` the last event id in force when it was dispatched (None if the
    stream never set one), `retry` a reconnection delay the stream asked for with this
    event, if any.
    """

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None
