"""Tool calls stream as `tool_call` events, and replay from storage exactly as they went
out: from the final message, and from a checkpoint taken while a call was half-sent."""

from __future__ import annotations

from typing import Any

from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.broker.memory import MemoryTopic
from chatrelay.generation.replay import events_from_message
from chatrelay.models import PieceKind, Status, ToolCallHead
from tests.fakes.chat_upstream import Delta, Finish, Gate, script
from tests.unit.generation.harness import Harness, until


def _call(index: int, *, id: str | None = None, name: str = "", arguments: str = "") -> Delta:
    item: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if id is not None:
        item.update(id=id, type="function")
        item["function"]["name"] = name
    return Delta({"tool_calls": [item]})


def _live(topic: object) -> list[LogEvent]:
    assert isinstance(topic, MemoryTopic)
    return topic.events


async def test_tool_call_events_as_the_assembler_sees_them(harness: Harness) -> None:
    generation = await harness.post(
        script(
            "Let me check.",
            _call(0, id="call_a", name="get_weather", arguments=""),
            _call(0, arguments='{"city":'),
            _call(1, id="call_b", name="get_time", arguments='{"tz"'),
            _call(0, arguments=' "Oslo"}'),  # back to the first call
            _call(1, arguments=': "UTC"}'),
            Finish("tool_calls"),
        )
    )
    final = await harness.finished(generation)
    live = _live(generation.topic)
    tool_events = [(e.index, e.call, e.text) for e in live if e.kind is EventKind.TOOL_CALL]
    assert tool_events == [
        (0, ToolCallHead("call_a", "function", "get_weather"), ""),
        (0, None, '{"city":'),
        (1, ToolCallHead("call_b", "function", "get_time"), ""),
        (1, None, '{"tz"'),
        (0, None, ' "Oslo"}'),
        (1, None, ': "UTC"}'),
    ]
    assert final.tool_calls == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        },
        {
            "id": "call_b",
            "type": "function",
            "function": {"name": "get_time", "arguments": '{"tz": "UTC"}'},
        },
    ]
    stored = await harness.stored(final.id)
    assert stored.status is Status.COMPLETED
    assert events_from_message(stored) == live, "replay gives the same ids and data"
    replayed = await harness.events(final.id, cursor=3)
    assert replayed == live[3:]


async def test_a_checkpoint_mid_call_replays_what_was_published(harness: Harness) -> None:
    gate = Gate("mid-call")
    generation = await harness.post(
        script(
            _call(0, id="call_a", name="lookup", arguments='{"q": "'),
            _call(0, arguments="chat"),
            gate,
            _call(0, arguments='relay"}'),
        )
    )
    await gate.reached.wait()
    await until(lambda: not generation.dirty, what="a checkpoint")
    checkpoint = await harness.stored(generation.message.id)
    assert checkpoint.status is Status.STREAMING
    assert checkpoint.pieces == [
        (PieceKind.TOOL_CALL, 0),
        (PieceKind.TOOL_ARGUMENTS, 7),
        (PieceKind.TOOL_ARGUMENTS, 4),
    ]
    so_far = _live(generation.topic)
    assert events_from_message(checkpoint) == so_far

    gate.open()
    final = await harness.finished(generation)
    assert final.tool_calls is not None
    assert final.tool_calls[0]["function"]["arguments"] == '{"q": "chatrelay"}'
    assert events_from_message(await harness.stored(final.id)) == _live(generation.topic)
