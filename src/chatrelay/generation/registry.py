"""The generations this process runs: launch, look up, stop, drain.

A finished generation stays here for `finished_log_ttl` s (longer while its final write
has not landed, since memory then holds the only copy of its end), so late subscribers
and reads get it from memory; after that its topic is discarded and reads go to the
database.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from chatrelay.broker.base import Broker
from chatrelay.errors import Conflict, LimitKind, ShuttingDown, TooManyRequests
from chatrelay.generation.persistence import Persistence
from chatrelay.generation.runner import ChatUpstream, Generation, StopReason
from chatrelay.models import Message, Status
from chatrelay.observe import NULL_OBSERVER, Observer
from chatrelay.slots import KeyedLimit, Slot

log = logging.getLogger("chatrelay.generation")

_STOP_WAIT = 30.0  # seconds drain waits for stopped generations to record their end
# A refused generation cannot know when a slot frees (that is when another one ends), so
# the hint is short: retrying soon is cheap, since the refusal happens before any write.
GENERATION_RETRY_AFTER = 1.0


def _too_many_generations(tenant: str, limit: int) -> TooManyRequests:
    return TooManyRequests(
        f"this client key already has {limit} generations running; "
        "wait for one to finish (or cancel one)",
        code="too_many_generations",
        limit=LimitKind.GENERATIONS,
        retry_after=GENERATION_RETRY_AFTER,
    )


class GenerationRegistry:
    def __init__(
        self,
        upstream: ChatUpstream,
        broker: Broker,
        persistence: Persistence,
        *,
        finished_log_ttl: float = 30.0,
        observer: Observer = NULL_OBSERVER,
        max_per_tenant: int = 0,
    ) -> None:
        self._upstream = upstream
        self._observer = observer
        self._broker = broker
        self._persistence = persistence
        self._finished_log_ttl = finished_log_ttl
        self._generations: dict[str, Generation] = {}
        self._expiry: set[asyncio.TimerHandle] = set()
        self._draining = False
        self._forced = False
        # Every generation not yet finished holds a slot of its tenant: there is no queue
        # in front of the upstream, so "running" and "queued" (a 202 post generating in the
        # background) are the same thing here.
        self._slots = KeyedLimit(max_per_tenant, _too_many_generations)

    # -- what the edge asks --------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining

    def ensure_accepting(self) -> None:
        """Raise `ShuttingDown` once draining: checked before anything is stored."""
        if self._draining:
            raise ShuttingDown("the service is shutting down; try again shortly")

    def reserve(self, tenant: str) -> Slot:
        """A generation slot of `tenant`, taken before its turn is stored (429
        `too_many_generations` when all are in use). `launch(..., slot=)` keeps it until
        the generation has recorded its end; a slot not launched is released by `with`."""
        self.ensure_accepting()
        return self._slots.acquire(tenant)

    def tenant_generations(self, tenant: str) -> int:
        """Slots `tenant` holds: its unfinished generations, and turns being stored."""
        return self._slots.count(tenant)

    @property
    def running_count(self) -> int:
        return sum(1 for g in self._generations.values() if not g.finished)

    def running(self) -> list[Generation]:
        """Generations still streaming (what the checkpointer saves)."""
        return [g for g in self._generations.values() if not g.finished]

    def local(self, tenant: str, message_id: str) -> Generation | None:
        """The generation this process runs (or just ran) for the tenant's message."""
        generation = self._generations.get(message_id)
        if generation is None or generation.deleted or generation.message.tenant != tenant:
            return None
        return generation

    def live_view(self, message: Message) -> Message:
        """A streaming message as generated so far, not as last checkpointed."""
        if message.status is Status.STREAMING:
            generation = self._generations.get(message.id)
            if generation is not None:
                return generation.final or generation.snapshot()
        return message

    def watch(self, message_id: str) -> Generation | None:
        """The running generation a new subscriber should count itself on (see
        `Generation.watcher_joined` / `watcher_left`), if it runs here."""
        return self._generations.get(message_id)

    # -- starting and stopping -----------------------------------------------------------

    def launch(
        self,
        message: Message,
        body: dict[str, Any],
        *,
        cancel_on_disconnect: bool = False,
        slot: Slot | None = None,
        gated: bool = False,
    ) -> Generation:
        """Start generating `message`; `slot` (from `reserve`) is released when it ends.

        `gated`: before `message` is recorded; the caller then says `recorded()` or
        `abandon()` on the generation (`Generation` says what that changes).
        """
        if slot is None:
            slot = self.reserve(message.tenant)
        else:
            self.ensure_accepting()
        slot.keep()
        generation = Generation(
            message,
            body,
            topic=self._broker.open(message.id),
            upstream=self._upstream,
            finalize=self._persistence.finalize,
            cancel_on_disconnect=cancel_on_disconnect,
            observer=self._observer,
            gated=gated,
        )
        self._generations[message.id] = generation
        try:
            task = generation.start()
        except BaseException:
            slot.release()
            raise

        def ended(_task: asyncio.Task[None]) -> None:
            slot.release()
            self._schedule_expiry(message.id)

        task.add_done_callback(ended)
        return generation

    async def cancel(self, generation: Generation) -> Message:
        """Stop a running generation; its partial text is kept. 409 if it already ended."""
        stopped = generation.stop(StopReason.CANCELLED)
        if generation.task is not None:
            await asyncio.shield(generation.task)
        final = generation.final
        assert final is not None
        if not stopped or final.status is not Status.CANCELLED:
            raise Conflict(
                f"message {final.id} already ended with status {final.status}",
                code="message_finished",
            )
        return final

    def forget_conversation(self, conversation_id: str) -> None:
        """Its messages are deleted: stop their generations and stop serving their logs."""
        for message_id, generation in list(self._generations.items()):
            if generation.message.conversation_id == conversation_id:
                generation.deleted = True
                generation.stop(StopReason.DELETED)
                if generation.finished:
                    self._drop(message_id)

    def supersede(self, conversation_id: str, from_seq: int) -> None:
        """An edit or regenerate replaced the turns from `from_seq` on: stop those running."""
        for generation in list(self._generations.values()):
            replaced = generation.message
            if replaced.conversation_id == conversation_id and replaced.seq >= from_seq:
                generation.stop(StopReason.SUPERSEDED)

    def _schedule_expiry(self, message_id: str) -> None:
        generation = self._generations.get(message_id)
        pending = self._persistence.is_pending(message_id)
        if generation is not None and (generation.deleted or generation.abandoned) and not pending:
            self._drop(message_id)
            return

        def expire() -> None:
            self._expiry.discard(handle)
            if self._persistence.is_pending(message_id):
                self._schedule_expiry(message_id)  # still the only copy of the final state
                return
            self._drop(message_id)

        handle = asyncio.get_running_loop().call_later(self._finished_log_ttl, expire)
        self._expiry.add(handle)

    def _drop(self, message_id: str) -> None:
        self._generations.pop(message_id, None)
        self._broker.discard(message_id)

    # -- shutdown --------------------------------------------------------------------------

    def interrupt_all(self) -> None:
        """Stop every running generation now (they end `interrupted`); refuse new ones."""
        self._draining = True
        self._forced = True
        for generation in self.running():
            generation.stop(StopReason.SHUTDOWN)

    async def drain(self, grace: float) -> None:
        """Refuse new work; let running generations finish for `grace` s, then interrupt them."""
        self._draining = True
        running = [g.task for g in self.running() if g.task is not None]
        if running and grace > 0 and not self._forced:
            await asyncio.wait(running, timeout=grace)
        for generation in self.running():
            generation.stop(StopReason.SHUTDOWN)
        tasks = [
            g.task for g in self._generations.values() if g.task is not None and not g.task.done()
        ]
        if tasks:
            await asyncio.wait(tasks, timeout=_STOP_WAIT)
        await self._persistence.wait_for_retries(grace=5)

    def close(self) -> None:
        for handle in self._expiry:
            handle.cancel()
        self._expiry.clear()
