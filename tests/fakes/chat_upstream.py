"""A scripted, in-process fake of the `ChatUpstream` seam (`generation.runner`).

`ScriptedUpstream.stream_chat(body)` records the body and returns a `ScriptedStream` that
plays the next `Script`. A script is a list of steps: text pieces (`str` for content,
`Piece` for reasoning or both), raw `Delta`s (tool calls), `Gate`s where the stream stops
until the test opens them, an `UpstreamError` instance to raise there, and `Finish` (the
chunk carrying `finish_reason`). Every piece is turned into an OpenAI chunk and fed through a real
`ChunkAssembler`, so the deltas, `finish_reason`, `usage` and truncation are judged as with
the real client; the stream yields the `ChunkDelta`s the assembler returns.

Timing is the test's: a `Gate` says when the stream got there (`reached`) and waits for
`open()`; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from chatrelay.errors import UpstreamError
from chatrelay.sse.event import SSEEvent
from chatrelay.upstream.assembler import ChunkAssembler, ChunkDelta

DEFAULT_USAGE = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


@dataclass(frozen=True)
class Piece:
    """One chunk's text: content, reasoning, or both."""

    content: str = ""
    reasoning: str = ""


@dataclass(frozen=True)
class Delta:
    """A chunk's `delta` object as given (tool-call deltas, say)."""

    delta: dict[str, Any]


@dataclass(frozen=True)
class Finish:
    """The chunk that says the answer is complete."""

    reason: str = "stop"


class Gate:
    """A point where the stream waits until the test opens it."""

    def __init__(self, name: str = "gate") -> None:
        self.name = name
        self.reached = asyncio.Event()  # set when the stream arrives here
        self._open = asyncio.Event()

    def open(self) -> None:
        self._open.set()

    async def pass_through(self) -> None:
        self.reached.set()
        await self._open.wait()

    def __repr__(self) -> str:
        return f"Gate({self.name!r}, reached={self.reached.is_set()})"


Step = str | Piece | Delta | Gate | Finish | UpstreamError


@dataclass
class Script:
    """What one `stream_chat` call answers.

    Without a `Finish` step (and without an error) one is added at the end. After the
    steps come the usage chunk (when `usage` is not None) and `[DONE]` — unless
    `truncate`, which ends the byte stream there, so the assembler judges it truncated.
    """

    steps: list[Step] = field(default_factory=lambda: ["Hello", ", ", "world"])
    usage: dict[str, int] | None = field(default_factory=lambda: dict(DEFAULT_USAGE))
    truncate: bool = False
    model: str = "fake-model"

    @property
    def content(self) -> str:
        """The content text the script streams (what a complete answer holds)."""
        return "".join(
            s if isinstance(s, str) else s.content for s in self.steps if isinstance(s, str | Piece)
        )


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> SSEEvent:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return SSEEvent(json.dumps({"id": "chatcmpl-fake", "model": model, "choices": [choice]}))


class ScriptedStream:
    """One scripted completion; `closed` is set once the consumer stopped reading it."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.assembler: ChunkAssembler | None = ChunkAssembler()
        self.closed = asyncio.Event()
        self.completed = False  # the script played to its end
        self.sent_early = False  # `send_early` was called (a gated launch)
        self.played = False  # iterated
        self.discarded = False  # `discard_early` came before it was played

    def send_early(self) -> None:
        self.sent_early = True

    def discard_early(self) -> None:
        if self.sent_early and not self.played:
            self.discarded = True

    def __aiter__(self) -> AsyncGenerator[ChunkDelta, None]:
        self.played = True
        return self._play()

    def _feed(self, event: SSEEvent) -> ChunkDelta | None:
        assert self.assembler is not None
        return self.assembler.feed(event)

    async def _play(self) -> AsyncGenerator[ChunkDelta, None]:
        script = self.script
        steps: list[Step] = list(script.steps)
        if not script.truncate and not any(isinstance(s, Finish | UpstreamError) for s in steps):
            steps.append(Finish())
        try:
            for step in steps:
                event: SSEEvent | None = None
                if isinstance(step, Gate):
                    await step.pass_through()
                elif isinstance(step, UpstreamError):
                    raise step
                elif isinstance(step, Finish):
                    event = _chunk(script.model, {}, step.reason)
                elif isinstance(step, Delta):
                    event = _chunk(script.model, step.delta)
                else:
                    piece = Piece(content=step) if isinstance(step, str) else step
                    delta: dict[str, Any] = {}
                    if piece.content:
                        delta["content"] = piece.content
                    if piece.reasoning:
                        delta["reasoning_content"] = piece.reasoning
                    event = _chunk(script.model, delta)
                if event is not None and (delta_out := self._feed(event)) is not None:
                    yield delta_out
            if script.truncate:
                assert self.assembler is not None
                self.assembler.finish()  # raises UpstreamTruncated
            if script.usage is not None:
                usage_chunk = {"id": "chatcmpl-fake", "choices": [], "usage": script.usage}
                if (delta_out := self._feed(SSEEvent(json.dumps(usage_chunk)))) is not None:
                    yield delta_out
            self._feed(SSEEvent("[DONE]"))
            self.completed = True
        finally:
            self.closed.set()


class ScriptedUpstream:
    """Answers each `stream_chat` with the next queued script (or `default`)."""

    def __init__(self, default: Script | None = None) -> None:
        self.default = default if default is not None else Script()
        self.bodies: list[dict[str, Any]] = []
        self.streams: list[ScriptedStream] = []
        self._queue: deque[Script] = deque()

    def enqueue(self, *scripts: Script) -> None:
        self._queue.extend(scripts)

    def stream_chat(self, body: dict[str, Any]) -> ScriptedStream:
        self.bodies.append(body)
        stream = ScriptedStream(self._queue.popleft() if self._queue else self.default)
        self.streams.append(stream)
        return stream


def script(*steps: Step, **options: Any) -> Script:
    """`Script` from steps given inline: `script("a", gate, "b", usage=None)`."""
    return Script(steps=list(steps), **options)
