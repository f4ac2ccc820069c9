"""The generation core wired together: broker, persistence, registry, subscriptions,
leases and the peers (other instances, through the control channel).

One place builds them in the right order (storage prepared before anything runs, the
checkpointer over the registry's running generations) and takes them down in reverse,
for the app's lifespan and for the in-process tests alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatrelay.broker.base import Broker
from chatrelay.broker.control import ControlBus
from chatrelay.broker.memory import MemoryBroker
from chatrelay.generation.leases import Leases
from chatrelay.generation.peers import Peers
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
    leases: Leases
    peers: Peers

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
        control: ControlBus | None = None,
        max_generations_per_tenant: int = 0,
        max_subscribers_per_message: int = 0,
    ) -> Engine:
        """Replay the spool and recover orphans, then start writing and accepting work.

        With a control channel (`REDIS_URL`) other instances share the database, so
        start-up recovers only orphans whose lease expired (`startup.py`). Without
        `prepare_storage` the step is skipped altogether: a worker of a pool, whose parent
        did it once before any worker started.
        """
        if prepare_storage:
            await prepare(repo, spool, shared_database=control is not None)
        broker = broker if broker is not None else MemoryBroker()
        persistence = Persistence(
            repo, spool=spool, checkpoint_interval=checkpoint_interval, observer=observer
        )
        registry = GenerationRegistry(
            upstream,
            broker,
            persistence,
            finished_log_ttl=finished_log_ttl,
            observer=observer,
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
        leases = Leases(repo, broker, registry.running, ttl=repo.lease_ttl, control=control)
        leases.start()
        peers = Peers(repo, registry, control)
        await peers.start()
        return cls(broker, persistence, registry, subscriptions, leases, peers)

    async def drain(self, grace: float) -> None:
        await self.registry.drain(grace)

    async def close(self) -> None:
        """After `drain`: stop the writers (spooling what never landed), free the topics."""
        self.registry.close()
        await self.peers.aclose()
        await self.leases.close()
        await self.persistence.close()
        await self.broker.aclose()
