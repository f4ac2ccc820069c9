"""The generation core in-process: a real SQLite file, a spy repository, the scripted
upstream, an `Engine` with short intervals — and the few waits the tests share.

Nothing here replaces chatrelay's behaviour: `SpyRepository` counts calls and, when a test
asks, holds a `finalize` until an event is set, then delegates to the real one.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatrelay.broker.event import LogEvent
from chatrelay.generation.engine import Engine
from chatrelay.generation.registry import GenerationRegistry
from chatrelay.generation.runner import Generation
from chatrelay.models import Message
from chatrelay.service import ChatService, TurnOptions
from chatrelay.storage.database import Database, Unit
from chatrelay.storage.repository import Repository
from chatrelay.storage.spool import Spool
from tests.fakes.chat_upstream import Gate, Script, ScriptedUpstream, Step

TENANT = "acme"
# Short enough that a write against a locked file fails at once (the service uses 5 s).
BUSY_TIMEOUT_MS = 20


class SpyRepository(Repository):
    """The real repository, counting calls; `finalize` batches are recorded in order."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.calls: Counter[str] = Counter()
        self.finalize_batches: list[list[str]] = []  # message ids per finalize call
        self.hold_finalize: asyncio.Event | None = None  # if set: wait for it, then write
        self.finalize_entered = asyncio.Event()
        self.history_rows = 0  # history rows a turn's context read (`add_turn`)

    async def finalize(self, *messages: Message) -> None:
        self.calls["finalize"] += 1
        self.finalize_batches.append([m.id for m in messages])
        self.finalize_entered.set()
        if self.hold_finalize is not None:
            await self.hold_finalize.wait()
        await super().finalize(*messages)

    async def get_message(self, tenant: str, message_id: str) -> Message:
        self.calls["get_message"] += 1
        return await super().get_message(tenant, message_id)

    async def _history_page(
        self, unit: Unit, conversation_id: str, before: int, size: int
    ) -> list[Message]:
        page = await super()._history_page(unit, conversation_id, before, size)
        self.history_rows += len(page)
        return page


async def until(predicate: Callable[[], bool], *, within: float = 5.0, what: str = "") -> None:
    """Wait for a condition no event announces (a timer, a background retry)."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or predicate}")
        await asyncio.sleep(0.005)


async def collect(batches: object) -> list[LogEvent]:
    """Every event of an `event_batches` iterator, heartbeats dropped."""
    assert batches is not None, "expected events, got None (cursor at the terminal event)"
    events: list[LogEvent] = []
    async for batch in batches:  # type: ignore[attr-defined]
        events.extend(batch)
    return events


@dataclass
class Harness:
    db: Database
    db_path: Path
    repo: SpyRepository
    upstream: ScriptedUpstream
    spool: Spool
    engine: Engine
    intervals: dict[str, float]
    others: list[Engine] = field(default_factory=list)  # more starts on the same database
    _closed: set[int] = field(default_factory=set)

    @property
    def registry(self) -> GenerationRegistry:
        return self.engine.registry

    @property
    def service(self) -> ChatService:
        return ChatService(self.repo, self.engine.registry, "default-model")

    async def post(
        self,
        script: Script | None = None,
        *,
        content: str = "hi",
        cancel_on_disconnect: bool = False,
        conversation_id: str | None = None,
    ) -> Generation:
        """Store a turn through `ChatService` and return its running generation."""
        if script is not None:
            self.upstream.enqueue(script)
        if conversation_id is None:
            conversation_id = (await self.service.create_conversation(TENANT)).id
        posted = await self.service.post_message(
            TENANT,
            conversation_id,
            content=content,
            options=TurnOptions(cancel_on_disconnect=cancel_on_disconnect),
        )
        generation = self.engine.registry.local(TENANT, posted.assistant.id)
        assert generation is not None
        return generation

    async def post_paused(
        self, before: Sequence[Step], after: Sequence[Step] = (), **options: Any
    ) -> tuple[Generation, Gate]:
        """Post a script that stops between `before` and `after`; return once it waits
        there (everything in `before` has been published), with the gate to open."""
        gate = Gate("pause")
        generation = await self.post(Script(steps=[*before, gate, *after]), **options)
        await gate.reached.wait()
        return generation, gate

    async def stored(self, message_id: str) -> Message:
        return await Repository.get_message(self.repo, TENANT, message_id)  # not counted

    async def finished(self, generation: Generation) -> Message:
        """Wait for the generation's end; its final message (as published)."""
        assert generation.task is not None
        await generation.task
        assert generation.final is not None
        return generation.final

    async def events(self, message_id: str, cursor: int | None = None) -> list[LogEvent]:
        return await collect(
            await self.engine.subscriptions.event_batches(TENANT, message_id, cursor)
        )

    async def start_engine(self, **intervals: float) -> Engine:
        """Another start on the same database and spool (what the next process does)."""
        engine = await Engine.start(
            self.repo, self.upstream, spool=self.spool, **{**self.intervals, **intervals}
        )
        self.others.append(engine)
        return engine

    async def stop(self, engine: Engine | None = None, *, drain: bool = True) -> None:
        """Drain (interrupting what still runs) and close; once per engine.

        `drain=False` closes at once: a drain waits up to 5 s for final writes being
        retried, which a test of what happens to them at close does not need.
        """
        engine = engine or self.engine
        if id(engine) in self._closed:
            return
        self._closed.add(id(engine))
        if drain:
            await engine.drain(0)
        await engine.close()

    async def restart(self, **intervals: float) -> Engine:
        await self.stop()
        self.engine = await self.start_engine(**intervals)
        self.others.remove(self.engine)
        return self.engine

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Another connection holds the SQLite write lock: every write fails (busy)."""
        other = sqlite3.connect(self.db_path, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            yield
        finally:
            other.execute("COMMIT")
            other.close()
