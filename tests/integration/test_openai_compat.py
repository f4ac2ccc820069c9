"""The OpenAI-compatible API, driven by the official `openai` SDK over real sockets.

Both SDK flavours (sync `OpenAI`, async `AsyncOpenAI`), streaming and not, tool calls,
reasoning, every error class the SDK raises, the exact bytes on the wire, and what is
recorded (checked through the native API, with the ids from the response headers).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import CLIENT_KEYS, UPSTREAM_KEY, Relay, Stack
from tests.fakes.service import free_port
from tests.fakes.upstream import Reply, chunk_frame
from tests.integration.helpers import wait_final

# No upstream retries: an upstream error reaches the client on the first attempt.
RELAY_ENV = {"CHATRELAY_UPSTREAM_MAX_RETRIES": "0"}

TOKENS = ["Hel", "lo", ",", " wörld", " 👋", "!\n", "Line two", " ends."]
USAGE = {"prompt_tokens": 11, "completion_tokens": 8, "total_tokens": 19}
CONVERSATION_HEADER = "x-chatrelay-conversation-id"
MESSAGE_HEADER = "x-chatrelay-message-id"


def _sdk(relay: Relay, tenant: str = "acme") -> openai.OpenAI:
    return openai.OpenAI(
        base_url=relay.url + "/v1", api_key=CLIENT_KEYS[tenant], max_retries=0, timeout=20
    )


def _async_sdk(relay: Relay, tenant: str = "acme") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=relay.url + "/v1", api_key=CLIENT_KEYS[tenant], max_retries=0, timeout=20
    )


@pytest.fixture
def native(relay: Relay) -> Iterator[httpx.Client]:
    """The native API, to check what was recorded."""
    headers = {"Authorization": f"Bearer {CLIENT_KEYS['acme']}"}
    with httpx.Client(base_url=relay.url, headers=headers, timeout=20) as client:
        yield client


def _conversation(native: httpx.Client, cid: str) -> Any:
    response = native.get(f"/v1/conversations/{cid}")
    assert response.status_code == 200, response.text
    return response.json()


def _raw_stream(
    *deltas: dict[str, Any], finish: str = "stop", usage: dict[str, int] | None = None
) -> bytes:
    """An upstream stream in OpenAI's chunk format, one chunk per delta."""

    chunk = chunk_frame
    out = [chunk({"role": "assistant", "content": None})]
    out += [chunk(delta) for delta in deltas]
    out.append(chunk({}, finish))
    if usage is not None:
        tail = {"id": "chatcmpl-upstream", "choices": [], "usage": usage}
        out.append(b"data: " + json.dumps(tail).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


WEATHER_CALLS = [
    {
        "id": "call_weather_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Edinburgh"}'},
    },
    {
        "id": "call_weather_2",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
    },
]


def _call_delta(index: int, arguments: str, *, call_id: str | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:  # the first delta of a call names it
        call.update(id=call_id, type="function")
        call["function"]["name"] = "get_weather"
    return {"tool_calls": [call]}


def _tool_call_stream() -> bytes:
    """Two parallel calls, arguments split across deltas, as OpenAI streams them."""
    return _raw_stream(
        _call_delta(0, "", call_id="call_weather_1"),
        _call_delta(0, '{"city": '),
        _call_delta(0, '"Edinburgh"}'),
        _call_delta(1, "", call_id="call_weather_2"),
        _call_delta(1, '{"city": "Oslo"}'),
        finish="tool_calls",
        usage=USAGE,
    )


# -- completions -------------------------------------------------------------------------------


def test_sync_non_streaming_answers_and_records(relay: Relay, native: httpx.Client) -> None:
    relay.upstream.enqueue(Reply(tokens=TOKENS, usage=USAGE))
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello"},
    ]
    before = len(relay.upstream.requests)
    raw = _sdk(relay).chat.completions.with_raw_response.create(
        model="model-x",
        messages=messages,  # type: ignore[arg-type]
        temperature=0.2,
        max_tokens=50,
        user="end-user-7",
        extra_body={"top_k": 5, "stream_options": {"include_usage": False}},
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "model-x"
    assert isinstance(completion.created, int) and abs(completion.created - time.time()) < 120
    [choice] = completion.choices
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content == "".join(TOKENS)
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.total_tokens) == (11, 19)

    # Passed through untouched, streamed upstream with usage asked for.
    sent = relay.upstream.requests[before].body
    assert sent["messages"] == messages
    assert sent["model"] == "model-x"
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 50
    assert sent["user"] == "end-user-7" and sent["top_k"] == 5
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}

    cid, mid = raw.headers[CONVERSATION_HEADER], raw.headers[MESSAGE_HEADER]
    conversation = _conversation(native, cid)
    recorded = [(m["role"], m["content"], m["status"]) for m in conversation["messages"]]
    assert recorded == [
        ("system", "You are terse.", "completed"),
        ("user", "Say hello", "completed"),
        ("assistant", "".join(TOKENS), "completed"),
    ]
    assistant = conversation["messages"][-1]
    assert assistant["id"] == mid
    assert assistant["model"] == "model-x"
    assert assistant["usage"] == USAGE
    assert assistant["finish_reason"] == "stop"
    assert conversation["title"] == "Say hello"


async def test_async_streaming_chunks(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=TOKENS, usage=USAGE, delay=0.01))
    async with _async_sdk(relay) as client:
        stream = await client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "stream it"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-")
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.created for c in chunks} == {chunks[0].created}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    pieces = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert pieces == TOKENS, "one chunk per upstream piece, byte for byte"
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    assert all(c.usage is None for c in chunks), "no usage chunk unless asked"


async def test_async_streaming_with_include_usage(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["a", "b"], usage=USAGE))
    async with _async_sdk(relay) as client:
        stream = await client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": "count"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None and last.usage.total_tokens == 19
    assert last.usage.prompt_tokens == 11 and last.usage.completion_tokens == 8
    assert all(c.usage is None for c in body)
    assert body[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in body) == "ab"


def test_tool_calls_stream_then_continue_with_tool_results(
    relay: Relay, native: httpx.Client
) -> None:
    relay.upstream.enqueue(Reply(raw=_tool_call_stream(), chunk_size=97))
    client = _sdk(relay)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    question = {"role": "user", "content": "Weather in Edinburgh and Oslo?"}
    raw = client.chat.completions.with_raw_response.create(
        model="fake-model",
        messages=[question],  # type: ignore[list-item]
        tools=tools,  # type: ignore[arg-type]
        tool_choice="auto",
        stream=True,
    )
    cid = raw.headers[CONVERSATION_HEADER]
    chunks = list(raw.parse())
    opening = chunks[0].choices[0].delta
    assert opening.role == "assistant" and opening.content is None, "null, as OpenAI sends it"
    with_calls = [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    deltas = [call for c in with_calls for call in c.choices[0].delta.tool_calls or []]
    # As the upstream streamed them: one chunk per delta, by index, the first one named.
    assert [(d.index, d.id, d.function and d.function.arguments) for d in deltas] == [
        (0, "call_weather_1", ""),
        (0, None, '{"city": '),
        (0, None, '"Edinburgh"}'),
        (1, "call_weather_2", ""),
        (1, None, '{"city": "Oslo"}'),
    ]
    assert all(len(c.choices[0].delta.tool_calls or []) == 1 for c in with_calls)
    firsts = [d for d in deltas if d.id is not None]
    assert [(d.type, d.function and d.function.name) for d in firsts] == [
        ("function", "get_weather"),
        ("function", "get_weather"),
    ]
    assert all(
        d.type is None and d.function and d.function.name is None for d in deltas if d.id is None
    )
    assembled: dict[int, str] = {}
    for d in deltas:
        assembled[d.index] = assembled.get(d.index, "") + (
            (d.function and d.function.arguments) or ""
        )
    assert [assembled[0], assembled[1]] == [c["function"]["arguments"] for c in WEATHER_CALLS]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    sent = relay.upstream.requests[-1].body
    assert sent["tools"] == tools and sent["tool_choice"] == "auto"

    # The client runs the tools and continues the same conversation with the whole history.
    relay.upstream.enqueue(Reply(tokens=["Rainy", " and", " snowy."]))
    history = [
        question,
        {"role": "assistant", "content": None, "tool_calls": WEATHER_CALLS},
        {"role": "tool", "tool_call_id": "call_weather_1", "content": "rain"},
        {"role": "tool", "tool_call_id": "call_weather_2", "content": "snow"},
    ]
    raw_answer = client.chat.completions.with_raw_response.create(
        model="fake-model",
        messages=history,  # type: ignore[arg-type]
        tools=tools,  # type: ignore[arg-type]
        extra_headers={"X-Chatrelay-Conversation-Id": cid},
    )
    assert raw_answer.parse().choices[0].message.content == "Rainy and snowy."
    assert raw_answer.headers[CONVERSATION_HEADER] == cid
    assert relay.upstream.requests[-1].body["messages"] == history, "sent as the client gave it"
    recorded = _conversation(native, cid)["messages"]
    assert [(m["role"], m["content"]) for m in recorded] == [
        ("user", "Weather in Edinburgh and Oslo?"),
        ("assistant", ""),
        ("tool", "rain"),
        ("tool", "snow"),
        ("assistant", "Rainy and snowy."),
    ], "only the messages not yet recorded were appended"
    assert recorded[1]["tool_calls"] == WEATHER_CALLS
    assert recorded[1]["finish_reason"] == "tool_calls"


async def test_tool_calls_non_streaming(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(raw=_tool_call_stream()))
    async with _async_sdk(relay) as client:
        completion = await client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "weather?"}]
        )
    message = completion.choices[0].message
    assert message.content is None
    assert [c.model_dump() for c in message.tool_calls or []] == WEATHER_CALLS
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None and completion.usage.total_tokens == 19


async def test_reasoning_passes_through(relay: Relay) -> None:
    stream_bytes = _raw_stream(
        {"reasoning_content": "Compare"},
        {"reasoning_content": " 9.11"},
        {"content": "9.9"},
        {"content": " is larger."},
    )
    relay.upstream.enqueue(Reply(raw=stream_bytes), Reply(raw=stream_bytes))
    async with _async_sdk(relay) as client:
        stream = await client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "9.9 or 9.11?"}], stream=True
        )
        deltas = [c.choices[0].delta async for c in stream if c.choices]
        completion = await client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "9.9 or 9.11?"}]
        )
    reasoning = [getattr(d, "reasoning_content", None) for d in deltas]
    assert [r for r in reasoning if r] == ["Compare", " 9.11"]
    assert "".join(d.content or "" for d in deltas) == "9.9 is larger."
    message = completion.choices[0].message
    assert message.content == "9.9 is larger."
    assert getattr(message, "reasoning_content", None) == "Compare 9.11"


def test_continuing_a_conversation_appends_only_new_messages(
    relay: Relay, native: httpx.Client
) -> None:
    relay.upstream.enqueue(Reply(tokens=["first answer"]), Reply(tokens=["second answer"]))
    client = _sdk(relay)
    turn1: list[dict[str, Any]] = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "question one"}]},
    ]
    raw = client.chat.completions.with_raw_response.create(
        model="fake-model",
        messages=turn1,  # type: ignore[arg-type]
    )
    cid = raw.headers[CONVERSATION_HEADER]
    answer = raw.parse().choices[0].message.content
    turn2 = [*turn1, {"role": "assistant", "content": answer}, {"role": "user", "content": "two"}]
    second = client.chat.completions.with_raw_response.create(
        model="fake-model",
        messages=turn2,  # type: ignore[arg-type]
        extra_headers={"X-Chatrelay-Conversation-Id": cid},
    )
    assert second.headers[CONVERSATION_HEADER] == cid
    messages = _conversation(native, cid)["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("developer", "Be brief."),
        ("user", "question one"),
        ("assistant", "first answer"),
        ("user", "two"),
        ("assistant", "second answer"),
    ]
    assert messages[-1]["id"] == second.headers[MESSAGE_HEADER]

    # Unknown, malformed, or another tenant's conversation: 404, nothing sent upstream.
    before = len(relay.upstream.requests)
    for tenant, header in [
        ("acme", "conv_01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        ("acme", "not-an-id"),
        ("globex", cid),
    ]:
        with pytest.raises(openai.NotFoundError) as caught:
            _sdk(relay, tenant).chat.completions.create(
                model="fake-model",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"X-Chatrelay-Conversation-Id": header},
            )
        assert caught.value.status_code == 404
        assert caught.value.code == "not_found"
    assert len(relay.upstream.requests) == before


def test_retry_after_a_failure_does_not_repeat_the_question(
    relay: Relay, native: httpx.Client
) -> None:
    relay.upstream.enqueue(_upstream_error(500, "boom"), Reply(tokens=["at last"]))
    client = _sdk(relay)
    messages: Any = [{"role": "user", "content": "retry me"}]
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="fake-model", messages=messages)
    cid = failed.value.response.headers[CONVERSATION_HEADER]
    client.chat.completions.create(
        model="fake-model",
        messages=messages,
        extra_headers={"X-Chatrelay-Conversation-Id": cid},
    )
    recorded = _conversation(native, cid)["messages"]
    assert [(m["role"], m["content"], m["status"]) for m in recorded] == [
        ("user", "retry me", "completed"),
        ("assistant", "", "failed"),
        ("assistant", "at last", "completed"),
    ], "a failed answer was never the client's, so the resent question matches the record"


# -- the wire ----------------------------------------------------------------------------------


async def test_raw_stream_bytes(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=TOKENS, usage=USAGE))
    async with (
        relay.client() as client,
        client.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "fake-model",
                "messages": [{"role": "user", "content": "bytes"}],
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ) as response,
    ):
        assert response.status_code == 200
        body = (await response.aread()).decode()
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert body.endswith("data: [DONE]\n\n")
    frames = body.split("\n\n")[:-1]
    assert all(f.startswith("data: ") and "\n" not in f for f in frames), "data-only frames"
    assert "event:" not in body and "id:" not in body and "retry:" not in body
    *chunk_frames, done = frames
    assert done == "data: [DONE]"
    chunks = [json.loads(f.removeprefix("data: ")) for f in chunk_frames]
    mid = response.headers[MESSAGE_HEADER]
    assert {c["id"] for c in chunks} == {"chatcmpl-" + mid.removeprefix("msg_")}
    assert all(
        c["object"] == "chat.completion.chunk" and c["model"] == "fake-model" for c in chunks
    )
    assert all("usage" in c for c in chunks)
    opening, *content, finish, usage = chunks
    assert opening["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": "", "refusal": None},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert [c["choices"][0]["delta"] for c in content] == [{"content": t} for t in TOKENS]
    assert finish["choices"] == [
        {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    ]
    assert finish["usage"] is None
    assert usage["choices"] == [] and usage["usage"] == USAGE


async def test_disconnect_mid_stream_still_records_the_whole_answer(relay: Relay) -> None:
    tokens = [f"t{i} " for i in range(30)]
    relay.upstream.enqueue(Reply(tokens=tokens, delay=0.03))
    disconnects_before = relay.upstream.client_disconnects
    async with relay.client() as client:
        async with client.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "fake-model",
                "messages": [{"role": "user", "content": "go"}],
                "stream": True,
            },
        ) as response:
            assert response.status_code == 200
            mid = response.headers[MESSAGE_HEADER]
            seen = 0
            async for line in response.aiter_lines():
                if line.startswith("data: ") and '"content":"t' in line:
                    seen += 1
                    if seen == 3:
                        break  # leave mid-stream: the connection closes here
        final = await wait_final(client, mid)
    assert final["status"] == "completed"
    assert final["content"] == "".join(tokens)
    assert relay.upstream.client_disconnects == disconnects_before, "upstream read was cut"


# -- errors ------------------------------------------------------------------------------------


def _error_body(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "code", "param"}
    return error


def test_client_errors_have_openai_shape_and_classes(relay: Relay) -> None:
    before = len(relay.upstream.requests)
    wrong_key = openai.OpenAI(base_url=relay.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        wrong_key.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert auth.value.code == "unauthorized"
    with pytest.raises(openai.AuthenticationError):
        wrong_key.models.list()

    client = _sdk(relay)
    with pytest.raises(openai.BadRequestError) as empty:
        client.chat.completions.create(model="fake-model", messages=[])
    assert empty.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as role:
        client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "wizard", "content": "hi"}],  # type: ignore[list-item, misc]
        )
    assert role.value.param == "messages[0].role"
    with pytest.raises(openai.BadRequestError) as model:
        client.chat.completions.create(model="", messages=[{"role": "user", "content": "hi"}])
    assert model.value.param == "model"
    with pytest.raises(openai.BadRequestError) as tool:
        client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "tool", "content": "42"}],  # type: ignore[list-item, misc]
        )
    assert tool.value.param == "messages[0].tool_call_id"

    headers = {"Authorization": f"Bearer {CLIENT_KEYS['acme']}"}
    with httpx.Client(base_url=relay.url, headers=headers, timeout=20) as raw:
        not_json = raw.post(
            "/v1/chat/completions",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert not_json.status_code == 400
        assert _error_body(not_json)["code"] == "invalid_json"
        no_messages = raw.post("/v1/chat/completions", json={"model": "fake-model"})
        assert no_messages.status_code == 400
        assert _error_body(no_messages)["param"] == "messages"
        huge = raw.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "x" * 1_100_000}]},
        )
        assert huge.status_code == 413
        assert _error_body(huge)["code"] == "payload_too_large"
        wrong_method = raw.get("/v1/chat/completions")
        assert wrong_method.status_code == 405
        assert wrong_method.headers["allow"] == "POST"
        assert _error_body(wrong_method)["type"] == "invalid_request_error"
        missing_key = httpx.post(
            relay.url + "/v1/chat/completions", json={"messages": []}, timeout=20
        )
        assert missing_key.status_code == 401
        assert _error_body(missing_key)["type"] == "authentication_error"
    assert len(relay.upstream.requests) == before, "nothing reached the upstream"


@pytest.mark.parametrize("role", [{"a": 1}, ["user"]], ids=["object", "array"])
def test_a_role_that_is_not_a_string_is_a_400_naming_it(relay: Relay, role: Any) -> None:
    before = len(relay.upstream.requests)
    headers = {"Authorization": f"Bearer {CLIENT_KEYS['acme']}"}
    with httpx.Client(base_url=relay.url, headers=headers, timeout=20) as raw:
        response = raw.post(
            "/v1/chat/completions",
            json={
                "model": "fake-model",
                "messages": [{"role": "user", "content": "hi"}, {"role": role, "content": "x"}],
            },
        )
    assert response.status_code == 400, response.text
    error = _error_body(response)
    assert error["param"] == "messages[1].role"
    assert error["type"] == "invalid_request_error"
    assert len(relay.upstream.requests) == before, "nothing reached the upstream"


def _upstream_error(status: int, message: str, **headers: str) -> Reply:
    body = json.dumps({"error": {"message": message, "type": "x", "code": None}}).encode()
    return Reply(status=status, body=body, headers={"content-type": "application/json", **headers})


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_upstream_failures_before_output_get_their_http_status(
    relay: Relay, native: httpx.Client, stream: bool
) -> None:
    client = _sdk(relay)
    messages: Any = [{"role": "user", "content": "hi"}]

    relay.upstream.enqueue(_upstream_error(429, "slow down", **{"Retry-After": "7"}))
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="fake-model", messages=messages, stream=stream)
    assert limited.value.code == "upstream_rate_limited"
    assert limited.value.response.headers["retry-after"].isdigit()
    assert "slow down" in limited.value.message
    # The failed exchange is recorded all the same, and the headers say where.
    mid = limited.value.response.headers[MESSAGE_HEADER]
    failed = native.get(f"/v1/messages/{mid}").json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "upstream_rate_limited"

    relay.upstream.enqueue(_upstream_error(500, "boom"))
    with pytest.raises(openai.InternalServerError) as unavailable:
        client.chat.completions.create(model="fake-model", messages=messages, stream=stream)
    assert unavailable.value.status_code == 502
    assert unavailable.value.code == "upstream_unavailable"

    relay.upstream.enqueue(_upstream_error(401, f"Incorrect API key provided: {UPSTREAM_KEY}"))
    with pytest.raises(openai.InternalServerError) as upstream_auth:
        client.chat.completions.create(model="fake-model", messages=messages, stream=stream)
    assert upstream_auth.value.status_code == 502
    assert upstream_auth.value.code == "upstream_auth_failed"
    assert "your client key is fine" in upstream_auth.value.message
    assert UPSTREAM_KEY not in upstream_auth.value.response.text

    relay.upstream.enqueue(_upstream_error(404, "The model `nope` does not exist"))
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=messages, stream=stream)
    assert missing.value.code == "upstream_not_found"

    relay.upstream.enqueue(_upstream_error(400, "temperature must be <= 2"))
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="fake-model", messages=messages, stream=stream, temperature=9
        )
    assert "temperature" in refused.value.message


async def test_upstream_failure_mid_stream_is_an_in_stream_error(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["part", "ial"], drop_after=2, delay=0.01))
    async with _async_sdk(relay) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="fake-model", messages=[{"role": "user", "content": "drop"}], stream=True
        )
        stream = raw.parse()
        received: list[str] = []
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "partial"
    assert caught.value.code in {"upstream_truncated", "upstream_connection_lost"}
    async with relay.client() as native_client:
        stored = await wait_final(native_client, raw.headers[MESSAGE_HEADER])
    assert stored["status"] == "failed" and stored["content"] == "partial"


async def test_upstream_failure_after_output_fails_a_non_streaming_request(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["part", "ial"], drop_after=2, delay=0.01))
    async with _async_sdk(relay) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": "drop quietly"}]
            )
    assert caught.value.status_code == 502
    assert caught.value.code in {"upstream_truncated", "upstream_connection_lost"}
    message_id = caught.value.response.headers[MESSAGE_HEADER]
    async with relay.client() as native_client:
        stored = await wait_final(native_client, message_id)
    assert stored["status"] == "failed" and stored["content"] == "partial"


# -- models ------------------------------------------------------------------------------------


def test_models_are_listed_and_cached(relay: Relay) -> None:
    client = _sdk(relay)
    relay.upstream.models = ["fake-model", "fake-model-large"]
    listed = client.models.list()
    assert [m.id for m in listed.data] == ["fake-model", "fake-model-large"]
    assert all(m.object == "model" and m.owned_by == "fake" for m in listed.data)
    relay.upstream.models = ["something-else"]
    assert [m.id for m in client.models.list().data] == ["fake-model", "fake-model-large"]


async def test_builtin_mock_lists_its_models_and_answers(stack: Stack) -> None:
    service = stack.service(OPENAI_API_KEY="", OPENAI_BASE_URL="")
    async with openai.AsyncOpenAI(
        base_url=service.base_url + "/v1", api_key=CLIENT_KEYS["acme"], max_retries=0
    ) as client:
        models = [m.id async for m in client.models.list()]
        assert "mock" in models and "mock-429" in models
        completion = await client.chat.completions.create(
            model="mock", messages=[{"role": "user", "content": "hello mock"}]
        )
    assert "hello mock" in (completion.choices[0].message.content or "")
    assert stack.upstream.requests == [], "the fake upstream was not used"


async def test_unreachable_upstream_is_a_bad_gateway(stack: Stack) -> None:
    service = stack.service(OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1")
    async with openai.AsyncOpenAI(
        base_url=service.base_url + "/v1", api_key=CLIENT_KEYS["acme"], max_retries=0
    ) as client:
        with pytest.raises(openai.InternalServerError) as listing:
            await client.models.list()
        with pytest.raises(openai.InternalServerError) as completion:
            await client.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": "anyone?"}], stream=True
            )
    assert listing.value.status_code == completion.value.status_code == 502
    assert listing.value.code == completion.value.code == "upstream_unreachable"


async def test_a_model_is_retrieved_by_id_slashes_included(stack: Stack) -> None:
    stack.upstream.models = ["fake-model", "org/model-x"]
    service = stack.service()
    async with openai.AsyncOpenAI(
        base_url=service.base_url + "/v1", api_key=CLIENT_KEYS["acme"], max_retries=0
    ) as client:
        model = await client.models.retrieve("org/model-x")
        assert (model.id, model.object, model.owned_by) == ("org/model-x", "model", "fake")
        assert (await client.models.retrieve("fake-model")).id == "fake-model"
        with pytest.raises(openai.NotFoundError) as missing:
            await client.models.retrieve("no-such-model")
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.AuthenticationError):
            await openai.AsyncOpenAI(
                base_url=service.base_url + "/v1", api_key="wrong", max_retries=0
            ).models.retrieve("fake-model")


async def test_unknown_openai_routes_answer_in_openai_shape(stack: Stack) -> None:
    service = stack.service()
    async with openai.AsyncOpenAI(
        base_url=service.base_url + "/v1", api_key=CLIENT_KEYS["acme"], max_retries=0
    ) as client:
        with pytest.raises(openai.NotFoundError) as embeddings:
            await client.embeddings.create(model="fake-model", input="hello")
    assert embeddings.value.code == "unknown_url"
    body = embeddings.value.body
    assert isinstance(body, dict) and body["type"] == "invalid_request_error"
    async with httpx.AsyncClient(base_url=service.base_url) as raw:
        files = await raw.get("/v1/files")
        native = await raw.get("/v1/conversations/conv_x/nothing-here")
    assert files.status_code == 404
    assert files.json()["error"]["type"] == "invalid_request_error"
    assert native.status_code == 404
    assert set(native.json()["error"]) == {"code", "message"}, "native paths keep their shape"
