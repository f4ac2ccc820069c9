"""`/v1/responses`, driven by the official `openai` SDK (sync and async) over real sockets:
create streaming and not, background and resume at any sequence number, cancel, delete,
`previous_response_id`, function tools with streamed arguments, refused parameters."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import CLIENT_KEYS, Relay, Stack
from tests.fakes.upstream import Reply, chunk_frame

TOKENS = ["Hel", "lo", ",", " wörld", " 👋", "!\n", "Line two", " ends."]
USAGE = {"prompt_tokens": 11, "completion_tokens": 8, "total_tokens": 19}
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CONVERSATION_HEADER = "x-chatrelay-conversation-id"


def _sdk(relay: Relay) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=relay.url + "/v1", api_key=CLIENT_KEYS["acme"], max_retries=0, timeout=20
    )


def _async_sdk(relay: Relay) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=relay.url + "/v1", api_key=CLIENT_KEYS["acme"], max_retries=0, timeout=20
    )


def _dumped(events: list[Any]) -> list[dict[str, Any]]:
    return [event.model_dump(exclude_none=True) for event in events]


def _check_documented_order(types: list[str]) -> None:
    """OpenAI's order: created, in_progress; per item added … done; one terminal event."""
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] in ("response.completed", "response.incomplete", "response.failed")
    body = types[2:-1]
    position = 0
    while position < len(body):
        assert body[position] == "response.output_item.added", body[position:]
        position += 1
        if body[position] == "response.content_part.added":
            position += 1
            while body[position] == "response.output_text.delta":
                position += 1
            expected = [
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
            ]
        else:
            while body[position] == "response.function_call_arguments.delta":
                position += 1
            expected = ["response.function_call_arguments.done", "response.output_item.done"]
        assert body[position : position + len(expected)] == expected, body[position:]
        position += len(expected)


def _tool_call_stream() -> bytes:
    def call(arguments: str, call_id: str | None = None) -> bytes:
        item: dict[str, Any] = {"index": 0, "function": {"arguments": arguments}}
        if call_id is not None:
            item.update(id=call_id, type="function")
            item["function"]["name"] = "get_weather"
        return chunk_frame({"tool_calls": [item]})

    return b"".join(
        [
            chunk_frame({"role": "assistant", "content": None}),
            call("", "call_w1"),
            call('{"ci'),
            call('ty": "Os'),
            call('lo"}'),
            chunk_frame({}, "tool_calls"),
            b"data: [DONE]\n\n",
        ]
    )


# -- create ------------------------------------------------------------------------------


def test_non_streaming_response_maps_the_request_and_is_recorded(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=TOKENS, usage=USAGE))
    raw = _sdk(relay).responses.with_raw_response.create(
        model="fake-model",
        input="Say hello",
        instructions="You are terse.",
        temperature=0.5,
        top_p=0.9,
        max_output_tokens=50,
        metadata={"ticket": "T-1"},
    )
    response = raw.parse()
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == "".join(TOKENS)
    assert response.model == "fake-model"
    assert response.instructions == "You are terse."
    assert response.metadata == {"ticket": "T-1"}
    assert (response.temperature, response.top_p, response.max_output_tokens) == (0.5, 0.9, 50)
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 8)
    [item] = response.output
    assert item.type == "message" and item.status == "completed"
    sent = relay.upstream.requests[-1].body
    assert sent["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello"},
    ]
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"]) == (0.5, 0.9, 50)

    again = _sdk(relay).responses.retrieve(response.id)
    assert again.model_dump() == response.model_dump(), "retrieve gives the same object"
    with httpx.Client(
        base_url=relay.url, headers={"Authorization": f"Bearer {CLIENT_KEYS['acme']}"}
    ) as native:
        conversation = native.get(f"/v1/conversations/{raw.headers[CONVERSATION_HEADER]}").json()
    assert [(m["role"], m["content"]) for m in conversation["messages"]] == [
        ("user", "Say hello"),
        ("assistant", "".join(TOKENS)),
    ]
    assert conversation["messages"][1]["id"] == "msg_" + response.id.removeprefix("resp_")


async def test_streamed_response_in_documented_order(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=TOKENS, usage=USAGE))
    async with _async_sdk(relay) as client:
        stream = await client.responses.create(model="fake-model", input="Hi", stream=True)
        events = [event async for event in stream]
    types = [event.type for event in events]
    _check_documented_order(types)
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert deltas == TOKENS, "one delta per upstream piece, byte for byte"
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text == "".join(TOKENS)
    assert events[0].type == "response.created"
    assert events[0].response.status == "in_progress" and events[0].response.output == []


# -- background and resume ---------------------------------------------------------------


def test_background_response_resumes_exactly_after_any_sequence_number(relay: Relay) -> None:
    tokens = [f"t{i} " for i in range(25)]
    relay.upstream.enqueue(Reply(tokens=tokens, delay=0.04))
    client = _sdk(relay)
    created = client.responses.create(model="fake-model", input="Count", background=True)
    assert created.status == "in_progress" and created.background is True
    # While it runs: resume from a few points, and read it whole from the start.
    early = _dumped(list(client.responses.retrieve(created.id, stream=True, starting_after=3)))
    whole = list(client.responses.retrieve(created.id, stream=True))
    full = _dumped(whole)
    assert [e["sequence_number"] for e in full] == list(range(len(full)))
    _check_documented_order([e.type for e in whole])
    assert early == full[4:]
    text = "".join(e["delta"] for e in full if e["type"] == "response.output_text.delta")
    assert text == "".join(tokens)
    # After the end (also from the database, past the finished-log TTL the same way).
    for after in (0, 1, 2, 10, len(full) - 2, len(full) - 1):
        resumed = client.responses.retrieve(created.id, stream=True, starting_after=after)
        assert _dumped(list(resumed)) == full[after + 1 :], after
    final = client.responses.retrieve(created.id)
    assert final.status == "completed" and final.output_text == "".join(tokens)


async def test_resuming_while_running_from_the_async_sdk(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=[f"w{i} " for i in range(15)], delay=0.05))
    async with _async_sdk(relay) as client:
        created = await client.responses.create(model="fake-model", input="Go", background=True)
        first: list[Any] = []
        stream = await client.responses.retrieve(created.id, stream=True)
        async for event in stream:
            first.append(event)
            if event.type == "response.output_text.delta":
                break  # a client that went away mid-stream
        await stream.close()
        cut = first[-1].sequence_number
        running = await client.responses.retrieve(created.id)
        assert running.status == "in_progress"
        rest = [
            e
            async for e in await client.responses.retrieve(
                created.id, stream=True, starting_after=cut
            )
        ]
        whole = [e async for e in await client.responses.retrieve(created.id, stream=True)]
    assert _dumped(first + rest) == _dumped(whole)


# -- cancel, delete --------------------------------------------------------------------


def test_cancel_a_background_response(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=[f"x{i} " for i in range(200)], delay=0.05))
    client = _sdk(relay)
    created = client.responses.create(model="fake-model", input="Long", background=True)
    # Closed here, not whenever the collector finalizes it: the SDK's stream generator sits
    # in a reference cycle, and closed by a collection that runs while the client's pool
    # lock is held (a later request), it waits on that lock for ever.
    with client.responses.retrieve(created.id, stream=True) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                break
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert cancelled.output_text.startswith("x0 ")
    assert client.responses.retrieve(created.id).status == "cancelled"
    assert client.responses.cancel(created.id).status == "cancelled", "idempotent"
    events = list(client.responses.retrieve(created.id, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.status == "cancelled"

    relay.upstream.enqueue(Reply(tokens=["done"]))
    finished = client.responses.create(model="fake-model", input="Short")
    with pytest.raises(openai.APIStatusError) as refused:
        client.responses.cancel(finished.id)
    assert refused.value.status_code == 409


def test_delete_a_response(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["bye"]))
    client = _sdk(relay)
    response = client.responses.create(model="fake-model", input="Forget me")
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_nothing")


def test_deleting_a_running_response_stops_its_generation(relay: Relay) -> None:
    """DELETE of a background response still generating closes the upstream connection
    (within 1 s), and nothing of it can be read or resumed afterwards; the service goes on
    serving the next one."""
    relay.upstream.enqueue(Reply(tokens=[f"x{i} " for i in range(400)], delay=0.05))
    client = _sdk(relay)
    created = client.responses.create(model="fake-model", input="Long", background=True)
    with client.responses.retrieve(created.id, stream=True) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                break
    deleted_at = time.monotonic()
    client.responses.delete(created.id)
    closed_at = relay.upstream.wait_for_disconnect(timeout=5)
    assert closed_at is not None, "the upstream connection was never closed"
    assert closed_at - deleted_at < 1.0
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        list(client.responses.retrieve(created.id, stream=True))
    relay.upstream.enqueue(Reply(tokens=["next"]))
    assert client.responses.create(model="fake-model", input="Next").output_text == "next"


def test_another_tenant_sees_no_response(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["mine"]))
    response = _sdk(relay).responses.create(model="fake-model", input="private")
    other = openai.OpenAI(
        base_url=relay.url + "/v1", api_key=CLIENT_KEYS["globex"], max_retries=0, timeout=20
    )
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.cancel(response.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="fake-model", input="x", previous_response_id=response.id)
    assert _sdk(relay).responses.retrieve(response.id).output_text == "mine"


# -- previous_response_id and tools ------------------------------------------------------


def test_previous_response_id_continues_the_conversation(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["Four."]), Reply(tokens=["Five."]))
    client = _sdk(relay)
    first = client.responses.with_raw_response.create(
        model="fake-model", input="2+2?", instructions="Be brief."
    )
    second = client.responses.with_raw_response.create(
        model="fake-model", input="Plus one?", previous_response_id=first.parse().id
    )
    assert second.parse().previous_response_id == first.parse().id
    assert second.headers[CONVERSATION_HEADER] == first.headers[CONVERSATION_HEADER]
    sent = relay.upstream.requests[-1].body
    assert sent["messages"] == [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "Four."},
        {"role": "user", "content": "Plus one?"},
    ], "the history up to that response; instructions are not carried over"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(
            model="fake-model", input="x", previous_response_id="resp_01ARZ3NDEKTSV4RRFFQ69G5FAV"
        )


async def test_function_tools_stream_arguments_then_take_the_output(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(raw=_tool_call_stream()), Reply(tokens=["Rain in Oslo."]))
    async with _async_sdk(relay) as client:
        stream = await client.responses.create(
            model="fake-model",
            input="Weather in Oslo?",
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
            stream=True,
        )
        events = [event async for event in stream]
        types = [event.type for event in events]
        _check_documented_order(types)
        added = events[2]
        assert added.type == "response.output_item.added"
        assert added.item.type == "function_call" and added.item.name == "get_weather"
        assert added.item.call_id == "call_w1" and added.item.arguments == ""
        deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
        assert deltas == ['{"ci', 'ty": "Os', 'lo"}'], "streamed as they arrived"
        [arguments_done] = [e for e in events if e.type == "response.function_call_arguments.done"]
        assert arguments_done.arguments == '{"city": "Oslo"}'
        response = events[-1].response
        [call] = response.output
        assert call.type == "function_call" and call.status == "completed"
        sent = relay.upstream.requests[-1].body
        assert sent["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "parameters": WEATHER_TOOL["parameters"],
                    "strict": True,
                },
            }
        ]
        assert sent["tool_choice"] == "auto"

        answer = await client.responses.create(
            model="fake-model",
            previous_response_id=response.id,
            input=[{"type": "function_call_output", "call_id": "call_w1", "output": "rain"}],
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
        )
    assert answer.output_text == "Rain in Oslo."
    assert relay.upstream.requests[-1].body["messages"] == [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_w1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_w1", "content": "rain"},
    ]


def test_input_items_map_to_chat_messages(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["ok"]))
    _sdk(relay).responses.create(
        model="fake-model",
        input=[
            {"role": "developer", "content": "Use metric."},
            {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "7 degrees"},
        ],
    )
    assert relay.upstream.requests[-1].body["messages"] == [
        {"role": "developer", "content": "Use metric."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "7 degrees"},
    ]


# -- refused -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["vs"]}]}, "tools[0].type"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"truncation": "auto"}, "truncation"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0]",
        ),
        ({"input": [{"type": "input_file", "file_id": "f"}]}, "input[0].type"),
        ({"text": {"format": {"type": "json_object"}}}, "text.format"),
        ({"background": True, "store": False}, "store"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)
def test_unsupported_parameters_are_a_400_naming_them(
    relay: Relay, fields: dict[str, Any], param: str
) -> None:
    before = len(relay.upstream.requests)
    body: dict[str, Any] = {"model": "fake-model", "input": "hi", **fields}
    with httpx.Client(base_url=relay.url, timeout=10) as http:
        response = http.post(
            "/v1/responses",
            json=body,
            headers={"Authorization": f"Bearer {CLIENT_KEYS['acme']}"},
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["code"] in ("unsupported_parameter", "unknown_parameter", "invalid_field")
    assert param.split("[")[0].split(".")[0] in error["message"] or "support" in error["message"]
    assert len(relay.upstream.requests) == before, "nothing reached the upstream"


def test_sdk_raises_bad_request_and_auth_errors(relay: Relay) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        _sdk(relay).responses.create(
            model="fake-model",
            input="hi",
            tools=[{"type": "web_search"}],  # type: ignore[list-item]
        )
    assert bad.value.param == "tools[0].type" and "web_search" in bad.value.message
    stranger = openai.OpenAI(base_url=relay.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.responses.create(model="fake-model", input="hi")


def test_upstream_failure_before_output_is_an_http_error(relay: Relay) -> None:
    relay.upstream.enqueue(
        Reply(status=429, body=json.dumps({"error": {"message": "slow down"}}).encode())
    )
    relay.upstream.enqueue(
        Reply(status=429, body=json.dumps({"error": {"message": "slow down"}}).encode())
    )
    with pytest.raises(openai.RateLimitError):
        _sdk(relay).responses.create(model="fake-model", input="hi", stream=True)


def test_failure_after_output_ends_the_stream_with_error_then_failed(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["part", "ial"], drop_after=2))
    events = list(_sdk(relay).responses.create(model="fake-model", input="hi", stream=True))
    types = [event.type for event in events]
    assert types[-2:] == ["error", "response.failed"]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "partial"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "server_error" and "upstream" in failed.error.message
    assert failed.output_text == "partial"
    assert events[-2].code == "server_error"


# -- the built-in mock -------------------------------------------------------------------


async def test_builtin_mock_answers_responses_and_calls_tools(stack: Stack) -> None:
    service = stack.service(OPENAI_API_KEY="", OPENAI_BASE_URL="")
    async with openai.AsyncOpenAI(
        base_url=service.base_url + "/v1", api_key=CLIENT_KEYS["acme"], max_retries=0
    ) as client:
        text = await client.responses.create(model="mock", input="hello responses")
        called = await client.responses.create(
            model="mock",
            input="weather?",
            tools=[WEATHER_TOOL],  # type: ignore[list-item]
        )
    assert "hello responses" in text.output_text
    [call] = called.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "example city"}
    assert stack.upstream.requests == []
