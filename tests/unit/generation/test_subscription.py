"""Following a message's events: live from the topic, from the database once the log has
expired or for a process that never ran it, and polled while it streams elsewhere — with
the same ids and text on every path, from every cursor."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from chatrelay.broker.event import LogEvent
from chatrelay.broker.memory import MemoryBroker
from chatrelay.errors import BadRequest, UpstreamError
from chatrelay.generation.persistence import Persistence
from chatrelay.generation.registry import GenerationRegistry
from chatrelay.generation.subscription import Subscriptions
from chatrelay.models import Status
from tests.fakes.chat_upstream import Gate, Piece, Script, script
from tests.unit.generation.harness import TENANT, Harness, collect, until

_CANCEL_HERE = "cancel here"


def _outcomes() -> dict[str, tuple[Script, Status]]:
    return {
        "cancelled": (
            script("kept", Piece(reasoning="r"), Gate(_CANCEL_HERE), "lost"),
            Status.CANCELLED,
        ),
        "completed with reasoning": (
            script(Piece(reasoning="think "), "Hé", Piece(reasoning="more"), "llo 👋", "\n!"),
            Status.COMPLETED,
        ),
        "failed mid-stream": (
            script("par", "tial", UpstreamError("upstream went away", code="upstream_error")),
            Status.FAILED,
        ),
        "truncated": (script("cut", " short", truncate=True), Status.FAILED),
    }


async def _live(harness: Harness, story: Script) -> tuple[str, list[LogEvent]]:
    """Run a generation with a subscriber from the start; what the subscriber saw."""
    gate = Gate("before the first piece")
    story.steps.insert(0, gate)
    generation = await harness.post(story)
    mid = generation.message.id
    subscriber = asyncio.create_task(harness.events(mid))
    await gate.reached.wait()
    gate.open()
    for step in story.steps:
        if isinstance(step, Gate) and step.name == _CANCEL_HERE:
            await step.reached.wait()
            await harness.registry.cancel(generation)
    live = await subscriber
    await harness.finished(generation)
    return mid, live


async def _tails(subscriptions: Subscriptions, mid: str, count: int) -> dict[Any, Any]:
    """What a subscriber gets from no cursor, and from each cursor 1..count."""
    tails: dict[Any, Any] = {}
    for cursor in [None, *range(1, count + 1)]:
        batches = await subscriptions.event_batches(TENANT, mid, cursor)
        tails[cursor] = None if batches is None else await collect(batches)
    for bad in (0, count + 1):
        with pytest.raises(BadRequest) as refused:
            await subscriptions.event_batches(TENANT, mid, bad)
        assert refused.value.code == "invalid_cursor"
    return tails


@pytest.mark.parametrize("outcome", list(_outcomes()))
async def test_every_cursor_replays_the_live_tail_from_memory_and_database(
    harness: Harness, outcome: str
) -> None:
    story, status = _outcomes()[outcome]
    mid, live = await _live(harness, story)
    assert live[-1].final.status is status
    expected = {None: live, **{c: live[c:] for c in range(1, len(live))}, len(live): None}

    assert harness.registry.local(TENANT, mid) is not None, "still in memory"
    from_memory = await _tails(harness.engine.subscriptions, mid, len(live))

    # A process that never ran it (its own broker, nothing in memory) reads the database.
    elsewhere = await harness.start_engine()
    reads = harness.repo.calls["get_message"]
    from_database = await _tails(elsewhere.subscriptions, mid, len(live))

    assert from_memory == expected
    assert from_database == expected
    assert harness.repo.calls["get_message"] > reads, "the replay never read the database"
    assert await elsewhere.broker.find(mid) is None


@pytest.mark.parametrize("intervals", [{"finished_log_ttl": 0.05}], indirect=True)
async def test_after_the_ttl_the_log_comes_from_the_database_identical(
    harness: Harness,
) -> None:
    mid, live = await _live(harness, script("one", " two", Piece(reasoning="why")))

    await until(lambda: harness.registry.local(TENANT, mid) is None, within=2, what="expiry")
    assert await harness.engine.broker.find(mid) is None, "the topic must be gone"
    reads = harness.repo.calls["get_message"]
    replayed = await harness.events(mid)

    assert harness.repo.calls["get_message"] == reads + 1, "the replay came from the database"
    assert replayed == live
    assert [(e.id, e.text) for e in replayed] == [(e.id, e.text) for e in live]
    assert replayed[-1].final.content == "one two" and replayed[-1].final.reasoning == "why"


async def test_a_message_streaming_elsewhere_is_polled_from_the_database(
    harness: Harness,
) -> None:
    """Another instance without a shared broker sees the checkpoints, then the end."""
    generation, gate = await harness.post_paused(["a", "b"], ["c", "d"])
    mid = generation.message.id
    live = asyncio.create_task(harness.events(mid))
    await until(lambda: not generation.dirty, what="a checkpoint")
    other_registry = GenerationRegistry(
        harness.upstream, MemoryBroker(), Persistence(harness.repo), finished_log_ttl=5
    )
    elsewhere = Subscriptions(harness.repo, other_registry, MemoryBroker(), poll_interval=0.01)
    polled = asyncio.create_task(collect(await elsewhere.event_batches(TENANT, mid, None)))
    await until(lambda: harness.repo.calls["get_message"] >= 3, what="polling")
    assert not polled.done()

    gate.open()
    assert await polled == await live
