"""Leases: this instance keeps its running messages' leases fresh and closes dead ones.

The lease lives in the database (`messages.owner`, `messages.lease_expires_at`), not in
Redis: the record is the authority on a message's status, so the check "expired" and
the write "interrupted" are one conditional UPDATE on the row itself — no window in
which Redis says one thing and the database another — and leases work without Redis
too. Expiry is judged on the database's clock (`Database.clock_sql`), so clock skew
between instances does not matter.

One task per instance, every `ttl / 3` s:
- renews the lease of every message it is generating (one statement, whatever their
  number; skipped while nothing runs here), so a live owner renews about three times per
  TTL and misses two renewals before anyone may overrule it;
- sweeps: `streaming` messages whose lease expired become `interrupted` with their last
  checkpoint, and the broker is told (`Broker.publish_external_end`) so subscribers on
  every instance get the `error` event.

Not piggybacked on the checkpointer: that one only writes when text changed, and a
generation waiting on a slow upstream still needs its lease renewed.

With a control bus (Redis), an expired lease is not enough: the sweep spares every
owner still subscribed to its control channel (`ControlBus.listening`). Redis drops a
dead process's subscription with its connection, so a dead owner is still closed within
the lease bound, while a live one that missed its renewals — its event loop starved under
overload, its write queued behind thousands in SQLite — is never overruled. When Redis
cannot say, the lease alone decides.

A dead owner's message is closed within TTL + TTL/3 of its last renewal. If this
instance itself could not renew for a whole TTL (database unreachable from here only),
another instance may close its messages; a generation here that finds itself swept is
stopped, so it does not go on streaming what the record already calls interrupted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from chatrelay.broker.base import Broker
from chatrelay.broker.control import ControlBus
from chatrelay.errors import StorageError
from chatrelay.generation.replay import events_from_message
from chatrelay.generation.runner import Generation, StopReason
from chatrelay.storage.repository import OrphanScope, Repository

log = logging.getLogger("chatrelay.generation")

_SWEPT = "the instance generating it stopped renewing its lease"


class Leases:
    def __init__(
        self,
        repo: Repository,
        broker: Broker,
        running: Callable[[], list[Generation]],
        *,
        ttl: float,
        control: ControlBus | None = None,
    ) -> None:
        self._repo = repo
        self._control = control
        self._broker = broker
        self._running = running
        self.ttl = ttl
        self.interval = ttl / 3
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="leases")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def tick(self) -> int:
        """Renew ours, then sweep; returns how many messages were swept."""
        running = self._running()
        if running:
            await self._repo.renew_leases()
        swept = await self._repo.interrupt_orphans(
            OrphanScope.EXPIRED, _SWEPT, spare=await self._alive()
        )
        if not swept:
            return 0
        ours = {g.message.id: g for g in running}
        for message in swept:
            log.warning("message %s: lease expired, marked interrupted", message.id)
            generation = ours.get(message.id)
            if generation is not None:
                generation.stop(StopReason.LEASE_LOST)
            try:
                await self._broker.publish_external_end(events_from_message(message)[-1])
            except Exception:
                log.exception("could not publish the end of %s", message.id)
        return len(swept)

    async def _alive(self) -> set[str]:
        """Owners of expired leases known to be alive (this instance included)."""
        if self._control is None:
            return set()
        me = self._control.instance_id
        owners = await self._repo.expired_owners()
        if not owners - {me}:
            return owners
        listening = await self._control.listening(owners - {me})
        alive = (listening or set()) | ({me} & owners)
        for owner in sorted(owners - alive):
            log.info("instance %s stopped renewing its leases and listens nowhere", owner)
        return alive

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except StorageError as exc:
                log.warning("lease renewal or sweep failed: %s", exc.message)
            except Exception:
                log.exception("lease renewal or sweep failed unexpectedly")
