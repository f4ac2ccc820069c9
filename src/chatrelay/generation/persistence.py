"""Getting generations into the database: checkpoints, the final write, and the spool.

- Checkpoints: one task saves the partial text of every changed streaming message in one
  transaction each `checkpoint_interval`; a failed one is retried at the next interval.
- Final writes are group-committed: whatever finished while the previous batch was
  written goes in the next transaction. If the database fails, the write is retried in
  the background with backoff until it lands, so subscribers get their terminal event
  now rather than when the database comes back.
- At close, what has still not landed goes to the spool (fsynced), replayed at the next
  start (`startup.prepare_storage`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from chatrelay.errors import StorageError
from chatrelay.models import Message, PartialText
from chatrelay.observe import NULL_OBSERVER, Observer, StorageOperation
from chatrelay.storage.repository import Repository
from chatrelay.storage.spool import Spool

log = logging.getLogger("chatrelay.generation")

_RETRY_FIRST_DELAY = 0.05
_RETRY_MAX_DELAY = 2.0


class Checkpointable(Protocol):
    """A running generation as the checkpointer sees it."""

    dirty: bool

    @property
    def finished(self) -> bool: ...

    def partial(self) -> PartialText: ...


class Persistence:
    def __init__(
        self,
        repo: Repository,
        *,
        spool: Spool | None = None,
        checkpoint_interval: float = 1.0,
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        self.repo = repo
        self._observer = observer
        self._spool = spool
        self._checkpoint_interval = checkpoint_interval
        self._running: Callable[[], Iterable[Checkpointable]] = list
        self._checkpointer: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._queue: list[tuple[Message, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._pending: dict[str, Message] = {}  # final writes not yet landed
        self._retries: set[asyncio.Task[None]] = set()
        self._last_error: str | None = None

    @property
    def storage_problem(self) -> str | None:
        """Why the database is not healthy for us right now, if it is not."""
        if self._pending:
            return f"{len(self._pending)} final write(s) waiting for the database"
        return self._last_error

    def is_pending(self, message_id: str) -> bool:
        """Its final write has not landed yet: memory holds the only copy of its end."""
        return message_id in self._pending

    def start(self, running: Callable[[], Iterable[Checkpointable]]) -> None:
        """Start the final writer, and the checkpointer over what `running()` returns."""
        self._running = running
        self._checkpointer = asyncio.create_task(self._checkpoint_loop(), name="checkpointer")
        self._writer = asyncio.create_task(self._write_finals(), name="final writer")

    async def finalize(self, message: Message) -> None:
        """The final write, group-committed with others finishing at the same moment.

        Never raises for a database failure: the write is then retried in the background.
        """
        writer = self._writer
        try:
            if writer is None or writer.done():
                await self._timed_finalize(message)  # the writer is gone (shutting down)
            else:
                done = asyncio.get_running_loop().create_future()
                self._queue.append((message, done))
                self._wakeup.set()
                await done
            self._last_error = None
        except StorageError as exc:
            self._last_error = exc.message
            if writer is None or writer.done():
                self._observer.storage_error(StorageOperation.FINAL_WRITE)
            log.warning("final write of %s failed (%s); retrying", message.id, exc.message)
            self._pending[message.id] = message
            task = asyncio.create_task(self._retry_final(message), name=f"final {message.id}")
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

    async def wait_for_retries(self, grace: float) -> None:
        """Give final writes being retried a last chance (shutdown)."""
        if self._retries:
            await asyncio.wait(list(self._retries), timeout=grace)

    async def close(self) -> None:
        for task in (self._checkpointer, self._writer):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        queued, self._queue = self._queue, []
        for _, done in queued:  # never leave a generation waiting on a writer that is gone
            if not done.done():
                done.set_exception(StorageError("the service stopped before this write"))
        for task in list(self._retries):
            task.cancel()
        await asyncio.gather(*self._retries, return_exceptions=True)
        if self._pending:
            unsaved = list(self._pending.values())
            if self._spool is not None:
                self._spool.write(unsaved)
            else:
                log.error("lost %d final write(s): no spool configured", len(unsaved))
            self._pending.clear()

    async def _write_finals(self) -> None:
        """Writes whatever final messages queued up while the previous batch was written."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            try:
                await self._timed_finalize(*(message for message, _ in batch))
            except Exception as exc:
                if isinstance(exc, StorageError):
                    self._observer.storage_error(StorageOperation.FINAL_WRITE)
                failure = (
                    exc if isinstance(exc, StorageError) else StorageError(f"final write: {exc}")
                )
                for _, done in batch:
                    if not done.done():
                        done.set_exception(failure)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def _timed_finalize(self, *messages: Message) -> None:
        started = time.monotonic()
        await self.repo.finalize(*messages)
        self._observer.final_write(time.monotonic() - started)

    async def _retry_final(self, message: Message) -> None:
        delay = _RETRY_FIRST_DELAY
        attempt = 1
        while True:
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, _RETRY_MAX_DELAY)
            attempt += 1
            try:
                await self._timed_finalize(message)
            except StorageError as exc:
                self._last_error = exc.message
                self._observer.storage_error(StorageOperation.FINAL_WRITE)
                continue
            self._pending.pop(message.id, None)
            self._last_error = None
            log.info("final write of %s landed after %d attempts", message.id, attempt)
            return

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self._checkpoint_interval)
            dirty = [g for g in self._running() if g.dirty and not g.finished]
            if not dirty:
                continue
            for generation in dirty:
                generation.dirty = False
            try:
                started = time.monotonic()
                await self.repo.checkpoint([g.partial() for g in dirty])
                self._observer.checkpoint_written(time.monotonic() - started)
                self._last_error = None
            except StorageError as exc:
                self._last_error = exc.message
                self._observer.storage_error(StorageOperation.CHECKPOINT)
                log.warning("checkpoint of %d message(s) failed: %s", len(dirty), exc.message)
                for generation in dirty:
                    generation.dirty = True
            except Exception:
                log.exception("checkpoint failed unexpectedly")
