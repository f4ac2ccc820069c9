"""A generation launched `gated`, before its message is recorded: the request goes out at
once, and nothing is published, written or reported until the caller says `recorded()`;
`abandon()` (the record failed) ends it leaving nothing (runner.py, `Generation`)."""

from __future__ import annotations

import asyncio

from chatrelay.broker.event import EventKind
from chatrelay.clock import now_iso
from chatrelay.completions.recording import streaming_assistant
from chatrelay.errors import UpstreamError
from chatrelay.generation.runner import Generation
from chatrelay.models import Conversation, Message, Status
from tests.fakes.chat_upstream import Gate, Script, ScriptedStream
from tests.unit.generation.harness import TENANT, Harness


def _new_turn(harness: Harness) -> tuple[Conversation, list[Message]]:
    now = now_iso()
    return harness.repo.new_conversation(
        tenant=TENANT,
        title=None,
        system_prompt=None,
        model="m",
        metadata={},
        messages=[streaming_assistant(TENANT, "", "m", now, {})],
    )


def _launch(
    harness: Harness, message: Message, script: Script
) -> tuple[Generation, ScriptedStream]:
    harness.upstream.enqueue(script)
    generation = harness.registry.launch(message, {"model": "m", "messages": []}, gated=True)
    return generation, harness.upstream.streams[-1]


async def test_the_request_goes_out_first_and_nothing_is_published_until_recorded(
    harness: Harness,
) -> None:
    conversation, stored = _new_turn(harness)
    generation, stream = _launch(harness, stored[-1], Script(steps=["a ", "b "]))
    assert stream.sent_early, "sent at launch, before the record"
    await asyncio.sleep(0.05)  # the upstream has answered whole meanwhile
    assert stream.played
    assert generation.topic.last_seq == 0, "no `start` and no delta before the record"
    assert harness.repo.calls["finalize"] == 0 and not generation.finished

    await harness.repo.insert_conversation(conversation, stored)
    generation.recorded()
    final = await harness.finished(generation)
    kinds = [e.kind for e in await harness.events(stored[-1].id)]
    assert kinds == [EventKind.START, EventKind.DELTA, EventKind.DELTA, EventKind.DONE]
    assert final.status is Status.COMPLETED
    assert (await harness.stored(stored[-1].id)).content == "a b "


async def test_an_upstream_failure_before_the_record_is_written_after_it(harness: Harness) -> None:
    conversation, stored = _new_turn(harness)
    failure = UpstreamError("upstream refused", code="upstream_error")
    generation, _ = _launch(harness, stored[-1], Script(steps=[failure]))
    await asyncio.sleep(0.05)
    assert harness.repo.calls["finalize"] == 0, "the final write waits for the record"
    await harness.repo.insert_conversation(conversation, stored)
    generation.recorded()
    final = await harness.finished(generation)
    assert final.status is Status.FAILED
    row = await harness.stored(stored[-1].id)
    assert row.status is Status.FAILED and row.error is not None
    assert row.error["code"] == "upstream_error"


async def test_an_abandoned_generation_stops_its_upstream_and_leaves_nothing(
    harness: Harness,
) -> None:
    _, stored = _new_turn(harness)
    gate = Gate("upstream still answering")
    generation, stream = _launch(harness, stored[-1], Script(steps=[gate, "never "]))
    await gate.reached.wait()
    generation.abandon()  # the record failed
    assert generation.task is not None
    await asyncio.wait_for(generation.task, 5)
    assert stream.closed.is_set(), "the upstream read stopped"
    assert not stream.completed
    assert generation.topic.last_seq == 0, "nothing was published"
    assert harness.repo.calls["finalize"] == 0, "nothing was written"
    assert generation.final is None
    assert harness.registry.local(TENANT, stored[-1].id) is None, "and it is forgotten"
    assert harness.registry.running_count == 0
