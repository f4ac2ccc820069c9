"""One assistant message's event log rendered as OpenAI `chat.completion(.chunk)` objects.

`delta` → `delta.content`, `reasoning` → `delta.reasoning_content`, `tool_call` →
`delta.tool_calls[]` by index (the start with id, type and name, then argument pieces),
and from the final message of `done` the refusal, finish reason, usage and whatever of
the tool calls was not streamed (a message recorded before tool calls were streamed).
A stream is `data:` frames only, ended by `data: [DONE]`. What an `error` event looks
like to an OpenAI client is the edge's to say (`stream_error`); everything else here needs no HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.completions import chunks as build
from chatrelay.completions.chunks import ChatCompletion, ChatCompletionChunk
from chatrelay.models import ErrorPayload, Message
from chatrelay.sse.framing import PING_FRAME, data_frame

Batches = AsyncIterator[list[LogEvent]]
# A generation's recorded `error` as the in-stream payload an OpenAI client reads.
StreamError = Callable[[ErrorPayload], dict[str, Any]]


def completion_id(message_id: str) -> str:
    """`chatcmpl-…` from the assistant message's id: stable across the stream and replays."""
    return "chatcmpl-" + message_id.removeprefix("msg_")


def _epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def finish_reason(final: Message) -> str:
    """The upstream's finish reason; a stream that gave none (a cancel) ends as `stop`."""
    if final.finish_reason:
        return final.finish_reason
    return "tool_calls" if final.tool_calls else "stop"


def _indexed_calls(tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"index": i, **call} for i, call in enumerate(tool_calls)]


class CompletionRenderer:
    """Turns one assistant message's events into `chat.completion(.chunk)` objects."""

    def __init__(self, assistant: Message, *, include_usage: bool) -> None:
        self.id = completion_id(assistant.id)
        self.created = _epoch(assistant.created_at)
        self.model = assistant.model or ""
        self.include_usage = include_usage
        self._streamed_arguments: dict[int, int] = {}  # call index → argument chars sent

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> ChatCompletionChunk:
        return build.chunk(
            self.id,
            self.created,
            self.model,
            delta,
            finish,
            include_usage_field=self.include_usage,
        )

    def opening(self, first: LogEvent | None = None) -> ChatCompletionChunk:
        """The first chunk, naming the role, as OpenAI sends it: `content` is null when the
        answer begins with a tool call."""
        tool_first = first is not None and first.kind is EventKind.TOOL_CALL
        return self._chunk(
            {"role": "assistant", "content": None if tool_first else "", "refusal": None}
        )

    def chunks(self, event: LogEvent) -> list[ChatCompletionChunk]:
        """The chunks for one `start`/`delta`/`reasoning`/`tool_call`/`done` event (`error`
        is the edge's)."""
        if event.kind is EventKind.DELTA:
            return [self._chunk({"content": event.text})]
        if event.kind is EventKind.REASONING:
            return [self._chunk({"reasoning_content": event.text})]
        if event.kind is EventKind.TOOL_CALL:
            return [self._chunk({"tool_calls": [self._tool_call_delta(event)]})]
        if event.kind is EventKind.DONE:
            return self.closing(event.final)
        return []

    def _tool_call_delta(self, event: LogEvent) -> dict[str, Any]:
        """OpenAI's `tool_calls[]` delta: the first of a call with id, type and name."""
        call = event.call
        if call is None:
            sent = self._streamed_arguments.get(event.index, 0)
            self._streamed_arguments[event.index] = sent + len(event.text)
            return {"index": event.index, "function": {"arguments": event.text}}
        self._streamed_arguments[event.index] = 0
        return {
            "index": event.index,
            "id": call.id,
            "type": call.type,
            "function": {"name": call.name, "arguments": ""},
        }

    def _unstreamed_calls(self, tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What of the final tool calls the stream has not carried: whole calls never
        started, the tail of arguments never streamed."""
        out = []
        for index, call in enumerate(_indexed_calls(tool_calls)):
            sent = self._streamed_arguments.get(index)
            if sent is None:
                out.append(call)
                continue
            arguments = (call.get("function") or {}).get("arguments") or ""
            if len(arguments) > sent:
                out.append({"index": index, "function": {"arguments": arguments[sent:]}})
        return out

    def closing(self, final: Message) -> list[ChatCompletionChunk]:
        """Unstreamed tool calls, refusal, the finish chunk, then usage if asked."""
        out = []
        rest = self._unstreamed_calls(final.tool_calls) if final.tool_calls else []
        if rest:
            out.append(self._chunk({"tool_calls": rest}))
        if final.refusal:
            out.append(self._chunk({"refusal": final.refusal}))
        out.append(self._chunk({}, finish_reason(final)))
        if self.include_usage:
            out.append(build.usage_chunk(self.id, self.created, self.model, final.usage))
        return out

    def completion(self, final: Message) -> ChatCompletion:
        """The non-streaming `chat.completion` for a finished message."""
        tool_calls = final.tool_calls or None
        refusal = final.refusal or None
        content = final.content or ""
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if not content and (tool_calls or refusal) else content,
            "refusal": refusal,
        }
        if tool_calls:
            message["tool_calls"] = tool_calls
        if final.reasoning:
            message["reasoning_content"] = final.reasoning
        return build.completion(
            self.id,
            self.created,
            self.model,
            message,
            finish_reason(final),
            usage=final.usage,
        )


class CompletionEvents:
    """The message's event batches, read past `start` up to the first real event.

    Waiting for that event before answering lets an upstream that fails before any
    output get its own HTTP status rather than a 200 stream.
    """

    def __init__(self, batches: Batches) -> None:
        self._batches = batches
        self.first: LogEvent | None = None
        self._rest: list[LogEvent] = []

    async def open(self) -> LogEvent | None:
        async for batch in self._batches:
            real = [event for event in batch if event.kind is not EventKind.START]
            if real:
                self.first, self._rest = real[0], real[1:]
                return self.first
        return None

    async def after_first(self) -> Batches:
        """What follows the first event, in batches (an empty batch is a heartbeat)."""
        if self._rest:
            yield self._rest
        async for batch in self._batches:
            yield batch

    async def terminal(self) -> LogEvent | None:
        """The `done` or `error` event, read through whatever comes before it (after `open`)."""
        final = self.first
        if final is not None and not final.is_terminal:
            async for batch in self.after_first():
                if batch and batch[-1].is_terminal:
                    return batch[-1]
        return final if final is not None and final.is_terminal else None


def event_frames(
    renderer: CompletionRenderer, event: LogEvent, stream_error: StreamError
) -> tuple[str, bool]:
    """The `data:` frames for one event, and whether the stream ends with it."""
    if event.kind is EventKind.ERROR:
        return data_frame(stream_error(event.error)), True
    frames = "".join(data_frame(chunk) for chunk in renderer.chunks(event))
    if event.kind is EventKind.DONE:
        return frames + data_frame("[DONE]"), True
    return frames, False


async def chunk_frames(
    renderer: CompletionRenderer, events: CompletionEvents, stream_error: StreamError
) -> AsyncIterator[bytes]:
    """`data:` frames only: the role chunk, content, the closing chunks, `[DONE]`.

    A failure after output has begun is OpenAI's in-stream `{"error": …}`, then the end.
    Everything a batch holds goes out in one write.
    """
    assert events.first is not None
    head, ended = event_frames(renderer, events.first, stream_error)
    yield (data_frame(renderer.opening(events.first)) + head).encode()
    if ended:
        return
    async for batch in events.after_first():
        if not batch:
            yield PING_FRAME
            continue
        out: list[str] = []
        for event in batch:
            frames, ended = event_frames(renderer, event, stream_error)
            out.append(frames)
            if ended:
                break
        yield "".join(out).encode()
        if ended:
            return
