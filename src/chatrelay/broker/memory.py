"""The in-process broker: each topic is a list in memory and an `asyncio.Event`.

A publish appends and wakes every waiting reader by setting and at once clearing one
`asyncio.Event` — a broadcast without a queue per subscriber. Readers keep their
own cursors, so memory per message is the message's own events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.errors import BadRequest
from chatrelay.models import Message, ToolCallHead


class MemoryTopic:
    """Append-only, in memory, for one running (or just finished) generation."""

    __slots__ = ("_changed", "_events", "message_id")

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self._events: list[LogEvent] = []
        self._changed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return bool(self._events) and self._events[-1].is_terminal

    @property
    def last_seq(self) -> int:
        return len(self._events)

    @property
    def events(self) -> list[LogEvent]:
        """Everything published so far (a copy)."""
        return list(self._events)

    def publish(
        self,
        kind: EventKind,
        *,
        text: str = "",
        message: Message | None = None,
        index: int = 0,
        call: ToolCallHead | None = None,
    ) -> LogEvent:
        if self.closed:
            raise RuntimeError(f"event log of {self.message_id} is closed")
        event = LogEvent(len(self._events) + 1, kind, text, message, index=index, call=call)
        self._events.append(event)
        # Set wakes every waiter now; clear re-arms the same Event for the next publish
        # (a woken waiter returns whatever the flag says later): no Event per publish.
        self._changed.set()
        self._changed.clear()
        return event

    def check_cursor(self, cursor: int | None) -> None:
        if cursor is not None and not (1 <= cursor <= len(self._events)):
            raise BadRequest(f"unknown event id {cursor}", code="invalid_cursor")

    async def read_batches(
        self, cursor: int | None, *, heartbeat: float | None = None
    ) -> AsyncIterator[list[LogEvent]]:
        """A reader that fell behind gets everything it missed at once, so the edge can
        send it in one write instead of one per event."""
        events = self._events
        position = cursor or 0
        while True:
            if position < len(events):
                batch = events[position:]
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


class MemoryBroker:
    """Topics of this process's generations; no other process can see them."""

    def __init__(self) -> None:
        self._topics: dict[str, MemoryTopic] = {}

    def open(self, message_id: str) -> MemoryTopic:
        topic = MemoryTopic(message_id)
        self._topics[message_id] = topic
        return topic

    async def find(self, message_id: str, *, after: int | None = None) -> MemoryTopic | None:
        return self._topics.get(message_id)

    def discard(self, message_id: str) -> None:
        self._topics.pop(message_id, None)

    async def check(self) -> str | None:
        return None  # nothing outside this process to fail

    async def publish_external_end(self, event: LogEvent) -> None:
        """Nothing to do: these topics hold only this process's own generations, and a
        subscriber here following another instance's message polls the database, where
        the terminal status already is."""

    async def aclose(self) -> None:
        self._topics.clear()
