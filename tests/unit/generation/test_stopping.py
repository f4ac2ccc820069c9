"""Ending a generation early: cancel (and its races with the finish), the last watcher
leaving with `cancel_on_disconnect`, delete, supersede and shutdown."""

from __future__ import annotations

import asyncio

import pytest

from chatrelay.errors import Conflict, ShuttingDown
from chatrelay.generation.runner import StopReason
from chatrelay.models import Status
from chatrelay.service import TurnOptions
from tests.fakes.chat_upstream import Finish, Gate, script
from tests.unit.generation.harness import TENANT, Harness


async def test_cancel_mid_stream_keeps_the_partial_text_and_closes_the_upstream(
    harness: Harness,
) -> None:
    generation, _ = await harness.post_paused(["par", "tial"], [" never sent"])

    cancelled = await harness.service.cancel(TENANT, generation.message.id)

    assert cancelled.status is Status.CANCELLED
    assert cancelled.content == "partial"
    assert cancelled.error is None
    stream = harness.upstream.streams[-1]
    assert stream.closed.is_set() and not stream.completed, "the upstream read must end"
    events = await harness.events(generation.message.id)
    assert [e.kind for e in events] == ["start", "delta", "delta", "done"]
    assert events[-1].final.status is Status.CANCELLED
    stored = await harness.stored(generation.message.id)
    assert (stored.status, stored.content) == (Status.CANCELLED, "partial")


async def test_cancel_after_the_upstream_said_finish_is_a_conflict_and_completes(
    harness: Harness,
) -> None:
    """The finish chunk arrived but the stream has not ended (usage, [DONE] to come): the
    answer is whole, so the cancel loses the race."""
    after_finish = Gate()
    generation = await harness.post(script("all", " of it", Finish("stop"), after_finish))
    await after_finish.reached.wait()

    with pytest.raises(Conflict) as refused:
        await harness.service.cancel(TENANT, generation.message.id)

    assert refused.value.code == "message_finished"
    stored = await harness.stored(generation.message.id)
    assert (stored.status, stored.content, stored.finish_reason) == (
        Status.COMPLETED,
        "all of it",
        "stop",
    )


async def test_cancel_after_the_finish_is_a_conflict(harness: Harness) -> None:
    generation = await harness.post(script("done"))
    final = await harness.finished(generation)

    with pytest.raises(Conflict) as refused:
        await harness.service.cancel(TENANT, generation.message.id)

    assert refused.value.code == "message_finished"
    assert final.status is Status.COMPLETED
    assert final.usage == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert (await harness.stored(generation.message.id)).status is Status.COMPLETED


async def test_cancel_twice_at_once_one_wins_and_one_conflicts(harness: Harness) -> None:
    generation, _ = await harness.post_paused(["x"], ["y"])
    mid = generation.message.id

    results = await asyncio.gather(
        harness.service.cancel(TENANT, mid),
        harness.service.cancel(TENANT, mid),
        return_exceptions=True,
    )

    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, Conflict)]
    assert len(winners) == len(losers) == 1, results
    assert winners[0].status is Status.CANCELLED and winners[0].content == "x"
    assert losers[0].code == "message_finished"
    with pytest.raises(Conflict, match="cancelled"):  # and again, later
        await harness.service.cancel(TENANT, mid)


async def test_last_watcher_leaving_cancels_with_cancel_on_disconnect(harness: Harness) -> None:
    generation, _ = await harness.post_paused(["a"], ["b"], cancel_on_disconnect=True)
    assert harness.registry.watch(generation.message.id) is generation
    generation.watcher_joined()
    generation.watcher_joined()

    generation.watcher_left(False)  # one tab closes
    await asyncio.sleep(0)
    assert generation.stop_reason is None and not generation.finished

    generation.watcher_left(False)  # the last one
    final = await harness.finished(generation)
    assert generation.stop_reason is StopReason.CLIENT_DISCONNECTED
    assert (final.status, final.content) == (Status.CANCELLED, "a")
    assert harness.upstream.streams[-1].closed.is_set()


async def test_watchers_leaving_stop_nothing_without_cancel_on_disconnect(
    harness: Harness,
) -> None:
    generation, gate = await harness.post_paused(["a"], ["b"])
    generation.watcher_joined()
    generation.watcher_joined()
    generation.watcher_left(False)
    generation.watcher_left(False)
    assert generation.stop_reason is None

    gate.open()
    final = await harness.finished(generation)
    assert (final.status, final.content) == (Status.COMPLETED, "ab")


async def test_a_watcher_that_saw_the_end_stops_nothing(harness: Harness) -> None:
    generation = await harness.post(script("a"), cancel_on_disconnect=True)
    generation.watcher_joined()
    final = await harness.finished(generation)
    generation.watcher_left(True)
    assert generation.stop_reason is None
    assert final.status is Status.COMPLETED


async def test_deleting_the_conversation_cancels_and_logs_why(
    harness: Harness, generation_log: pytest.LogCaptureFixture
) -> None:
    generation, _ = await harness.post_paused(["a"], ["b"])
    mid = generation.message.id

    await harness.service.delete_conversation(TENANT, generation.message.conversation_id)
    final = await harness.finished(generation)

    assert final.status is Status.CANCELLED
    assert f"generation {mid} ended cancelled (stopped: deleted)" in generation_log.text
    assert harness.registry.local(TENANT, mid) is None, "a deleted message is not served"
    assert harness.upstream.streams[-1].closed.is_set()


async def test_editing_an_earlier_turn_supersedes_and_logs_why(
    harness: Harness, generation_log: pytest.LogCaptureFixture
) -> None:
    generation, _ = await harness.post_paused(["old"], [" answer"], content="question")
    old = generation.message
    user = next(m for m in await harness.repo.list_messages(old.conversation_id) if m.seq == 1)

    edited = await harness.service.edit(
        TENANT, user.id, content="better question", options=TurnOptions()
    )
    final = await harness.finished(generation)

    assert generation.stop_reason is StopReason.SUPERSEDED
    assert (final.status, final.content) == (Status.CANCELLED, "old")
    assert f"generation {old.id} ended cancelled (stopped: superseded)" in generation_log.text
    replacement = harness.registry.local(TENANT, edited.assistant.id)
    assert replacement is not None
    assert (await harness.finished(replacement)).status is Status.COMPLETED


async def test_shutdown_interrupts_with_shutting_down(
    harness: Harness, generation_log: pytest.LogCaptureFixture
) -> None:
    generation, _ = await harness.post_paused(["half"], [" more"])

    await harness.engine.drain(0)

    final = generation.final
    assert final is not None
    assert (final.status, final.content) == (Status.INTERRUPTED, "half")
    assert final.error is not None and final.error["code"] == "shutting_down"
    assert "(stopped: shutting_down)" in generation_log.text
    stored = await harness.stored(generation.message.id)
    assert (stored.status, stored.content) == (Status.INTERRUPTED, "half")
    with pytest.raises(ShuttingDown):
        await harness.post(script("refused"))
