"""What runs before the service takes requests: replay the spool, then close orphans.

The spool goes first, so a message whose final write was spooled at the last shutdown
ends as it really ended instead of `interrupted`. Then messages still `streaming` that no
live process generates become `interrupted`, their last checkpoint kept. Which ones:

- one instance per database (no `REDIS_URL`): every `streaming` message — whoever wrote
  it is gone, since this is the only instance — so a restart closes them at once;
- several instances (`REDIS_URL` set): only those whose lease has expired, or that have
  no lease (rows from before leases existed); the rest belong to live instances, and the
  lease sweeper (`generation/leases.py`) closes them if their owner dies.
"""

from __future__ import annotations

import logging

from chatrelay.storage.repository import OrphanScope, Repository
from chatrelay.storage.spool import Spool

log = logging.getLogger("chatrelay.generation")

_STOPPED = "the service stopped during generation"


async def prepare_storage(
    repo: Repository, spool: Spool | None, *, shared_database: bool = False
) -> int:
    """Replay spooled final writes, then recover; returns how many were recovered."""
    if spool is not None:
        await spool.replay(repo)
    return await recover_interrupted(repo, shared_database=shared_database)


async def recover_interrupted(repo: Repository, *, shared_database: bool = False) -> int:
    """Messages left `streaming` by a dead process become `interrupted`, checkpoint kept."""
    scope = OrphanScope.EXPIRED_OR_UNLEASED if shared_database else OrphanScope.ALL
    orphans = await repo.interrupt_orphans(scope, _STOPPED)
    if orphans:
        log.warning("recovered %d interrupted generation(s) from a previous run", len(orphans))
    return len(orphans)
