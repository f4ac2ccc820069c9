"""What a start does before taking work: a message a dead process left `streaming`
becomes `interrupted`, keeping its last checkpoint, and replays with the recovered end."""

from __future__ import annotations

from chatrelay.generation.replay import RECOVERED_END_ID
from chatrelay.models import Status
from tests.fakes.chat_upstream import script
from tests.unit.generation.harness import TENANT, Harness, collect, until


async def test_a_message_left_streaming_is_recovered_interrupted_with_its_checkpoint(
    harness: Harness,
) -> None:
    generation, _ = await harness.post_paused(["saved ", "text"], [" never saved"])
    mid = generation.message.id
    await until(lambda: not generation.dirty, what="a checkpoint")
    assert (await harness.stored(mid)).status is Status.STREAMING

    # The next start on this database, as after a crash of the process that ran it (the
    # first engine is never told: it stands for the dead process).
    restarted = await harness.start_engine()

    stored = await harness.stored(mid)
    assert (stored.status, stored.content) == (Status.INTERRUPTED, "saved text")
    assert stored.error is not None and stored.error["code"] == "interrupted"
    events = await collect(await restarted.subscriptions.event_batches(TENANT, mid, None))
    assert [(e.kind, e.text) for e in events[:-1]] == [
        ("start", ""),
        ("delta", "saved "),
        ("delta", "text"),
    ]
    assert events[-1].seq == RECOVERED_END_ID and events[-1].error["code"] == "interrupted"


async def test_a_start_leaves_finished_messages_alone(harness: Harness) -> None:
    generation = await harness.post(script("fine"))
    await harness.finished(generation)

    await harness.restart()

    stored = await harness.stored(generation.message.id)
    assert (stored.status, stored.content) == (Status.COMPLETED, "fine")
