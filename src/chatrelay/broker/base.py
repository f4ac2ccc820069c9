"""The broker seam: a generation publishes to a `Topic`; subscribers read it from a cursor.

A topic is one message's append-only event log. Publishing never waits for a subscriber
(a slow one only falls behind), and a subscriber reads batches of whatever it has not yet
seen, live until the terminal event. Implementations: `memory.MemoryBroker` (one process).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.models import Message, ToolCallHead


class Topic(Protocol):
    """One message's event log."""

    @property
    def message_id(self) -> str: ...

    @property
    def closed(self) -> bool:
        """The terminal event has been published."""
        ...

    @property
    def last_seq(self) -> int:
        """The cursor of the newest event (0 before `start`)."""
        ...

    def publish(
        self,
        kind: EventKind,
        *,
        text: str = "",
        message: Message | None = None,
        index: int = 0,
        call: ToolCallHead | None = None,
    ) -> LogEvent:
        """Append the next event; refuses anything after the terminal one."""
        ...

    def check_cursor(self, cursor: int | None) -> None:
        """A cursor must name an event already published (`BadRequest invalid_cursor`)."""
        ...

    def read_batches(
        self, cursor: int | None, *, heartbeat: float | None = None
    ) -> AsyncIterator[list[LogEvent]]:
        """Events after `cursor` (all for None) in batches, live until the terminal one;
        with `heartbeat`, an empty batch after that many quiet seconds."""
        ...


class Broker(Protocol):
    """Holds the topics of running (and just finished) generations."""

    def open(self, message_id: str) -> Topic:
        """A new, empty topic for a generation about to start."""
        ...

    async def find(self, message_id: str) -> Topic | None:
        """The topic of a message being generated, if this broker can serve it."""
        ...

    def discard(self, message_id: str) -> None:
        """Forget a topic: its events are no longer served from here."""
        ...

    async def aclose(self) -> None: ...
