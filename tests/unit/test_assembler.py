"""Unit tests for `chatrelay.upstream.assembler.ChunkAssembler`, one behaviour per test.

Chunks are built as dicts and serialised, so each test states only the fields it is about;
the byte-level shapes of real providers are covered by tests/unit/test_upstream_corpus.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatrelay.errors import UpstreamError, UpstreamProtocolError, UpstreamTruncated
from chatrelay.sse.event import SSEEvent
from chatrelay.upstream.assembler import ChunkAssembler, ChunkDelta, ToolCall


def event(payload: Any, *, kind: str = "message") -> SSEEvent:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return SSEEvent(data=data, event=kind)


def chunk(
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    *,
    index: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """An OpenAI `chat.completion.chunk` with one choice."""
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [
            {"index": index, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
        ],
    }
    body.update(extra)
    return body


def feed_all(asm: ChunkAssembler, *payloads: Any) -> list[ChunkDelta | None]:
    return [asm.feed(event(p)) for p in payloads]


def tool_delta(index: int | None = None, **fields: Any) -> dict[str, Any]:
    """A `delta` carrying one tool-call fragment (`index=None` omits the key, as Gemini does)."""
    item: dict[str, Any] = {}
    if index is not None:
        item["index"] = index
    function = {k: fields.pop(k) for k in ("name", "arguments") if k in fields}
    item.update(fields)
    if function:
        item["function"] = function
    return {"tool_calls": [item]}


# -- content ------------------------------------------------------------------------------


def test_content_deltas_accumulate_and_each_delta_reports_its_own_piece() -> None:
    asm = ChunkAssembler()
    deltas = feed_all(asm, chunk({"content": "Hel"}), chunk({"content": "lo"}))
    assert [d.content for d in deltas if d] == ["Hel", "lo"]
    assert asm.content == "Hello"


def test_role_only_first_chunk_contributes_nothing_but_is_passed_through() -> None:
    asm = ChunkAssembler()
    first = chunk({"role": "assistant", "content": "", "refusal": None})
    delta = asm.feed(event(first))
    assert delta == ChunkDelta(chunk=first)
    assert asm.content == ""


@pytest.mark.parametrize("empty", [None, ""])
def test_null_and_empty_content_add_nothing(empty: str | None) -> None:
    asm = ChunkAssembler()
    feed_all(asm, chunk({"content": "a"}), chunk({"content": empty}), chunk({"content": "b"}))
    assert asm.content == "ab"


def test_finish_reason_may_arrive_with_content() -> None:
    asm = ChunkAssembler()
    delta = asm.feed(event(chunk({"content": "end."}, "stop")))
    assert delta is not None
    assert (delta.content, delta.finish_reason) == ("end.", "stop")
    assert (asm.content, asm.finish_reason) == ("end.", "stop")


def test_content_of_the_wrong_type_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match=r"delta\.content"):
        ChunkAssembler().feed(event(chunk({"content": ["not", "a", "string"]})))


# -- chunks without a choice --------------------------------------------------------------


def test_azure_prompt_filter_chunk_with_empty_choices_is_harmless() -> None:
    azure_first = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [
            {"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False}}}
        ],
    }
    asm = ChunkAssembler()
    delta = asm.feed(event(azure_first))
    assert delta == ChunkDelta(chunk=azure_first)
    asm.feed(event(chunk({"content": "hi"})))
    assert asm.content == "hi"
    # Azure's blank metadata must not shadow the real values of the next chunk.
    assert (asm.response_id, asm.model, asm.created) == ("chatcmpl-1", "gpt-4o-mini", 1700000000)


def test_azure_content_filter_chunk_without_delta_is_harmless() -> None:
    annotation = {
        "id": "",
        "choices": [{"index": 0, "finish_reason": None, "content_filter_offsets": {}}],
    }
    asm = ChunkAssembler()
    assert asm.feed(event(annotation)) == ChunkDelta(chunk=annotation)


@pytest.mark.parametrize("choices", [[], None, "absent"])
def test_usage_chunk_with_empty_null_or_missing_choices(choices: Any) -> None:
    final: dict[str, Any] = {"id": "x", "object": "chat.completion.chunk"}
    if choices != "absent":
        final["choices"] = choices
    final["usage"] = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    asm = ChunkAssembler()
    delta = asm.feed(event(final))
    assert delta is not None
    assert (
        delta.usage == asm.usage == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    )


def test_choices_that_is_not_a_list_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="choices"):
        ChunkAssembler().feed(event({"choices": {"index": 0}}))


# -- usage --------------------------------------------------------------------------------


def test_usage_in_final_chunk_only_with_null_usage_before() -> None:
    asm = ChunkAssembler()
    deltas = feed_all(
        asm,
        chunk({"content": "a"}, usage=None),
        chunk({}, "stop", usage=None),
        {
            "id": "x",
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        },
    )
    assert [d.usage for d in deltas if d] == [
        None,
        None,
        {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    ]
    assert asm.usage == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


def test_usage_in_every_chunk_last_non_null_wins() -> None:
    asm = ChunkAssembler()
    feed_all(
        asm,
        chunk(
            {"content": "a"}, usage={"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}
        ),
        chunk(
            {"content": "b"}, usage={"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
        ),
        chunk({}, "stop", usage=None),
    )
    assert asm.usage == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}


def test_usage_extra_keys_are_kept_and_missing_total_is_filled() -> None:
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 8},
        "cost": 0.0001,
    }
    asm = ChunkAssembler()
    asm.feed(event({"choices": [], "usage": usage}))
    assert asm.usage == {**usage, "total_tokens": 14}
    assert "total_tokens" not in usage  # the chunk as received is not modified


def test_groq_usage_in_x_groq_is_used_when_there_is_no_usage_field() -> None:
    groq_usage = {
        "queue_time": 0.01,
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "total_tokens": 15,
    }
    asm = ChunkAssembler()
    asm.feed(event(chunk({}, "stop", x_groq={"id": "req_1", "usage": groq_usage})))
    assert asm.usage == groq_usage


def test_usage_field_wins_over_x_groq() -> None:
    top = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    asm = ChunkAssembler()
    asm.feed(event(chunk({}, "stop", usage=top, x_groq={"usage": {"prompt_tokens": 99}})))
    assert asm.usage == top


# -- finish_reason ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reason", ["stop", "length", "content_filter", "tool_calls", "function_call"]
)
def test_finish_reason_values_are_reported(reason: str) -> None:
    asm = ChunkAssembler()
    delta = asm.feed(event(chunk({}, reason)))
    assert delta is not None
    assert delta.finish_reason == asm.finish_reason == reason
    asm.finish()  # a finish_reason alone is a completed stream


def test_later_null_finish_reason_does_not_reset_it() -> None:
    # OpenRouter repeats the choice with finish_reason null in its usage chunk.
    asm = ChunkAssembler()
    feed_all(
        asm,
        chunk({"content": "x"}, "stop"),
        chunk({"content": ""}, None, usage={"prompt_tokens": 1}),
    )
    assert asm.finish_reason == "stop"


def test_empty_string_finish_reason_means_none() -> None:
    asm = ChunkAssembler()
    delta = asm.feed(event(chunk({"content": "x"}, "")))
    assert delta is not None
    assert delta.finish_reason is None
    assert asm.finish_reason is None


# -- tool calls ---------------------------------------------------------------------------


def test_streamed_tool_call_is_assembled_by_index() -> None:
    asm = ChunkAssembler()
    deltas = feed_all(
        asm,
        chunk({"role": "assistant", "content": None}),
        chunk(tool_delta(0, id="call_abc", type="function", name="get_weather", arguments="")),
        chunk(tool_delta(0, arguments='{"ci')),
        chunk(tool_delta(0, arguments='ty":"Paris"}')),
        chunk({}, "tool_calls"),
    )
    assert [d.tool_calls for d in deltas if d] == [False, True, True, True, False]
    assert asm.tool_calls == [
        ToolCall(index=0, id="call_abc", name="get_weather", arguments='{"city":"Paris"}')
    ]
    assert asm.tool_calls[0].to_dict() == {
        "id": "call_abc",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }


def test_interleaved_parallel_tool_calls_are_kept_apart_and_ordered() -> None:
    asm = ChunkAssembler()
    feed_all(
        asm,
        chunk(tool_delta(1, id="call_b", type="function", name="second", arguments="")),
        chunk(tool_delta(0, id="call_a", type="function", name="first", arguments="")),
        chunk(tool_delta(0, arguments='{"a":')),
        chunk(tool_delta(1, arguments='{"b":')),
        chunk(tool_delta(1, arguments="2}")),
        chunk(tool_delta(0, arguments="1}")),
    )
    assert [(c.index, c.id, c.name, c.arguments) for c in asm.tool_calls] == [
        (0, "call_a", "first", '{"a":1}'),
        (1, "call_b", "second", '{"b":2}'),
    ]


def test_two_calls_in_one_delta() -> None:
    both = {
        "tool_calls": [
            {
                "index": 0,
                "id": "c0",
                "type": "function",
                "function": {"name": "f", "arguments": "{}"},
            },
            {
                "index": 1,
                "id": "c1",
                "type": "function",
                "function": {"name": "g", "arguments": "[]"},
            },
        ]
    }
    asm = ChunkAssembler()
    asm.feed(event(chunk(both, "tool_calls")))
    assert [(c.id, c.name, c.arguments) for c in asm.tool_calls] == [
        ("c0", "f", "{}"),
        ("c1", "g", "[]"),
    ]


def test_whole_tool_call_in_one_chunk() -> None:
    asm = ChunkAssembler()
    asm.feed(
        event(
            chunk(
                tool_delta(0, id="call_1", type="function", name="lookup", arguments='{"q":"x"}'),
                "tool_calls",
            )
        )
    )
    assert asm.tool_calls == [ToolCall(0, "call_1", "function", "lookup", '{"q":"x"}')]
    assert asm.finish_reason == "tool_calls"


def test_id_and_name_come_from_the_first_delta_even_when_repeated() -> None:
    # SGLang repeats the id on every delta; vLLM sends id "" after the first one.
    asm = ChunkAssembler()
    feed_all(
        asm,
        chunk(tool_delta(0, id="0", type="function", name="fn", arguments="")),
        chunk(tool_delta(0, id="0", name="fn", arguments="{")),
        chunk(tool_delta(0, id="", type="", arguments="}")),
    )
    assert asm.tool_calls == [ToolCall(0, "0", "function", "fn", "{}")]


def test_a_later_name_does_not_replace_the_first() -> None:
    asm = ChunkAssembler()
    feed_all(
        asm,
        chunk(tool_delta(0, id="c", name="search", arguments="")),
        chunk(tool_delta(0, name="search_web", arguments="{}")),
    )
    assert (asm.tool_calls[0].name, asm.tool_calls[0].arguments) == ("search", "{}")


def test_tool_calls_without_index_gemini_style() -> None:
    asm = ChunkAssembler()
    feed_all(
        asm,
        chunk(tool_delta(id="call_1", type="function", name="a", arguments='{"x":')),
        chunk(tool_delta(arguments="1}")),  # id-less: continues the last call
        chunk(tool_delta(id="call_2", type="function", name="b", arguments="{}"), "stop"),
    )
    assert [(c.index, c.id, c.name, c.arguments) for c in asm.tool_calls] == [
        (0, "call_1", "a", '{"x":1}'),
        (1, "call_2", "b", "{}"),
    ]


def test_a_new_id_under_a_used_index_starts_a_new_call() -> None:
    # Proxies translating Gemini number every whole call 0.
    asm = ChunkAssembler()
    feed_all(
        asm,
        chunk(tool_delta(0, id="call_1", type="function", name="a", arguments="{}")),
        chunk(tool_delta(0, id="call_2", type="function", name="b", arguments="{")),
        chunk(tool_delta(0, arguments="}")),
    )
    assert [(c.index, c.id, c.name, c.arguments) for c in asm.tool_calls] == [
        (0, "call_1", "a", "{}"),
        (1, "call_2", "b", "{}"),
    ]


def test_arguments_sent_as_an_object_become_a_json_string() -> None:
    asm = ChunkAssembler()
    asm.feed(event(chunk(tool_delta(0, id="c", name="f", arguments={"k": "v"}))))
    assert json.loads(asm.tool_calls[0].arguments) == {"k": "v"}


def test_empty_tool_calls_list_changes_nothing() -> None:
    asm = ChunkAssembler()
    delta = asm.feed(event(chunk({"role": "assistant", "content": "", "tool_calls": []})))
    assert delta is not None
    assert delta.tool_calls is False
    assert asm.tool_calls == []


@pytest.mark.parametrize(
    "bad",
    [
        {"tool_calls": {"index": 0}},
        {"tool_calls": ["call"]},
        {"tool_calls": [{"index": "0", "function": {"name": "f"}}]},
        {"tool_calls": [{"index": True, "function": {"name": "f"}}]},
        {"tool_calls": [{"index": 0, "function": "f()"}]},
        {"tool_calls": [{"index": 0, "function": {"name": 7}}]},
        {"function_call": "f()"},
    ],
)
def test_malformed_tool_call_deltas_are_protocol_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(UpstreamProtocolError):
        ChunkAssembler().feed(event(chunk(bad)))


def test_legacy_function_call_maps_to_tool_call_zero() -> None:
    asm = ChunkAssembler()
    deltas = feed_all(
        asm,
        chunk(
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "get_current_weather", "arguments": ""},
            }
        ),
        chunk({"function_call": {"arguments": '{\n  "location"'}}),
        chunk({"function_call": {"arguments": ': "Boston"\n}'}}),
        chunk({}, "function_call"),
    )
    assert [d.tool_calls for d in deltas if d] == [True, True, True, False]
    assert asm.tool_calls == [
        ToolCall(0, None, "function", "get_current_weather", '{\n  "location": "Boston"\n}')
    ]
    assert asm.finish_reason == "function_call"


# -- refusal and reasoning ----------------------------------------------------------------


def test_refusal_deltas_are_kept_apart_from_content() -> None:
    asm = ChunkAssembler()
    deltas = feed_all(
        asm,
        chunk({"role": "assistant", "content": None, "refusal": ""}),
        chunk({"refusal": "I'm sorry"}),
        chunk({"refusal": ", no."}),
        chunk({}, "stop"),
    )
    assert [d.refusal for d in deltas if d] == ["", "I'm sorry", ", no.", ""]
    assert (asm.refusal, asm.content) == ("I'm sorry, no.", "")


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_is_kept_apart_from_content(field: str) -> None:
    asm = ChunkAssembler()
    deltas = feed_all(
        asm,
        chunk({"role": "assistant", "content": None, field: ""}),
        chunk({"content": None, field: "Think"}),
        chunk({"content": "", field: "ing."}),
        chunk({"content": "Answer", field: None}),
    )
    assert [(d.reasoning, d.content) for d in deltas if d] == [
        ("", ""),
        ("Think", ""),
        ("ing.", ""),
        ("", "Answer"),
    ]
    assert (asm.reasoning, asm.content) == ("Thinking.", "Answer")


def test_reasoning_sent_under_both_names_is_counted_once() -> None:
    asm = ChunkAssembler()
    asm.feed(event(chunk({"reasoning_content": "hmm", "reasoning": "hmm"})))
    assert asm.reasoning == "hmm"


def test_reasoning_of_an_unexpected_type_is_ignored() -> None:
    asm = ChunkAssembler()
    asm.feed(event(chunk({"reasoning": {"effort": "high"}, "content": "ok"})))
    assert (asm.reasoning, asm.content) == ("", "ok")


# -- in-band errors -----------------------------------------------------------------------


def _raised(asm: ChunkAssembler, ev: SSEEvent) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        asm.feed(ev)
    return info.value


def test_error_object_raises_upstream_error_with_its_message_type_and_code() -> None:
    payload = {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    exc = _raised(ChunkAssembler(), event(payload))
    assert type(exc) is UpstreamError
    assert exc.code == "upstream_error"
    assert "The server had an error while processing your request." in exc.message
    assert "type=server_error" in exc.message
    assert exc.retryable is True


def test_error_with_an_http_status_code_keeps_it() -> None:
    # vLLM: {"error": {"message", "type", "param", "code": <HTTP status>}}
    payload = {
        "error": {"message": "boom", "type": "InternalServerError", "param": None, "code": 500}
    }
    exc = _raised(ChunkAssembler(), event(payload))
    assert (exc.upstream_status, exc.retryable) == (500, True)
    assert "code=500" in exc.message


def test_error_that_is_not_retryable() -> None:
    payload = {
        "error": {"message": "context too long", "type": "invalid_request_error", "code": 400}
    }
    exc = _raised(ChunkAssembler(), event(payload))
    assert (exc.upstream_status, exc.retryable) == (400, False)


def test_openrouter_mid_stream_error_with_choices_still_raises() -> None:
    payload = chunk(
        {"content": ""}, "error", error={"code": "server_error", "message": "Provider disconnected"}
    )
    asm = ChunkAssembler()
    asm.feed(event(chunk({"content": "partial"})))
    exc = _raised(asm, event(payload))
    assert "Provider disconnected" in exc.message
    assert "code=server_error" in exc.message
    assert asm.content == "partial"


def test_error_message_is_truncated() -> None:
    exc = _raised(ChunkAssembler(), event({"error": {"message": "x" * 5000}}))
    assert 500 <= len(exc.message) < 600


def test_error_given_as_a_string() -> None:
    exc = _raised(ChunkAssembler(), event({"error": "quota exceeded"}))
    assert exc.message.endswith("quota exceeded")


@pytest.mark.parametrize(
    "data",
    [
        '{"error": {"message": "overloaded", "type": "overloaded_error"}}',
        '{"message": "overloaded"}',
        "overloaded",
    ],
)
def test_event_error_always_raises(data: str) -> None:
    exc = _raised(ChunkAssembler(), SSEEvent(data=data, event="error"))
    assert type(exc) is UpstreamError
    assert "overloaded" in exc.message


@pytest.mark.parametrize("falsy", [None, False, "", {}])
def test_empty_error_field_is_not_an_error(falsy: Any) -> None:
    asm = ChunkAssembler()
    asm.feed(event(chunk({"content": "fine"}, error=falsy)))
    assert asm.content == "fine"


# -- [DONE], junk and ignorable events ----------------------------------------------------


@pytest.mark.parametrize("done", ["[DONE]", " [DONE]", "[DONE] ", "\n[DONE]\n"])
def test_done_sets_done_and_returns_none(done: str) -> None:
    asm = ChunkAssembler()
    feed_all(asm, chunk({"content": "a"}))
    assert asm.feed(SSEEvent(data=done)) is None
    assert asm.done
    asm.finish()


def test_done_without_any_answer_is_a_failed_answer() -> None:
    asm = ChunkAssembler()
    feed_all(asm, chunk({"role": "assistant"}), "[DONE]")
    with pytest.raises(UpstreamError) as info:
        asm.finish()
    assert info.value.code == "upstream_empty_answer" and not info.value.retryable


def test_an_error_field_explains_a_stream_without_an_answer() -> None:
    asm = ChunkAssembler()
    feed_all(asm, "[DONE]")
    with pytest.raises(UpstreamError) as info:
        asm.finish('{"code": 503, "message": "loading model", "type": "unavailable_error"}')
    assert info.value.code == "upstream_error"
    assert "loading model" in info.value.message and info.value.upstream_status == 503
    assert info.value.retryable


def test_an_error_field_does_not_undo_a_delivered_answer() -> None:
    asm = ChunkAssembler()
    feed_all(asm, chunk({"content": "fine"}, "stop"), "[DONE]")
    asm.finish('{"message": "noise"}')
    assert asm.content == "fine"


def test_a_tool_call_or_refusal_alone_is_an_answer() -> None:
    calls = ChunkAssembler()
    feed_all(
        calls,
        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f"}}]}),
        "[DONE]",
    )
    calls.finish()
    refusal = ChunkAssembler()
    feed_all(refusal, chunk({"refusal": "no"}), "[DONE]")
    refusal.finish()


def test_one_choice_is_the_answer_whatever_its_index() -> None:
    asm = ChunkAssembler()
    feed_all(
        asm,
        {"choices": [{"index": 3, "delta": {"role": "assistant", "content": "a"}}]},
        {"choices": [{"index": 4, "delta": {"role": "assistant", "content": "b"}}]},
        {"choices": [{"index": 7, "delta": {"content": "c"}, "finish_reason": "stop"}]},
    )
    asm.finish()
    assert asm.content == "abc" and asm.finish_reason == "stop"


def test_a_second_choice_opening_is_not_mixed_into_the_answer() -> None:
    asm = ChunkAssembler()
    feed_all(
        asm,
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 1, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 1, "delta": {"content": "other"}}]},
        {"choices": [{"index": 0, "delta": {"content": "mine"}}]},
        {"choices": [{"index": 1, "delta": {}, "finish_reason": "length"}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    )
    assert asm.content == "mine" and asm.finish_reason == "stop"


def test_a_chunk_with_several_choices_keeps_to_the_answers_index() -> None:
    asm = ChunkAssembler()
    feed_all(
        asm,
        {
            "choices": [
                {"index": 1, "delta": {"content": "B"}},
                {"index": 0, "delta": {"content": "A"}},
            ]
        },
        {"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "stop"}]},
        {"choices": [{"index": 1, "delta": {"content": "b"}}]},
    )
    assert asm.content == "Aa"


def test_data_after_done_is_ignored() -> None:
    asm = ChunkAssembler()
    feed_all(asm, chunk({"content": "a"}), "[DONE]")
    assert asm.feed(event(chunk({"content": "b"}))) is None
    assert asm.feed(SSEEvent(data="not json")) is None
    assert asm.feed(SSEEvent(data='{"error": {"message": "late"}}', event="error")) is None
    assert asm.content == "a"


@pytest.mark.parametrize("data", ["data: {}", "{'single': 'quotes'}", '{"cut', "ping"])
def test_data_that_is_not_json_is_a_protocol_error_with_a_snippet(data: str) -> None:
    with pytest.raises(UpstreamProtocolError) as info:
        ChunkAssembler().feed(SSEEvent(data=data))
    assert info.value.code == "upstream_protocol_error"
    assert repr(data) in info.value.message


@pytest.mark.parametrize("data", ["[1, 2]", "42", '"text"', "null", "true"])
def test_json_that_is_not_an_object_is_a_protocol_error(data: str) -> None:
    with pytest.raises(UpstreamProtocolError, match="not an object"):
        ChunkAssembler().feed(SSEEvent(data=data))


def test_protocol_error_snippet_is_short() -> None:
    with pytest.raises(UpstreamProtocolError) as info:
        ChunkAssembler().feed(SSEEvent(data="<html>" + "x" * 10_000))
    assert len(info.value.message) < 200


@pytest.mark.parametrize("data", ["", " ", "\n"])
def test_blank_data_is_ignored(data: str) -> None:
    assert ChunkAssembler().feed(SSEEvent(data=data)) is None


def test_named_events_other_than_error_are_ignored() -> None:
    asm = ChunkAssembler()
    assert asm.feed(SSEEvent(data="keep-alive", event="ping")) is None
    assert asm.feed(SSEEvent(data=json.dumps(chunk({"content": "x"})), event="chunk")) is None
    assert asm.content == ""


# -- choices other than the first ---------------------------------------------------------


def test_only_choice_index_zero_counts() -> None:
    two = {
        "id": "c",
        "choices": [
            {
                "index": 1,
                "delta": {"content": "other", "tool_calls": "ignored"},
                "finish_reason": "length",
            },
            {"index": 0, "delta": {"content": "mine"}, "finish_reason": None},
        ],
    }
    asm = ChunkAssembler()
    feed_all(asm, two, chunk({"content": "!"}, index=1), chunk({"content": "."}, "stop"))
    assert (asm.content, asm.finish_reason) == ("mine.", "stop")


def test_a_choice_without_index_in_first_position_is_choice_zero() -> None:
    asm = ChunkAssembler()
    asm.feed(event({"choices": [{"delta": {"content": "hi"}}]}))
    assert asm.content == "hi"


# -- end of stream and metadata -----------------------------------------------------------


def test_finish_without_done_or_finish_reason_is_truncated() -> None:
    asm = ChunkAssembler()
    feed_all(asm, chunk({"content": "half a sent"}))
    with pytest.raises(UpstreamTruncated) as info:
        asm.finish()
    assert info.value.code == "upstream_truncated"


def test_finish_on_an_empty_stream_is_truncated() -> None:
    with pytest.raises(UpstreamTruncated):
        ChunkAssembler().finish()


def test_finish_reason_without_done_is_complete() -> None:
    asm = ChunkAssembler()
    feed_all(asm, chunk({"content": "all"}), chunk({}, "stop"))
    asm.finish()
    assert not asm.done


def test_metadata_is_taken_from_the_first_chunk_that_has_it() -> None:
    asm = ChunkAssembler()
    feed_all(
        asm,
        {"id": "", "model": "", "created": 0, "choices": []},
        chunk({"content": "a"}, system_fingerprint=None),
        chunk({"content": "b"}, system_fingerprint="fp_1", id="chatcmpl-2", model="other"),
    )
    assert asm.response_id == "chatcmpl-1"
    assert asm.model == "gpt-4o-mini"
    assert asm.created == 1700000000
    assert asm.system_fingerprint == "fp_1"


def test_the_delta_carries_the_decoded_chunk() -> None:
    body = chunk({"content": "x"}, provider="SomeHost", native_finish_reason=None)
    delta = ChunkAssembler().feed(event(body))
    assert delta is not None
    assert delta.chunk == body
