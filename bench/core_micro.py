"""Micro-benchmarks of the core's per-event work, each alone: what one event costs where.

- the chunk assembler (`ChunkAssembler.feed`) on parsed OpenAI chunks;
- the in-process broker: publishing to a topic while one reader takes batches;
- the native edge's frame encoding (`web.sse.encode_frame`), once per event;
- the OpenAI-compatible renderer (`completions.render.event_frames`).

Run: `.venv/bin/python bench/core_micro.py` (a few seconds). Figures are per event, best of
5, on whatever core it lands on: compare them with each other and across commits on one
machine, not with the harness's end-to-end numbers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.broker.memory import MemoryTopic
from chatrelay.completions.render import CompletionRenderer, event_frames
from chatrelay.models import Message, Status
from chatrelay.sse.event import SSEEvent
from chatrelay.upstream.assembler import ChunkAssembler
from chatrelay.web.sse import encode_frame

EVENTS = 20_000
REPEATS = 5
MESSAGE = Message(
    id="msg_01M8A35AS3EA7THF9MWVAC7EA8",
    conversation_id="conv_01M8A35AMZ5AJ70R01TJZXV6PJ",
    tenant="bench",
    seq=2,
    role="assistant",
    content="",
    status=Status.STREAMING,
    model="gpt-4o-mini",
    created_at="2026-12-02T00:00:00.000Z",
)


def _chunks() -> list[SSEEvent]:
    return [
        SSEEvent(
            '{"id":"chatcmpl-x","object":"chat.completion.chunk","created":1,'
            f'"model":"gpt-4o-mini","choices":[{{"index":0,"delta":{{"content":"tok{i} "}},'
            '"finish_reason":null}],"usage":null}'
        )
        for i in range(EVENTS)
    ]


def assembler(chunks: list[SSEEvent]) -> None:
    feed = ChunkAssembler().feed
    for chunk in chunks:
        feed(chunk)


def broker(_: list[SSEEvent]) -> None:
    async def run() -> None:
        topic = MemoryTopic("m")
        topic.publish(EventKind.START, message=MESSAGE)

        async def read() -> int:
            seen = 0
            async for batch in topic.read_batches(None):
                seen += len(batch)
            return seen

        reader = asyncio.ensure_future(read())
        for i in range(EVENTS):
            topic.publish(EventKind.DELTA, text=f"tok{i} ")
            if i % 8 == 0:
                await asyncio.sleep(0)  # let the reader take a batch, as a live one would
        topic.publish(EventKind.DONE, message=MESSAGE.evolve(status=Status.COMPLETED))
        assert await reader == EVENTS + 2

    asyncio.run(run())


def _events() -> list[LogEvent]:
    return [LogEvent(i + 2, EventKind.DELTA, text=f"tok{i} ") for i in range(EVENTS)]


def native_frames(_: list[SSEEvent]) -> None:
    for event in _events():
        encode_frame(event)


def openai_frames(_: list[SSEEvent]) -> None:
    renderer = CompletionRenderer(MESSAGE, include_usage=True)
    for event in _events():
        event_frames(renderer, event, lambda error: {"error": error})


def best(run: Callable[[list[SSEEvent]], None], chunks: list[SSEEvent]) -> float:
    fastest = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        run(chunks)
        fastest = min(fastest, time.perf_counter() - started)
    return fastest


def main() -> None:
    chunks = _chunks()
    cases = {
        "ChunkAssembler.feed": assembler,
        "MemoryTopic publish + read": broker,
        "native frame encode": native_frames,
        "OpenAI chunk render": openai_frames,
    }
    print(f"{EVENTS} events, best of {REPEATS}\n")
    header = f"{'step':<28} {'events/s':>11} {'us/event':>9}"
    print(header)
    print("-" * len(header))
    for name, run in cases.items():
        seconds = best(run, chunks)
        print(f"{name:<28} {EVENTS / seconds:>11,.0f} {seconds / EVENTS * 1e6:>9.2f}")


if __name__ == "__main__":
    main()
