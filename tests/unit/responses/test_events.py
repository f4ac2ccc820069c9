"""`ResponseRenderer` is a function of the event log: the live log and its rebuild from
the stored message give the same numbered events, whatever way the message ended."""

from __future__ import annotations

from typing import Any

import pytest

from chatrelay.broker.event import EventKind
from chatrelay.broker.memory import MemoryTopic
from chatrelay.generation.replay import as_started, events_from_message, terminal_kind
from chatrelay.models import Message, PieceKind, Status, ToolCallHead
from chatrelay.responses.events import ResponseRenderer, StreamEvent
from chatrelay.responses.objects import SETTINGS_KEY
from tests.fakes.messages import streaming_reply

C, T, A = PieceKind.CONTENT, PieceKind.TOOL_CALL, PieceKind.TOOL_ARGUMENTS
CALLS = [
    {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
]


def _message(**changes: Any) -> Message:
    params = {SETTINGS_KEY: {"instructions": "be brief", "metadata": {"k": "v"}}}
    return streaming_reply(**{"params": params, **changes})


def _final(status: Status, **changes: Any) -> Message:
    return _message(
        content="Hi there",
        tool_calls=CALLS,
        pieces=[(C, 2), (C, 6), (T, 0), (A, 4), (A, 4)],
        status=status,
        finish_reason="tool_calls" if status is Status.COMPLETED else None,
        error={"code": "upstream_truncated", "message": "cut"} if status is Status.FAILED else None,
        completed_at="2026-01-01T00:00:02.000Z",
        **changes,
    )


def _live(final: Message) -> MemoryTopic:
    topic = MemoryTopic(final.id)
    topic.publish(EventKind.START, message=as_started(final))
    topic.publish(EventKind.DELTA, text="Hi")
    topic.publish(EventKind.DELTA, text=" there")
    topic.publish(EventKind.TOOL_CALL, index=0, call=ToolCallHead("call_1", "function", "f"))
    topic.publish(EventKind.TOOL_CALL, index=0, text='{"a"')
    topic.publish(EventKind.TOOL_CALL, index=0, text=": 1}")
    topic.publish(terminal_kind(final), message=final)
    return topic


def _render(final: Message, events: Any) -> list[StreamEvent]:
    renderer = ResponseRenderer(final)
    return [out for event in events for out in renderer.render(event)]


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.CANCELLED, Status.FAILED])
def test_live_and_stored_logs_render_alike(status: Status) -> None:
    final = _final(status)
    live = _render(final, _live(final).events)
    assert live == _render(final, events_from_message(final))
    assert [e["sequence_number"] for e in live] == list(range(len(live)))
    end = live[-1]
    expected = {
        Status.COMPLETED: ("response.completed", "completed"),
        Status.CANCELLED: ("response.incomplete", "cancelled"),
        Status.FAILED: ("response.failed", "failed"),
    }[status]
    assert (end["type"], end["response"]["status"]) == expected
    output = end["response"]["output"]
    assert [item["type"] for item in output] == ["message", "function_call"]
    assert output[0]["content"][0]["text"] == "Hi there"
    assert output[1]["arguments"] == '{"a": 1}' and output[1]["call_id"] == "call_1"


def test_a_recovered_response_fails_with_its_text() -> None:
    recovered = _message(
        content="Hi",
        pieces=[(C, 2)],
        status=Status.INTERRUPTED,
        error={"code": "interrupted", "message": "the service stopped"},
    )
    rendered = _render(recovered, events_from_message(recovered))
    assert [e["type"] for e in rendered][-2:] == ["error", "response.failed"]
    failed = rendered[-1]["response"]
    assert failed["error"]["code"] == "server_error"
    assert failed["output"][0]["status"] == "incomplete"
    assert failed["instructions"] == "be brief" and failed["metadata"] == {"k": "v"}


def test_length_is_an_incomplete_response() -> None:
    cut = _message(content="Hi", pieces=[(C, 2)], status=Status.COMPLETED, finish_reason="length")
    end = _render(cut, events_from_message(cut))[-1]
    assert end["type"] == "response.incomplete"
    assert end["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
