"""The per-message event log: what a generation appends and every subscriber reads.

A generation never waits for a subscriber: it appends to a list and wakes waiters.
Each subscriber keeps its own cursor, so a slow one only falls behind, and memory per
message is the message's own events. Cursors are positions in the log (1 = `start`),
sent as the SSE `id`; `events_from_message` rebuilds the same log from a stored message,
so a finished message replays identically from the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from chatrelay.errors import BadRequest
from chatrelay.models import Message, Status

START, DELTA, REASONING, DONE, ERROR = "start", "delta", "reasoning", "done", "error"
TERMINAL = frozenset({DONE, ERROR})
PIECE_EVENTS = {"c": DELTA, "r": REASONING}


@dataclass(frozen=True, slots=True)
class LogEvent:
    seq: int
    kind: str
    data: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.seq)

    @property
    def is_terminal(self) -> bool:
        return self.kind in TERMINAL


def parse_cursor(raw: str | None) -> int | None:
    """A client's `Last-Event-ID` as a log position; malformed ones are a 400, not a restart."""
    if raw is None:
        return None
    raw = raw.strip()
    if raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10:  # not "²" or "①"
        raise BadRequest(f"malformed event id {raw[:40]!r}", code="invalid_cursor")
    return int(raw)


def start_data(message: Message) -> dict[str, Any]:
    """The `start` payload: the message as it was when generation began."""
    initial = message.evolve(
        content="",
        status=Status.STREAMING,
        finish_reason=None,
        usage=None,
        error=None,
        completed_at=None,
        reasoning=None,
        refusal=None,
        tool_calls=None,
    )
    return {"message": initial.to_api()}


def terminal_event(message: Message) -> tuple[str, dict[str, Any]]:
    """`done` for completed/cancelled, `error` (with the error) for failed/interrupted."""
    if message.status in (Status.COMPLETED, Status.CANCELLED):
        return DONE, {"message": message.to_api()}
    error = message.error or {"code": str(message.status), "message": "generation ended"}
    return ERROR, {"error": error, "message": message.to_api()}


def events_from_message(message: Message) -> list[LogEvent]:
    """Rebuild the event log of a stored message (checkpointed or final)."""
    message = message.evolve(superseded_by=None)  # a later edit is not part of its events
    events = [LogEvent(1, START, start_data(message))]
    offsets = {"c": 0, "r": 0}
    texts = {"c": message.content, "r": message.reasoning or ""}
    for kind, length in message.pieces:
        start = offsets[kind]
        piece = texts[kind][start : start + length]
        offsets[kind] = start + length
        events.append(LogEvent(len(events) + 1, PIECE_EVENTS[kind], {"content": piece}))
    if message.status.is_terminal:
        name, data = terminal_event(message)
        seq = RECOVERED_END_ID if was_recovered(message) else len(events) + 1
        events.append(LogEvent(seq, name, data))
    return events


# A crash loses the events sent after the last checkpoint, so ids past the stored pieces
# were already given out with other meanings. The recovered message's terminal event
# takes an id no live stream reaches, so a client resuming from any of those ids still
# gets it instead of a 204 or an error.
RECOVERED_END_ID = 2**31 - 1


def was_recovered(message: Message) -> bool:
    """Interrupted by a dead process and closed at the next start (not by a drain)."""
    return message.status is Status.INTERRUPTED and (message.error or {}).get("code") == (
        "interrupted"
    )


class EventLog:
    """Append-only, in memory, for one running (or just finished) generation."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self.events: list[LogEvent] = []
        self._changed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return bool(self.events) and self.events[-1].is_terminal

    def append(self, kind: str, data: dict[str, Any]) -> LogEvent:
        if self.closed:
            raise RuntimeError(f"event log of {self.message_id} is closed")
        event = LogEvent(len(self.events) + 1, kind, data)
        self.events.append(event)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return event

    def check_cursor(self, cursor: int | None) -> None:
        """A cursor must name an event this log has already sent."""
        if cursor is not None and not (1 <= cursor <= len(self.events)):
            raise BadRequest(f"unknown event id {cursor}", code="invalid_cursor")

    async def read_batches(
        self, cursor: int | None, *, heartbeat: float | None = None
    ) -> AsyncIterator[list[LogEvent]]:
        """Events after `cursor` (all for None) in batches of whatever is there, live until
        the terminal one. With `heartbeat`, an empty batch after that many quiet seconds.

        A reader that fell behind gets everything it missed at once, so the edge can send
        it in one write instead of one per event.
        """
        position = cursor or 0
        while True:
            if position < len(self.events):
                batch = self.events[position:]
                position += len(batch)
                yield batch
                if batch[-1].is_terminal:
                    return
                continue
            if heartbeat is None:
                await self._changed.wait()
                continue
            try:
                async with asyncio.timeout(heartbeat):
                    await self._changed.wait()
            except TimeoutError:
                yield []
