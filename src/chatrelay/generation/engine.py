"""The generation core wired together: broker, persistence, registry, subscriptions.

One place builds them in the right order (storage prepared before anything runs, the
checkpointer over the registry's running generations) and takes them down in reverse,
for the app's lifespan and for the in-process tests alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatrelay.broker.base import Broker
from chatrelay.broker.memory import MemoryBroker
from chatrelay.generation.persistence import Persistence
from chatrelay.generation.registry import GenerationRegistry
from chatrelay.generation.runner import ChatUpstream
from chatrelay.generation.startup import prepare_storage as prepare
from chatrelay.generation.subscription import Subscriptions
from chatrelay.observe import NULL_OBSERVER, Observer
from chatrelay.storage.repository import Repository
from chatrelay.storage.spool import Spool


@dataclass(frozen=True)
class Engine:
    broker: Broker
    persistence: Persistence
    registry: GenerationRegistry
    subscriptions: Subscriptions

    @classmethod
    async def start(
        cls,
        repo: Repository,
        upstream: ChatUpstream,
        *,
        broker: Broker | None = None,
        spool: Spool | None = None,
        prepare_storage: bool = True,
        checkpoint_interval: float = 1.0,
        finished_log_ttl: float = 30.0,
        poll_interval: float = 0.5,
        observer: Observer = NULL_OBSERVER,
    ) -> Engine:
        """Replay the spool and recover orphans, then start writing and accepting work.

        Without `prepare_storage` the first step is skipped: one worker of several on a
        database must not mark its siblings' running messages `interrupted`.
        """
        if prepare_storage:
            await prepare(repo, spool)
        broker = broker if broker is not None else MemoryBroker()
        persistence = Persistence(
            repo, spool=spool, checkpoint_interval=checkpoint_interval, observer=observer
        )
        registry = GenerationRegistry(
            upstream, broker, persistence, finished_log_ttl=finished_log_ttl, observer=observer
        )
        persistence.start(registry.running)
        subscriptions = Subscriptions(repo, registry, broker, poll_interval=poll_interval)
        return cls(broker, persistence, registry, subscriptions)

    async def drain(self, grace: float) -> None:
        await self.registry.drain(grace)

    async def close(self) -> None:
        """After `drain`: stop the writers (spooling what never landed), free the topics."""
        self.registry.close()
        await self.persistence.close()
        await self.broker.aclose()
