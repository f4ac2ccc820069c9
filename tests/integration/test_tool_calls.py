"""Tool calls streamed as they arrive: `tool_call` events on the native stream, the same
events replayed from the database by another process, and the built-in mock's tool calls."""

from __future__ import annotations

import json
from typing import Any

import openai

from tests.conftest import CLIENT_KEYS, Relay, Stack
from tests.fakes.sse_client import collect, events
from tests.fakes.upstream import Reply, chunk_frame
from tests.integration.helpers import wait_final

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer"},
                },
                "required": ["city"],
            },
        },
    }
]


def _call_stream() -> bytes:
    def call(index: int, arguments: str, call_id: str | None = None) -> bytes:
        item: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
        if call_id is not None:
            item.update(id=call_id, type="function")
            item["function"]["name"] = "get_weather"
        return chunk_frame({"tool_calls": [item]})

    return b"".join(
        [
            chunk_frame({"role": "assistant", "content": None}),
            call(0, "", "call_1"),
            call(0, '{"city":'),
            call(0, ' "Oslo"}'),
            call(1, '{"city": "Rome"}', "call_2"),
            chunk_frame({}, "tool_calls"),
            b"data: [DONE]\n\n",
        ]
    )


async def test_native_stream_has_tool_call_events_replayed_from_storage_alike(
    relay: Relay,
) -> None:
    relay.upstream.enqueue(Reply(raw=_call_stream()))
    sdk = openai.AsyncOpenAI(base_url=relay.url + "/v1", api_key=CLIENT_KEYS["acme"], max_retries=0)
    async with sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="fake-model",
            messages=[{"role": "user", "content": "Oslo and Rome?"}],
            tools=TOOLS,  # type: ignore[arg-type]
        )
    mid = raw.headers["x-chatrelay-message-id"]
    async with relay.client() as client:
        final = await wait_final(client, mid)
        async with client.stream("GET", f"/v1/messages/{mid}/events") as response:
            here = events(await collect(response))
    assert final["tool_calls"][1]["function"]["arguments"] == '{"city": "Rome"}'
    tool_events = [(f.id, f.json) for f in here if f.event == "tool_call"]
    assert [data for _, data in tool_events] == [
        {"index": 0, "id": "call_1", "type": "function", "name": "get_weather"},
        {"index": 0, "arguments": '{"city":'},
        {"index": 0, "arguments": ' "Oslo"}'},
        {"index": 1, "id": "call_2", "type": "function", "name": "get_weather"},
        {"index": 1, "arguments": '{"city": "Rome"}'},
    ]
    assert here[0].event == "start" and here[-1].event == "done"

    second = relay.second_service()  # no topic there: the log is rebuilt from the row
    try:
        second.start()
        async with relay.client(service=second) as other:
            async with other.stream("GET", f"/v1/messages/{mid}/events") as response:
                there = events(await collect(response))
            async with other.stream(
                "GET", f"/v1/messages/{mid}/events", headers={"Last-Event-ID": "3"}
            ) as response:
                resumed = events(await collect(response))
    finally:
        second.terminate()
    assert [(f.event, f.id, f.json) for f in there] == [(f.event, f.id, f.json) for f in here]
    assert [(f.id, f.json) for f in resumed] == [(f.id, f.json) for f in here[3:]]


async def test_builtin_mock_calls_tools_then_answers_the_result(stack: Stack) -> None:
    service = stack.service(OPENAI_API_KEY="", OPENAI_BASE_URL="")
    async with openai.AsyncOpenAI(
        base_url=service.base_url + "/v1", api_key=CLIENT_KEYS["acme"], max_retries=0
    ) as client:
        question: Any = {"role": "user", "content": "What is the weather in Oslo?"}
        stream = await client.chat.completions.create(
            model="mock",
            messages=[question],
            tools=TOOLS,
            stream=True,  # type: ignore[arg-type]
        )
        chunks = [chunk async for chunk in stream]
        deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
        assert chunks[0].choices[0].delta.content is None
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        assert deltas[0].id and deltas[0].function and deltas[0].function.name == "get_weather"
        pieces = [d.function.arguments for d in deltas[1:] if d.function]
        assert len(pieces) >= 3, "the arguments stream in several pieces"
        arguments = json.loads("".join(p or "" for p in pieces))
        assert arguments == {"city": "example city", "unit": "celsius", "days": 1}

        again = await client.chat.completions.create(
            model="mock",
            messages=[question],
            tools=TOOLS,  # type: ignore[arg-type]
        )
        [call] = again.choices[0].message.tool_calls or []
        assert call.id == deltas[0].id, "deterministic in the request"
        assert again.choices[0].message.content is None

        result = await client.chat.completions.create(
            model="mock",
            messages=[
                question,
                {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                {"role": "tool", "tool_call_id": call.id, "content": "rain, 7 degrees"},
            ],
            tools=TOOLS,  # type: ignore[arg-type]
        )
    assert result.choices[0].finish_reason == "stop"
    assert "rain, 7 degrees" in (result.choices[0].message.content or "")
    assert stack.upstream.requests == [], "the fake upstream was not used"
