"""The scripted `stream_chat` fake judges its chunks with the real `ChunkAssembler`."""

from __future__ import annotations

import asyncio

import pytest

from chatrelay.errors import UpstreamError, UpstreamTruncated
from chatrelay.upstream.assembler import ChunkDelta
from tests.fakes.chat_upstream import DEFAULT_USAGE, Finish, Gate, Piece, ScriptedUpstream, script


async def _drain(upstream: ScriptedUpstream, body: dict[str, object]) -> list[ChunkDelta]:
    return [delta async for delta in upstream.stream_chat(body)]


async def test_pieces_finish_and_usage_go_through_the_assembler() -> None:
    upstream = ScriptedUpstream()
    upstream.enqueue(script("a", Piece(reasoning="r", content="b"), Finish("length")))
    deltas = await _drain(upstream, {"model": "m"})
    stream = upstream.streams[0]
    assert upstream.bodies == [{"model": "m"}]
    assert [(d.content, d.reasoning) for d in deltas[:2]] == [("a", ""), ("b", "r")]
    assert stream.assembler is not None
    assert stream.assembler.content == "ab" and stream.assembler.reasoning == "r"
    assert stream.assembler.finish_reason == "length"
    assert stream.assembler.usage == DEFAULT_USAGE and stream.assembler.done
    assert stream.completed and stream.closed.is_set()


async def test_an_error_step_raises_there_and_truncation_is_judged() -> None:
    upstream = ScriptedUpstream()
    upstream.enqueue(script("a", UpstreamError("boom")), script("a", truncate=True))
    with pytest.raises(UpstreamError, match="boom"):
        await _drain(upstream, {})
    with pytest.raises(UpstreamTruncated):
        await _drain(upstream, {})
    assert all(s.closed.is_set() and not s.completed for s in upstream.streams)


async def test_a_gate_holds_the_stream_until_opened() -> None:
    upstream = ScriptedUpstream()
    gate = Gate()
    upstream.enqueue(script("a", gate, "b"))
    reading = asyncio.create_task(_drain(upstream, {}))
    await gate.reached.wait()
    assert not reading.done()
    gate.open()
    assert "".join(d.content for d in await reading) == "ab"
