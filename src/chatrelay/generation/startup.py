"""What runs before the service takes requests: replay the spool, then close orphans.

The spool goes first, so a message whose final write was spooled at the last shutdown
ends as it really ended instead of `interrupted`. Then every message still `streaming`
was left by a process that died: it becomes `interrupted`, its last checkpoint kept.
This assumes one instance per database (leases are the scale-out issue's).
"""

from __future__ import annotations

import logging

from chatrelay.clock import now_iso
from chatrelay.models import Status
from chatrelay.storage.repository import Repository
from chatrelay.storage.spool import Spool

log = logging.getLogger("chatrelay.generation")


async def prepare_storage(repo: Repository, spool: Spool | None) -> int:
    """Replay spooled final writes, then recover; returns how many were recovered."""
    if spool is not None:
        await spool.replay(repo)
    return await recover_interrupted(repo)


async def recover_interrupted(repo: Repository) -> int:
    """Messages left `streaming` by a dead process become `interrupted`, checkpoint kept."""
    orphans = await repo.streaming_messages()
    for message in orphans:
        final = message.evolve(
            status=Status.INTERRUPTED,
            error={"code": "interrupted", "message": "the service stopped during generation"},
            completed_at=now_iso(),
        )
        await repo.finalize(final)
    if orphans:
        log.warning("recovered %d interrupted generation(s) from a previous run", len(orphans))
    return len(orphans)
