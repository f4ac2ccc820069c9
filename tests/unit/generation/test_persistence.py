"""Getting generations into the database: checkpoints, group-committed final writes,
retries until the final write lands, the spool at close, and expiry waiting for it."""

from __future__ import annotations

import asyncio

import pytest

from chatrelay.models import PieceKind, Status
from tests.fakes.chat_upstream import Gate, Piece, script
from tests.unit.generation.harness import TENANT, Harness, until


async def test_finals_of_one_loop_iteration_are_one_finalize(harness: Harness) -> None:
    gates = [Gate(str(i)) for i in range(3)]
    generations = [await harness.post(script(f"answer {g.name}", g)) for g in gates]
    await asyncio.gather(*(g.reached.wait() for g in gates))

    for gate in gates:  # all finish in the same loop iteration
        gate.open()
    finals = await asyncio.gather(*(harness.finished(g) for g in generations))

    ids = sorted(g.message.id for g in generations)
    assert [sorted(batch) for batch in harness.repo.finalize_batches] == [ids]
    for final in finals:
        stored = await harness.stored(final.id)
        assert stored.status is Status.COMPLETED
        assert stored.content == final.content and stored.usage == final.usage


async def test_finals_arriving_during_a_write_go_in_the_next_one(harness: Harness) -> None:
    harness.repo.hold_finalize = hold = asyncio.Event()
    first = await harness.post(script("first"))
    await harness.repo.finalize_entered.wait()  # its write is under way, held
    gates = [Gate(str(i)) for i in range(2)]
    later = [await harness.post(script(f"later {g.name}", g)) for g in gates]
    for gate in gates:
        await gate.reached.wait()
        gate.open()
    # `final` is set in the same step that queues the final write
    await until(lambda: all(g.final is not None for g in later), what="two finals queued")

    hold.set()
    await asyncio.gather(*(harness.finished(g) for g in [first, *later]))

    assert harness.repo.finalize_batches == [
        [first.message.id],
        [g.message.id for g in later],
    ]
    for generation in [first, *later]:
        assert (await harness.stored(generation.message.id)).status is Status.COMPLETED


async def test_checkpoints_save_partial_text_while_streaming(harness: Harness) -> None:
    generation, _ = await harness.post_paused(["one ", "two"], [" three"])
    mid = generation.message.id

    # `dirty` drops in the step that takes the database lock to write the checkpoint, so
    # the read below comes after that write.
    await until(lambda: not generation.dirty, what="a checkpoint")
    stored = await harness.stored(mid)
    assert stored.status is Status.STREAMING
    assert stored.content == "one two"
    assert stored.pieces == [(PieceKind.CONTENT, 4), (PieceKind.CONTENT, 3)]
    assert (await harness.service.get_message(TENANT, mid)).content == "one two"


async def test_final_write_is_retried_until_it_lands(harness: Harness) -> None:
    persistence = harness.engine.persistence
    generation, gate = await harness.post_paused(["kept", " whole"])
    mid = generation.message.id
    subscriber = asyncio.create_task(harness.events(mid))
    with harness.locked():
        gate.open()
        final = await harness.finished(generation)  # the end is published regardless
        events = await subscriber
        assert events[-1].is_terminal and events[-1].final == final
        assert persistence.is_pending(mid)
        assert persistence.storage_problem == "1 final write(s) waiting for the database"
        await until(lambda: harness.repo.calls["finalize"] >= 3, what="retries")
        assert (await harness.stored(mid)).status is Status.STREAMING, "the fault is real"

    await until(lambda: not persistence.is_pending(mid), what="the retry landing")
    stored = await harness.stored(mid)
    assert (stored.status, stored.content) == (Status.COMPLETED, "kept whole")
    assert stored.usage == final.usage and stored.finish_reason == "stop"
    assert persistence.storage_problem is None


async def test_final_write_still_failing_at_close_is_spooled_and_replayed(
    harness: Harness,
) -> None:
    generation, gate = await harness.post_paused(["spool", " me"])
    mid = generation.message.id
    with harness.locked():
        gate.open()
        await harness.finished(generation)
        assert harness.engine.persistence.is_pending(mid)
        await harness.stop(drain=False)
    assert (await harness.stored(mid)).status is Status.STREAMING
    assert list(harness.spool.directory.glob("final-*.jsonl")), "nothing was spooled"

    await harness.restart()

    stored = await harness.stored(mid)
    assert (stored.status, stored.content, stored.error) == (Status.COMPLETED, "spool me", None)
    assert harness.repo.finalize_batches[-1] == [mid], "the spool replay wrote it"
    assert not list(harness.spool.directory.glob("final-*.jsonl")), "a replayed file is removed"


@pytest.mark.parametrize("intervals", [{"finished_log_ttl": 0.05}], indirect=True)
async def test_expiry_waits_for_the_final_write(harness: Harness) -> None:
    registry, persistence = harness.registry, harness.engine.persistence
    generation, gate = await harness.post_paused(["late"])
    mid = generation.message.id
    with harness.locked():
        gate.open()
        await harness.finished(generation)
        await asyncio.sleep(0.05 * 4)  # well past the TTL: a timer, no event to wait for
        assert persistence.is_pending(mid)
        assert registry.local(TENANT, mid) is generation, "memory holds the only copy"
        assert await harness.engine.broker.find(mid) is not None

    await until(lambda: not persistence.is_pending(mid), what="the retry landing")
    await until(lambda: registry.local(TENANT, mid) is None, within=2, what="expiry")
    assert await harness.engine.broker.find(mid) is None
    assert (await harness.stored(mid)).status is Status.COMPLETED


async def test_streamed_pieces_record_each_length_and_share_the_common_ones(
    harness: Harness,
) -> None:
    """Every piece's kind and length is recorded exactly; the `(kind, length)` of a short
    piece is one shared tuple (memory per token held), a long one its own."""
    long = "x" * 300
    first = await harness.post(script("ab", Piece(reasoning="think"), long, "cd"))
    second = await harness.post(script("ef", Piece(reasoning="again")))
    one, two = await harness.finished(first), await harness.finished(second)
    expected = [
        (PieceKind.CONTENT, 2),
        (PieceKind.REASONING, 5),
        (PieceKind.CONTENT, 300),
        (PieceKind.CONTENT, 2),
    ]
    assert one.pieces == expected and one.content == "ab" + long + "cd"
    assert two.pieces == [(PieceKind.CONTENT, 2), (PieceKind.REASONING, 5)]
    live_one, live_two = first.final, second.final
    assert live_one is not None and live_two is not None
    assert live_one.pieces[0] is live_two.pieces[0] is live_one.pieces[3]
    assert live_one.pieces[1] is live_two.pieces[1]
