"""A tenant's generation slots: taken before a turn is stored, held until the generation
has recorded its end, whichever way it ends, and never leaked by a turn that fails."""

from __future__ import annotations

import pytest

from chatrelay.errors import NotFound, TooManyRequests
from chatrelay.generation.registry import GenerationRegistry
from chatrelay.service import ChatService, TurnOptions
from tests.fakes.chat_upstream import Gate, Script
from tests.unit.generation.harness import TENANT, Harness

MISSING = "conv_01ARZ3NDEKTSV4RRFFQ69G5FAV"


async def test_a_slot_is_held_until_the_generation_ends(harness: Harness) -> None:
    registry = harness.registry
    first, gate = await harness.post_paused(["a"], ["b"])
    second, _ = await harness.post_paused(["x"], ["never"])
    assert registry.tenant_generations(TENANT) == 2
    gate.open()
    await harness.finished(first)
    assert registry.tenant_generations(TENANT) == 1, "completed: its slot is free"
    await harness.service.cancel(TENANT, second.message.id)
    assert registry.tenant_generations(TENANT) == 0, "cancelled: its slot is free"


async def test_a_turn_that_fails_to_store_releases_its_slot(harness: Harness) -> None:
    with pytest.raises(NotFound):
        await harness.service.post_message(TENANT, MISSING, content="q", options=TurnOptions())
    assert harness.registry.tenant_generations(TENANT) == 0


async def test_interrupted_at_shutdown_releases_its_slot(harness: Harness) -> None:
    await harness.post_paused(["a"], ["b"])
    assert harness.registry.tenant_generations(TENANT) == 1
    await harness.engine.drain(0)
    assert harness.registry.tenant_generations(TENANT) == 0


async def test_the_cap_refuses_before_anything_is_stored(harness: Harness) -> None:
    """A registry with one slot per tenant (the harness's own has none)."""
    registry = GenerationRegistry(
        harness.upstream, harness.engine.broker, harness.engine.persistence, max_per_tenant=1
    )
    chat = ChatService(harness.repo, registry, "m")
    conversation = await chat.create_conversation(TENANT)
    gate = Gate("hold")
    harness.upstream.enqueue(Script(steps=["a", gate, "b"]))
    posted = await chat.post_message(TENANT, conversation.id, content="q", options=TurnOptions())
    await gate.reached.wait()
    with pytest.raises(TooManyRequests) as refused:
        await chat.post_message(TENANT, conversation.id, content="q2", options=TurnOptions())
    assert refused.value.code == "too_many_generations"
    assert [m.content for m in await harness.repo.list_messages(conversation.id)] == ["q", ""]
    await chat.post_message(
        "globex",
        (await chat.create_conversation("globex")).id,
        content="other tenant",
        options=TurnOptions(),
    )
    gate.open()
    generation = registry.local(TENANT, posted.assistant.id)
    assert generation is not None and generation.task is not None
    await generation.task
    assert registry.tenant_generations(TENANT) == 0
    await registry.drain(0)
    registry.close()
