"""What the core reports through `observe.Observer`: once per generation (never per event),
with the request that started it, its time to first token and its tokens; database
failures and the writes that land."""

from __future__ import annotations

import time
from collections import Counter

from chatrelay import request_context
from chatrelay.generation.engine import Engine
from chatrelay.models import Status
from chatrelay.observe import GenerationOutcome, Observer, StorageOperation
from chatrelay.request_context import RequestInfo
from chatrelay.service import ChatService, TurnOptions
from tests.fakes.chat_upstream import Gate, Script
from tests.unit.generation.harness import TENANT, Harness, until


class Recorder(Observer):
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.outcomes: list[GenerationOutcome] = []

    def generation_started(self) -> None:
        self.calls["started"] += 1

    def generation_finished(self, outcome: GenerationOutcome) -> None:
        self.calls["finished"] += 1
        self.outcomes.append(outcome)

    def checkpoint_written(self, seconds: float) -> None:
        self.calls["checkpoint"] += 1

    def final_write(self, seconds: float) -> None:
        self.calls["final_write"] += 1

    def storage_error(self, operation: StorageOperation) -> None:
        self.calls[f"error {operation}"] += 1


async def _engine(harness: Harness, recorder: Recorder) -> tuple[Engine, ChatService]:
    engine = await Engine.start(
        harness.repo, harness.upstream, spool=harness.spool, observer=recorder, **harness.intervals
    )
    harness.others.append(engine)
    return engine, ChatService(harness.repo, engine.registry, "default-model")


async def test_one_outcome_per_generation_however_many_events(harness: Harness) -> None:
    recorder = Recorder()
    engine, service = await _engine(harness, recorder)
    harness.upstream.enqueue(Script(steps=[f"{i} " for i in range(300)]))
    info = RequestInfo("req-under-test", time.monotonic())
    token = request_context.begin(info)
    try:
        conversation = await service.create_conversation(TENANT)
        posted = await service.post_message(
            TENANT, conversation.id, content="hi", options=TurnOptions()
        )
    finally:
        request_context.end(token)
    generation = engine.registry.local(TENANT, posted.assistant.id)
    assert generation is not None and generation.task is not None
    await generation.task

    assert (recorder.calls["started"], recorder.calls["finished"]) == (1, 1)
    (outcome,) = recorder.outcomes
    assert outcome.status is Status.COMPLETED and outcome.error_code is None
    assert outcome.request_id == "req-under-test"  # captured when the request launched it
    assert outcome.events == 300
    assert outcome.ttft is not None and 0 <= outcome.ttft <= outcome.duration
    assert (outcome.prompt_tokens, outcome.completion_tokens) == (3, 5)
    assert info.first_token_at is not None  # reported back to the request's log line
    assert recorder.calls["final_write"] == 1


async def test_outside_a_request_there_is_no_request_id_and_no_ttft_without_output(
    harness: Harness,
) -> None:
    recorder = Recorder()
    engine, service = await _engine(harness, recorder)
    harness.upstream.enqueue(Script(steps=[], usage=None))
    conversation = await service.create_conversation(TENANT)
    posted = await service.post_message(
        TENANT, conversation.id, content="hi", options=TurnOptions()
    )
    generation = engine.registry.local(TENANT, posted.assistant.id)
    assert generation is not None and generation.task is not None
    await generation.task
    (outcome,) = recorder.outcomes
    assert outcome.request_id is None and outcome.ttft is None and outcome.events == 0
    assert outcome.prompt_tokens is None and outcome.completion_tokens is None


async def test_a_failed_final_write_is_an_error_then_a_landed_write(harness: Harness) -> None:
    recorder = Recorder()
    _, service = await _engine(harness, recorder)
    gate = Gate("before the end")
    harness.upstream.enqueue(Script(steps=["partial", gate]))
    conversation = await service.create_conversation(TENANT)
    posted = await service.post_message(
        TENANT, conversation.id, content="hi", options=TurnOptions()
    )
    await gate.reached.wait()
    with harness.locked():
        gate.open()
        await until(lambda: recorder.calls["error final_write"] >= 1, what="a failed final write")
        assert recorder.calls["final_write"] == 0
    await until(lambda: recorder.calls["final_write"] >= 1, what="the final write landing")
    stored = await harness.stored(posted.assistant.id)
    assert stored.status is Status.COMPLETED
    assert recorder.calls["finished"] == 1
