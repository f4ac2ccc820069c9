"""The chunk builders give OpenAI's shapes with their keys in OpenAI's order."""

from __future__ import annotations

import json

from chatrelay.completions.chunks import chunk, completion, usage_chunk
from chatrelay.sse.framing import json_text


def test_chunk_without_usage_has_no_usage_key() -> None:
    built = chunk("chatcmpl-1", 7, "m", {"content": "hi"})
    assert json_text(built) == (
        '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":7,"model":"m",'
        '"choices":[{"index":0,"delta":{"content":"hi"},"logprobs":null,"finish_reason":null}]}'
    )


def test_chunk_with_the_usage_field_sends_null_until_usage_is_known() -> None:
    built = chunk("c", 1, "m", {}, "stop", include_usage_field=True)
    assert list(built) == ["id", "object", "created", "model", "choices", "usage"]
    assert built["usage"] is None
    assert built["choices"][0]["finish_reason"] == "stop"
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    assert chunk("c", 1, "m", {}, usage=usage)["usage"] == usage


def test_system_fingerprint_comes_before_choices_only_when_given() -> None:
    assert "system_fingerprint" not in chunk("c", 1, "m", {})
    built = chunk("c", 1, "m", {}, system_fingerprint=None)
    assert list(built)[4:] == ["system_fingerprint", "choices"]
    assert built["system_fingerprint"] is None
    assert list(usage_chunk("c", 1, "m", None, system_fingerprint="fp"))[4] == "system_fingerprint"


def test_usage_chunk_has_no_choices() -> None:
    usage = {"prompt_tokens": 1}
    assert json.loads(json_text(usage_chunk("c", 1, "m", usage))) == {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": usage,
    }


def test_completion_holds_the_message_and_usage() -> None:
    message = {"role": "assistant", "content": "hi", "refusal": None}
    built = completion("c", 1, "m", message, "stop", usage=None)
    assert list(built) == ["id", "object", "created", "model", "choices", "usage"]
    assert built["object"] == "chat.completion"
    assert built["choices"] == [
        {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
    ]
    assert built["usage"] is None


def test_the_callers_objects_are_copied_not_shared() -> None:
    delta = {"content": "x"}
    built = chunk("c", 1, "m", delta)
    built["choices"][0]["delta"]["content"] = "changed"
    assert delta == {"content": "x"}
