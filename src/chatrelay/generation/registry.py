"""The generations this process runs: start, follow, cancel, checkpoint, recover, drain.

A subscriber asks for a message's events from a cursor. While the generation runs here
(and for a short while after), events come from the in-memory log; otherwise they are
rebuilt from the database, so every subscriber sees the same ids and data.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

from chatrelay.clock import now_iso
from chatrelay.errors import BadRequest, Conflict, ShuttingDown, StorageError
from chatrelay.generation.log import LogEvent, events_from_message, was_recovered
from chatrelay.generation.runner import CANCEL, SHUTDOWN, Generation
from chatrelay.models import Message, Status
from chatrelay.storage.repository import Repository
from chatrelay.storage.spool import Spool
from chatrelay.upstream.client import UpstreamClient

log = logging.getLogger("chatrelay.generation")

_POLL_INTERVAL = 0.5


class GenerationRegistry:
    def __init__(
        self,
        repo: Repository,
        upstream: UpstreamClient,
        *,
        checkpoint_interval: float = 1.0,
        finished_log_ttl: float = 30.0,
        spool: Spool | None = None,
    ) -> None:
        self.repo = repo
        self.spool = spool
        self.upstream = upstream
        self.checkpoint_interval = checkpoint_interval
        self.finished_log_ttl = finished_log_ttl
        self.generations: dict[str, Generation] = {}
        self.draining = False
        self.forced = False
        self._checkpointer: asyncio.Task[None] | None = None
        self._expiry: set[asyncio.TimerHandle] = set()
        self._pending_finals: dict[str, Message] = {}
        self._final_queue: list[tuple[Message, asyncio.Future[None]]] = []
        self._final_wakeup = asyncio.Event()
        self._final_writer_task: asyncio.Task[None] | None = None
        self._retries: set[asyncio.Task[None]] = set()
        self.last_storage_error: str | None = None

    # -- lifecycle -------------------------------------------------------------------

    @property
    def storage_problem(self) -> str | None:
        """Why the database is not healthy for us right now, if it is not."""
        if self._pending_finals:
            return f"{len(self._pending_finals)} final write(s) waiting for the database"
        return self.last_storage_error

    async def start(self) -> None:
        if self.spool is not None:
            await self.spool.replay(self.repo)
        await self.recover()
        self._checkpointer = asyncio.create_task(self._checkpoint_loop(), name="checkpointer")
        self._final_writer_task = asyncio.create_task(self._final_writer(), name="final writer")

    async def recover(self) -> int:
        """Messages left `streaming` by a dead process become `interrupted`, checkpoint kept."""
        orphans = await self.repo.streaming_messages()
        for message in orphans:
            final = message.evolve(
                status=Status.INTERRUPTED,
                error={"code": "interrupted", "message": "the service stopped during generation"},
                completed_at=now_iso(),
            )
            await self.repo.finalize(final)
        if orphans:
            log.warning("recovered %d interrupted generation(s) from a previous run", len(orphans))
        return len(orphans)

    def forget_conversation(self, conversation_id: str) -> None:
        """Its messages are deleted: stop their generations and stop serving their logs."""
        for message_id, generation in list(self.generations.items()):
            if generation.message.conversation_id == conversation_id:
                generation.deleted = True
                generation.stop("deleted")
                if generation.finished:
                    self.generations.pop(message_id, None)

    def _local(self, tenant: str, message_id: str) -> Generation | None:
        """The generation this process runs (or just ran) for the tenant's message."""
        generation = self.generations.get(message_id)
        if generation is None or generation.deleted or generation.message.tenant != tenant:
            return None
        return generation

    def interrupt_all(self) -> None:
        """Stop every running generation now (they end `interrupted`); refuse new ones."""
        self.draining = True
        self.forced = True
        for generation in list(self.generations.values()):
            if not generation.finished:
                generation.stop(SHUTDOWN)

    async def drain(self, grace: float) -> None:
        """Refuse new work; let running generations finish for `grace` s, then interrupt them."""
        self.draining = True
        running = [g.task for g in self.generations.values() if g.task and not g.finished]
        if running and grace > 0 and not self.forced:
            await asyncio.wait(running, timeout=grace)
        for generation in list(self.generations.values()):
            if not generation.finished:
                generation.stop(SHUTDOWN)
        tasks = [g.task for g in self.generations.values() if g.task and not g.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        if self._retries:
            await asyncio.wait(list(self._retries), timeout=5)

    async def close(self) -> None:
        for task in (self._checkpointer, self._final_writer_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        queued, self._final_queue = self._final_queue, []
        for _, done in queued:  # never leave a generation waiting on a writer that is gone
            if not done.done():
                done.set_exception(StorageError("the service stopped before this write"))
        for handle in self._expiry:
            handle.cancel()
        self._expiry.clear()
        for task in list(self._retries):
            task.cancel()
        await asyncio.gather(*self._retries, return_exceptions=True)
        if self._pending_finals:
            unsaved = list(self._pending_finals.values())
            if self.spool is not None:
                self.spool.write(unsaved)
            else:
                log.error("lost %d final write(s): no spool configured", len(unsaved))
            self._pending_finals.clear()

    # -- generations -----------------------------------------------------------------

    def launch(
        self, message: Message, body: dict[str, Any], *, cancel_on_disconnect: bool = False
    ) -> Generation:
        if self.draining:
            raise ShuttingDown("the service is shutting down; try again shortly")
        generation = Generation(
            message,
            body,
            upstream=self.upstream,
            finalize=self._finalize,
            cancel_on_disconnect=cancel_on_disconnect,
        )
        self.generations[message.id] = generation
        task = generation.start()
        task.add_done_callback(lambda _t: self._schedule_expiry(message.id))
        return generation

    def _schedule_expiry(self, message_id: str) -> None:
        loop = asyncio.get_running_loop()

        generation = self.generations.get(message_id)
        if generation is not None and generation.deleted and message_id not in self._pending_finals:
            self.generations.pop(message_id, None)
            return

        def expire() -> None:
            self._expiry.discard(handle)
            if message_id in self._pending_finals:
                self._schedule_expiry(message_id)  # still the only copy of the final state
                return
            self.generations.pop(message_id, None)

        handle = loop.call_later(self.finished_log_ttl, expire)
        self._expiry.add(handle)

    async def cancel(self, tenant: str, message_id: str) -> Message:
        """Stop a running generation; its partial text is kept. 409 if it already ended."""
        generation = self._local(tenant, message_id)
        if generation is not None:
            stopped = generation.stop(CANCEL)
            if generation.task is not None:
                await asyncio.shield(generation.task)
            final = generation.final
            assert final is not None
            if not stopped or final.status is not Status.CANCELLED:
                raise Conflict(
                    f"message {message_id} already ended with status {final.status}",
                    code="message_finished",
                )
            return final
        message = await self.repo.get_message(tenant, message_id)
        if message.status is Status.STREAMING:
            raise Conflict(
                f"message {message_id} is being generated by another instance",
                code="not_owner",
            )
        if message.role != "assistant":
            raise Conflict(
                f"message {message_id} is a {message.role} message", code="not_generated"
            )
        raise Conflict(
            f"message {message_id} already ended with status {message.status}",
            code="message_finished",
        )

    async def _finalize(self, message: Message) -> None:
        """The final write, group-committed with others finishing at the same moment.

        If the database fails, the write is retried in the background so subscribers
        get their terminal event now; it lands later or goes to the spool.
        """
        writer = self._final_writer_task
        try:
            if writer is None or writer.done():
                await self.repo.finalize(message)  # the writer is gone (shutting down)
            else:
                done = asyncio.get_running_loop().create_future()
                self._final_queue.append((message, done))
                self._final_wakeup.set()
                await done
            self.last_storage_error = None
        except StorageError as exc:
            self.last_storage_error = exc.message
            log.warning("final write of %s failed (%s); retrying", message.id, exc.message)
            self._pending_finals[message.id] = message
            task = asyncio.create_task(self._retry_final(message), name=f"final {message.id}")
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

    async def _final_writer(self) -> None:
        """Writes whatever final messages queued up while the previous batch was written."""
        while True:
            await self._final_wakeup.wait()
            self._final_wakeup.clear()
            batch, self._final_queue = self._final_queue, []
            if not batch:
                continue
            try:
                await self.repo.finalize(*(message for message, _ in batch))
            except Exception as exc:
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

    async def _retry_final(self, message: Message) -> None:
        delay = 0.05
        attempt = 1
        while True:
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)
            attempt += 1
            try:
                await self.repo.finalize(message)
            except StorageError as exc:
                self.last_storage_error = exc.message
                continue
            self._pending_finals.pop(message.id, None)
            self.last_storage_error = None
            log.info("final write of %s landed after %d attempts", message.id, attempt)
            return

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_interval)
            dirty = [g for g in self.generations.values() if g.dirty and not g.finished]
            if not dirty:
                continue
            for generation in dirty:
                generation.dirty = False
            try:
                await self.repo.checkpoint([g.snapshot() for g in dirty])
                self.last_storage_error = None
            except StorageError as exc:
                self.last_storage_error = exc.message
                log.warning("checkpoint of %d message(s) failed: %s", len(dirty), exc.message)
                for generation in dirty:
                    generation.dirty = True
            except Exception:
                log.exception("checkpoint failed unexpectedly")

    # -- subscribers -----------------------------------------------------------------

    async def event_batches(
        self, tenant: str, message_id: str, cursor: int | None, *, heartbeat: float | None = None
    ) -> AsyncIterator[list[LogEvent]] | None:
        """The events after `cursor`, in batches; None when the cursor is the terminal event.

        An empty batch is a heartbeat, after `heartbeat` s without an event.
        """
        generation = self._local(tenant, message_id)
        if generation is not None:
            event_log = generation.log
            event_log.check_cursor(cursor)
            if cursor is not None and event_log.closed and cursor == len(event_log.events):
                return None
            return event_log.read_batches(cursor, heartbeat=heartbeat)
        message = await self.repo.get_message(tenant, message_id)
        if message.role != "assistant":
            raise BadRequest(f"message {message_id} has no event stream", code="no_event_stream")
        stored = events_from_message(message)
        end = stored[-1]
        if cursor is None:
            remaining = stored
        elif message.status.is_terminal and cursor == end.seq:
            return None  # nothing after the terminal event
        elif 1 <= cursor < len(stored) or (cursor == len(stored) and not end.is_terminal):
            remaining = stored[cursor:]
        elif was_recovered(message) and len(stored) <= cursor < end.seq:
            remaining = [end]  # ids a crashed process gave out past its last checkpoint
        else:
            raise BadRequest(f"unknown event id {cursor}", code="invalid_cursor")
        return self._replay(tenant, message_id, remaining, len(stored), heartbeat)

    async def _replay(
        self,
        tenant: str,
        message_id: str,
        remaining: list[LogEvent],
        position: int,
        heartbeat: float | None,
    ) -> AsyncIterator[list[LogEvent]]:
        """Stored events, then — while the message is still being generated elsewhere — new ones.

        `position` is how many events the stored log holds, from where polling continues.
        """
        loop = asyncio.get_running_loop()
        if remaining:
            yield remaining
            if remaining[-1].is_terminal:
                return
        last_sent = loop.time()
        while True:
            await asyncio.sleep(_POLL_INTERVAL)
            generation = self._local(tenant, message_id)
            if generation is not None:
                async for live in generation.log.read_batches(position, heartbeat=heartbeat):
                    yield live
                return
            stored = events_from_message(await self.repo.get_message(tenant, message_id))
            batch = stored[position:]
            if not batch and stored[-1].is_terminal:
                batch = [stored[-1]]  # recovered with fewer events than we had already sent
            if batch:
                position = len(stored)
                yield batch
                last_sent = loop.time()
                if batch[-1].is_terminal:
                    return
            elif heartbeat is not None and loop.time() - last_sent >= heartbeat:
                yield []
                last_sent = loop.time()
