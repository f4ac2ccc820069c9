"""A message's events as OpenAI stream frames: the exact bytes, batching, pings, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.completions.render import CompletionEvents, CompletionRenderer, chunk_frames
from chatrelay.models import ErrorPayload, Status
from tests.fakes.messages import streaming_reply

ASSISTANT = streaming_reply(
    id="msg_01ABC",
    conversation_id="conv_1",
    tenant="acme",
    model="model-ü",
    created_at="2026-12-02T00:50:30.123Z",
)
HEAD = (
    '{"id":"chatcmpl-01ABC","object":"chat.completion.chunk","created":1796172630,'
    '"model":"model-ü",'
)


def _start() -> LogEvent:
    return LogEvent(1, EventKind.START, message=ASSISTANT)


def _piece(seq: int, text: str, kind: EventKind = EventKind.DELTA) -> LogEvent:
    return LogEvent(seq, kind, text=text)


def _done(seq: int, **final: Any) -> LogEvent:
    return LogEvent(seq, EventKind.DONE, message=ASSISTANT.evolve(status=Status.COMPLETED, **final))


def _error(seq: int, code: str) -> LogEvent:
    failed = ASSISTANT.evolve(status=Status.FAILED, error={"code": code, "message": "m"})
    return LogEvent(seq, EventKind.ERROR, message=failed)


async def _batches(*batches: list[LogEvent]) -> AsyncIterator[list[LogEvent]]:
    for batch in batches:
        yield batch


def _stream_error(error: ErrorPayload) -> dict[str, Any]:
    return {"error": {"code": error["code"]}}


async def _frames(include_usage: bool, *batches: list[LogEvent]) -> list[bytes]:
    renderer = CompletionRenderer(ASSISTANT, include_usage=include_usage)
    events = CompletionEvents(_batches(*batches))
    assert await events.open() is not None
    return [frame async for frame in chunk_frames(renderer, events, _stream_error)]


async def test_one_batch_is_one_write_with_usage_on_every_chunk() -> None:
    batch = [_start(), _piece(2, "a")]
    frames = await _frames(True, batch, [_done(3, content="a", finish_reason="length")])
    choice = '"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    assert frames == [
        (
            f'data: {HEAD}"choices":[{{"index":0,"delta":{{"role":"assistant","content":"",'
            f'"refusal":null}},{choice}'
            f'data: {HEAD}"choices":[{{"index":0,"delta":{{"content":"a"}},{choice}'
        ).encode(),
        (
            f'data: {HEAD}"choices":[{{"index":0,"delta":{{}},"logprobs":null,'
            '"finish_reason":"length"}],"usage":null}\n\n'
            f'data: {HEAD}"choices":[],"usage":null}}\n\n'
            "data: [DONE]\n\n"
        ).encode(),
    ]


async def test_a_quiet_batch_is_a_ping_and_an_error_ends_the_stream() -> None:
    frames = await _frames(
        False,
        [_start()],
        [_piece(2, "r\nx", EventKind.REASONING)],
        [],
        [_error(3, "upstream_timeout_idle")],
        [_piece(4, "never read")],
    )
    assert frames[0].endswith(
        f'data: {HEAD}"choices":[{{"index":0,"delta":{{"reasoning_content":"r\\nx"}},'
        '"logprobs":null,"finish_reason":null}]}\n\n'.encode()
    )
    assert frames[1:] == [
        b": ping\n\n",
        b'data: {"error":{"code":"upstream_timeout_idle"}}\n\n',
    ]


async def test_terminal_reads_through_to_the_last_event() -> None:
    done = _done(4, content="ab")
    events = CompletionEvents(_batches([_start()], [_piece(2, "a")], [], [_piece(3, "b"), done]))
    first = await events.open()
    assert first is not None and first.kind == "delta"
    assert await events.terminal() == done


async def test_a_log_without_a_terminal_event_has_none() -> None:
    events = CompletionEvents(_batches([_start()], [_piece(2, "")]))
    assert await events.open() is not None
    assert await events.terminal() is None
    assert await CompletionEvents(_batches([_start()])).open() is None


def test_finish_reason_defaults_and_a_completion_without_text_has_null_content() -> None:
    renderer = CompletionRenderer(ASSISTANT, include_usage=False)
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    built = renderer.completion(ASSISTANT.evolve(status=Status.COMPLETED, tool_calls=calls))
    [choice] = built["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": calls,
    }
