"""The in-process broker: each topic is a list in memory and the futures of its waiting
readers.

A publish appends and resolves every waiting reader's future — a broadcast without a
queue per subscriber. Readers keep their own cursors, so memory per message is the
message's own events. A reader's heartbeat is one loop timer that moves only when it
fires (`_Heartbeat`), not an `asyncio.timeout` entered and left around every wait:
those were 4 % of the relay's CPU with 2,000 streams held (docs/performance.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.errors import BadRequest
from chatrelay.models import Message, ToolCallHead

# How many of a topic's newest events keep their native frame (`LogEvent.wire`). The
# subscribers following a message live read within a few events of its end and share
# those frames; a reader further behind (a resume, a slow client) encodes the older
# events again, a couple of microseconds each. Keeping every frame was ~100 bytes of
# each event held, a third of what a long answer keeps per token (docs/performance.md).
WIRE_KEPT = 8


class MemoryTopic:
    """Append-only, in memory, for one running (or just finished) generation."""

    __slots__ = ("_events", "_waiters", "message_id")

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        self._events: list[LogEvent] = []
        self._waiters: list[asyncio.Future[bool]] = []  # readers waiting for the next event

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
        events = self._events
        event = LogEvent(len(events) + 1, kind, text, message, index=index, call=call)
        events.append(event)
        if len(events) > WIRE_KEPT:
            events[-WIRE_KEPT - 1].wire = None
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():  # a reader cancelled meanwhile has a cancelled one
                    waiter.set_result(True)
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
        loop = asyncio.get_running_loop()
        beat = None if heartbeat is None else _Heartbeat(loop, heartbeat)
        try:
            while True:
                if position < len(events):
                    batch = events[position:]
                    position += len(batch)
                    if beat is not None:
                        beat.quiet_since = loop.time()
                    yield batch
                    if batch[-1].is_terminal:
                        return
                    continue
                waiter: asyncio.Future[bool] = loop.create_future()
                self._waiters.append(waiter)
                if beat is not None:
                    beat.waiter = waiter
                try:
                    published = await waiter  # False: the heartbeat is due
                except BaseException:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)
                    raise
                finally:
                    if beat is not None:
                        beat.waiter = None
                if not published and beat is not None:
                    beat.quiet_since = loop.time()
                    yield []
        finally:
            if beat is not None:
                beat.close()


class _Heartbeat:
    """Wakes its reader with False when nothing was yielded for `every` seconds.

    The timer is not moved per event: when it fires early (something was yielded since it
    was set) it goes back to sleep until `every` after the last yield.
    """

    __slots__ = ("_every", "_loop", "_timer", "quiet_since", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, every: float) -> None:
        self._loop, self._every = loop, every
        self.quiet_since = loop.time()
        self.waiter: asyncio.Future[bool] | None = None
        self._timer = loop.call_at(self.quiet_since + every, self._due)

    def _due(self) -> None:
        now = self._loop.time()
        due_at = self.quiet_since + self._every
        if now >= due_at:
            waiter = self.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(False)
            # Otherwise the reader is busy writing: the next beat is a period from now.
            due_at = now + self._every
        self._timer = self._loop.call_at(due_at, self._due)

    def close(self) -> None:
        self._timer.cancel()


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
