"""A burst of pieces (one upstream read bringing many) reaches subscribers first piece
first: the generation gives the loop a turn after each of its first pieces (runner.py,
EAGER_PIECES), and batches the rest."""

from __future__ import annotations

import asyncio

from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.generation.runner import EAGER_PIECES
from tests.fakes.chat_upstream import Gate, Script
from tests.unit.generation.harness import TENANT, Harness


async def test_the_first_pieces_of_a_burst_arrive_one_per_batch_then_batched(
    harness: Harness,
) -> None:
    gate = Gate("before the burst")
    tokens = [f"tok{i} " for i in range(EAGER_PIECES + 12)]
    generation = await harness.post(Script(steps=[gate, *tokens]))
    batches_of = await harness.engine.subscriptions.event_batches(
        TENANT, generation.message.id, None
    )
    assert batches_of is not None
    received: list[list[LogEvent]] = []

    async def subscriber() -> None:
        async for batch in batches_of:
            received.append(batch)

    reading = asyncio.create_task(subscriber())
    await gate.reached.wait()
    await asyncio.sleep(0.05)  # the subscriber has read `start` and waits
    gate.open()  # every token is ready at once, as from one read
    await reading
    await harness.finished(generation)

    deltas = [[e.text for e in batch if e.kind is EventKind.DELTA] for batch in received]
    deltas = [d for d in deltas if d]
    # Each of the first pieces was delivered before the next one was processed…
    assert deltas[:EAGER_PIECES] == [[t] for t in tokens[:EAGER_PIECES]]
    # …and the rest of the burst came batched, not one wake-up per token.
    assert len(deltas) < len(tokens)
    assert [t for d in deltas for t in d] == tokens
