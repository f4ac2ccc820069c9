"""The broker seam: a generation publishes to a `Topic`; subscribers read it from a cursor.

A topic is one message's append-only event log. Publishing never waits for a subscriber
(a slow one only falls behind), and a subscriber reads batches of whatever it has not yet
seen, live until the terminal event. Implementations: `memory.MemoryBroker` (one process)
and `redis.RedisBroker` (events mirrored to Redis Streams, followed from any instance).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from enum import StrEnum
from typing import Protocol

from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.models import Message, ToolCallHead


class BrokerOperation(StrEnum):
    """What a shared broker failed at, as counted in `chatrelay_broker_errors_total`."""

    WRITE = "write"  # mirroring a generation's events
    READ = "read"  # loading a message's events for a subscriber here
    FOLLOW = "follow"  # following a message generated on another instance
    CONTROL = "control"  # the control channel (cancel, delete, watchers)


# Told of every failure, so operators see them (the metrics); it must not raise.
ErrorHook = Callable[[BrokerOperation], None]


def ignore_error(_operation: BrokerOperation) -> None:
    """The default `ErrorHook`."""


class BrokerUnavailable(Exception):
    """A topic served from a shared broker can no longer be read (the broker is down, or
    the reader fell behind what it keeps). Never an HTTP error: the subscriber goes on
    from the database instead."""


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
        with `heartbeat`, an empty batch after that many quiet seconds. A topic of a
        shared broker may raise `BrokerUnavailable` part way."""
        ...


class Broker(Protocol):
    """Holds the topics of running (and just finished) generations."""

    def open(self, message_id: str) -> Topic:
        """A new, empty topic for a generation about to start."""
        ...

    async def find(self, message_id: str, *, after: int | None = None) -> Topic | None:
        """The topic of a message being generated, if this broker can serve it.

        `after` is the cursor the subscriber will read from: a shared broker may wait a
        moment for that event to reach it (it was just published elsewhere)."""
        ...

    def discard(self, message_id: str) -> None:
        """Forget a topic: its events are no longer served from here."""
        ...

    async def check(self) -> str | None:
        """None when the broker works, else why not (for readiness)."""

    async def publish_external_end(self, event: LogEvent) -> None:
        """A message was closed by someone other than its generation — the lease sweeper,
        after its owner died — and is now terminal in the database (`interrupted`).

        `event` is its terminal `error` event exactly as a replay from the database gives
        it (id `RECOVERED_END_ID`, the stored message). A shared broker appends it to the
        message's topic if that topic exists and is not closed yet, so subscribers on
        every instance end; a broker no other instance reads has nothing to do.
        """
        ...

    async def aclose(self) -> None: ...
