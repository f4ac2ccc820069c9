"""A turn's upstream context is read newest first, only as far as the token budget needs.

Posting into a conversation of thousands of messages must cost about what posting into a
new one does: the repository reads at most about twice the messages the budget needs (pages
double from a small first one), and the context is exactly what the whole history gives.
"""

from __future__ import annotations

import pytest

from chatrelay.clock import now_iso
from chatrelay.ids import new_id
from chatrelay.models import Message, Status
from chatrelay.service import ChatService, TurnOptions, build_upstream_body
from chatrelay.storage.repository import HISTORY_PAGE
from tests.unit.generation.harness import TENANT, Harness

LONG = 2000  # messages already in the conversation


def _draft(i: int) -> Message:
    role = "user" if i % 2 == 0 else "assistant"
    return Message(
        id=new_id("msg"),
        conversation_id="",
        tenant=TENANT,
        seq=0,
        role=role,
        content=f"message {i:05d} " + "x" * (i % 7) * 10,
        status=Status.COMPLETED,
        model=None if role == "user" else "m",
        created_at=now_iso(),
        completed_at=now_iso(),
    )


async def _long_conversation(harness: Harness, count: int = LONG) -> str:
    conversation = await harness.service.create_conversation(TENANT, system_prompt="be brief")
    await harness.repo.append_messages(TENANT, conversation.id, [_draft(i) for i in range(count)])
    return conversation.id


async def _expected_body(harness: Harness, cid: str, budget: int, model: str) -> object:
    """The context built from the whole history, as before paging (the reference)."""
    conversation = await harness.repo.get_conversation(TENANT, cid)
    history = [m for m in await harness.repo.list_messages(cid) if m.superseded_by is None]
    history = history[:-1]  # without the turn's own streaming assistant message
    return build_upstream_body(conversation, history, model, {}, budget)


@pytest.mark.parametrize("budget", [1, 300, 1500, 6000])
async def test_a_turn_reads_only_the_history_its_budget_needs(
    harness: Harness, budget: int
) -> None:
    cid = await _long_conversation(harness)
    chat = ChatService(harness.repo, harness.registry, "m", context_tokens=budget)
    harness.repo.history_rows = 0
    posted = await chat.post_message(TENANT, cid, content="the question", options=TurnOptions())
    await harness.finished(harness.registry.local(TENANT, posted.assistant.id))  # type: ignore[arg-type]

    body = harness.upstream.bodies[-1]
    assert body == await _expected_body(harness, cid, budget, "m")
    kept = len(body["messages"]) - 2  # without the system prompt and the question
    assert kept < LONG, "the budget must have dropped old messages"
    # What it needs (what it keeps, the question, the first message that did not fit),
    # rounded up to pages that double from HISTORY_PAGE: under twice that plus a page.
    needed = kept + 2
    assert needed - 1 <= harness.repo.history_rows <= 2 * needed + HISTORY_PAGE, (
        f"read {harness.repo.history_rows} history messages to keep {kept}"
    )


async def test_without_a_budget_the_whole_history_is_read(harness: Harness) -> None:
    cid = await _long_conversation(harness, 120)
    chat = ChatService(harness.repo, harness.registry, "m", context_tokens=0)
    harness.repo.history_rows = 0
    posted = await chat.post_message(TENANT, cid, content="q", options=TurnOptions())
    await harness.finished(harness.registry.local(TENANT, posted.assistant.id))  # type: ignore[arg-type]
    # All 120; the question itself is offered as written, not read back.
    assert harness.repo.history_rows == 120, "all 120 earlier messages"
    assert harness.upstream.bodies[-1] == await _expected_body(harness, cid, 0, "m")


async def test_regenerate_in_a_long_conversation_reads_one_page(harness: Harness) -> None:
    """Regenerate answers the last active message: superseded ones are skipped, not read
    past the budget."""
    cid = await _long_conversation(harness)
    chat = ChatService(harness.repo, harness.registry, "m", context_tokens=300)
    first = await chat.post_message(TENANT, cid, content="q1", options=TurnOptions())
    await harness.finished(harness.registry.local(TENANT, first.assistant.id))  # type: ignore[arg-type]
    harness.repo.history_rows = 0
    again = await chat.regenerate(TENANT, first.assistant.id, TurnOptions())
    await harness.finished(harness.registry.local(TENANT, again.assistant.id))  # type: ignore[arg-type]

    body = harness.upstream.bodies[-1]
    assert body["messages"][-1] == {"role": "user", "content": "q1"}
    assert all(m["content"] != "" for m in body["messages"])
    assert body == await _expected_body(harness, cid, 300, "m")
    kept = len(body["messages"]) - 1  # without the system prompt
    assert kept < 100 and harness.repo.history_rows <= 2 * (kept + 1) + HISTORY_PAGE
