"""Leases on a real SQLite file: which `streaming` rows a sweep or a start-up may close,
that a renewed lease is never overruled, and that a generation swept under us stops."""

from __future__ import annotations

import asyncio

from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.broker.memory import MemoryBroker
from chatrelay.generation.leases import Leases
from chatrelay.generation.replay import RECOVERED_END_ID
from chatrelay.generation.startup import recover_interrupted
from chatrelay.models import Status
from chatrelay.storage.repository import OrphanScope, Repository
from tests.fakes.chat_upstream import Gate, Script
from tests.unit.generation.harness import TENANT, Harness


async def _streaming_message(repo: Repository) -> str:
    conversation, _ = await repo.create_conversation(
        tenant=TENANT, title=None, system_prompt=None, model=None, metadata={}
    )
    turn = await repo.add_turn(
        tenant=TENANT,
        conversation_id=conversation.id,
        user_content="hi",
        choose_model=lambda _c: "m",
        params={},
    )
    return turn.assistant.id


async def test_each_scope_closes_only_its_orphans(harness: Harness) -> None:
    db = harness.db
    unleased = await _streaming_message(Repository(db))  # as rows from before leases
    expired = await _streaming_message(Repository(db, instance_id="inst_dead", lease_ttl=-5))
    live = await _streaming_message(Repository(db, instance_id="inst_live", lease_ttl=60))
    repo = Repository(db)

    swept = await repo.interrupt_orphans(OrphanScope.EXPIRED, "swept")
    assert [m.id for m in swept] == [expired]
    assert swept[0].status is Status.INTERRUPTED
    assert swept[0].error == {"code": "interrupted", "message": "swept"}

    assert await recover_interrupted(repo, shared_database=True) == 1  # the unleased one
    assert (await harness.stored(unleased)).status is Status.INTERRUPTED
    assert (await harness.stored(live)).status is Status.STREAMING

    assert await recover_interrupted(repo, shared_database=False) == 1  # one instance: all
    assert (await harness.stored(live)).status is Status.INTERRUPTED


async def test_a_renewed_lease_is_not_swept(harness: Harness) -> None:
    db = harness.db
    mine = await _streaming_message(Repository(db, instance_id="inst_me", lease_ttl=-5))
    other = await _streaming_message(Repository(db, instance_id="inst_other", lease_ttl=-5))

    await Repository(db, instance_id="inst_me", lease_ttl=60).renew_leases()

    swept = await Repository(db).interrupt_orphans(OrphanScope.EXPIRED, "swept")
    assert [m.id for m in swept] == [other], "only the owner that did not renew is overruled"
    assert (await harness.stored(mine)).status is Status.STREAMING


async def test_a_generation_swept_under_its_owner_stops_interrupted(harness: Harness) -> None:
    # This process could not renew in time (its renewals land already expired), so a sweep
    # closes its message; the generation must not go on streaming past the record.
    harness.repo.instance_id, harness.repo.lease_ttl = "inst_slow", -5
    gate = Gate("pause")
    generation = await harness.post(Script(steps=["partial ", gate, "never"]))
    await gate.reached.wait()
    leases = Leases(harness.repo, harness.engine.broker, harness.registry.running, ttl=1)

    assert await leases.tick() == 1

    final = await asyncio.wait_for(harness.finished(generation), 5)
    assert final.status is Status.INTERRUPTED
    assert final.error is not None and final.error["code"] == "interrupted"
    stored = await harness.stored(generation.message.id)
    assert stored.status is Status.INTERRUPTED


class EndRecordingBroker(MemoryBroker):
    """The in-process broker, keeping what the sweeper hands a shared broker to publish."""

    def __init__(self) -> None:
        super().__init__()
        self.external_ends: list[LogEvent] = []

    async def publish_external_end(self, event: LogEvent) -> None:
        self.external_ends.append(event)


async def test_the_sweep_hands_the_broker_the_recovered_error_event(harness: Harness) -> None:
    dead = await _streaming_message(Repository(harness.db, instance_id="inst_dead", lease_ttl=-5))
    broker = EndRecordingBroker()
    leases = Leases(Repository(harness.db), broker, list, ttl=1)

    assert await leases.tick() == 1

    [event] = broker.external_ends
    assert (event.kind, event.seq) == (EventKind.ERROR, RECOVERED_END_ID)
    assert event.final.id == dead and event.final.status is Status.INTERRUPTED
    assert event.error["code"] == "interrupted"
    replayed = await harness.events(dead)
    assert replayed[-1] == event, "the same event a replay from the database ends with"
