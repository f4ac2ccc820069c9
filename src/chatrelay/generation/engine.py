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
from chatrelay.generation.startup import prepare_storage
from chatrelay.generation.subscription import Subscriptions
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
        checkpoint_interval: float = 1.0,
        finished_log_ttl: float = 30.0,
        poll_interval: float = 0.5,
        max_generations_per_tenant: int = 0,
        max_subscribers_per_message: int = 0,
    ) -> Engine:
        """Replay the spool and recover orphans, then start writing and accepting work."""
        await prepare_storage(repo, spool)
        broker = broker if broker is not None else MemoryBroker()
        persistence = Persistence(repo, spool=spool, checkpoint_interval=checkpoint_interval)
        registry = GenerationRegistry(
            upstream,
            broker,
            persistence,
            finished_log_ttl=finished_log_ttl,
            max_per_tenant=max_generations_per_tenant,
        )
        persistence.start(registry.running)
        subscriptions = Subscriptions(
            repo,
            registry,
            broker,
            poll_interval=poll_interval,
            max_per_message=max_subscribers_per_message,
        )
        return cls(broker, persistence, registry, subscriptions)

    async def drain(self, grace: float) -> None:
        await self.registry.drain(grace)

    async def close(self) -> None:
        """After `drain`: stop the writers (spooling what never landed), free the topics."""
        self.registry.close()
        await self.persistence.close()
        await self.broker.aclose()
