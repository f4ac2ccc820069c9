"""The built-in mock upstream and the tests' fake upstream, exercised over real sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from chatrelay.mock_upstream import MOCK_MODELS, MockUpstreamServer, mock_answer
from tests.fakes.upstream import FakeUpstream, Reply

PROMPT = "Please explain how server-sent events reconnect after a network drop"


def chat(
    model: str = "mock", *, stream: bool = True, usage: bool = False, text: str = PROMPT
) -> Any:
    body: dict[str, Any] = {
        "model": model,
        "stream": stream,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": text},
        ],
    }
    if usage:
        body["stream_options"] = {"include_usage": True}
    return body


def events(raw: bytes) -> list[Any]:
    """SSE `data:` payloads in order; `[DONE]` stays a string."""
    out: list[Any] = []
    for block in raw.split(b"\n\n"):
        if block.startswith(b"data: "):
            data = block[len(b"data: ") :].decode()
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def content_of(chunks: list[Any]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content", "")
        for c in chunks
        if isinstance(c, dict) and c.get("choices")
    )


async def read_all(client: httpx.AsyncClient, url: str, body: Any) -> tuple[httpx.Response, bytes]:
    async with client.stream("POST", url, json=body) as response:
        raw = b"".join([chunk async for chunk in response.aiter_bytes()])
    return response, raw


@pytest.fixture
async def mock() -> AsyncIterator[str]:
    server = MockUpstreamServer(token_delay=0.0)
    yield await server.start()
    await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as c:
        yield c


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as upstream:
        yield upstream


# --- built-in mock ---------------------------------------------------------------------------


async def test_mock_stream_has_openai_shape(mock: str, client: httpx.AsyncClient) -> None:
    response, raw = await read_all(client, f"{mock}/chat/completions", chat(usage=True))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert raw.endswith(b"data: [DONE]\n\n")
    chunks = events(raw)
    first, *deltas, finish, usage_chunk, done = chunks
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(len(d["choices"][0]["delta"]["content"]) > 0 for d in deltas)
    assert finish["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert all(c["usage"] is None for c in chunks[:-2])
    assert usage_chunk["choices"] == []
    answer = content_of(chunks)
    assert answer == mock_answer(PROMPT)
    assert '"Please explain how server-sent events reconnect…"' in answer
    assert 3 <= answer.count(". ") + 1 <= 5
    assert usage_chunk["usage"] == {
        "prompt_tokens": len(PROMPT.split()) + 2,
        "completion_tokens": len(answer.split()),
        "total_tokens": len(PROMPT.split()) + 2 + len(answer.split()),
    }
    assert done == "[DONE]"
    assert len({c["id"] for c in chunks[:-1]}) == 1


async def test_mock_stream_without_usage_has_no_usage_fields(
    mock: str, client: httpx.AsyncClient
) -> None:
    _, raw = await read_all(client, f"{mock}/chat/completions", chat(text="hi"))
    chunks = events(raw)
    assert all("usage" not in c for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert content_of(chunks) == mock_answer("hi")


def test_mock_answer_is_deterministic_and_quotes_the_message() -> None:
    assert mock_answer("What is the capital of France?") == mock_answer(
        "What is the capital of France?"
    )
    assert '"What is the capital of France?"' in mock_answer("What is the capital of France?")
    assert mock_answer("") != mock_answer("something else")


async def test_mock_non_stream(mock: str, client: httpx.AsyncClient) -> None:
    response = await client.post(f"{mock}/chat/completions", json=chat(stream=False))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == mock_answer(PROMPT)
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == len(mock_answer(PROMPT).split())


async def test_mock_models(mock: str, client: httpx.AsyncClient) -> None:
    body = (await client.get(f"{mock}/models")).json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == MOCK_MODELS
    assert all(m["object"] == "model" for m in body["data"])


async def test_mock_bad_json_is_openai_400(mock: str, client: httpx.AsyncClient) -> None:
    response = await client.post(
        f"{mock}/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_mock_500_and_429(mock: str, client: httpx.AsyncClient) -> None:
    response, raw = await read_all(client, f"{mock}/chat/completions", chat("mock-500"))
    assert response.status_code == 500
    assert json.loads(raw)["error"]["type"] == "server_error"

    response, raw = await read_all(client, f"{mock}/chat/completions", chat("mock-429"))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert json.loads(raw)["error"]["code"] == "rate_limit_exceeded"


async def test_mock_length(mock: str, client: httpx.AsyncClient) -> None:
    _, raw = await read_all(client, f"{mock}/chat/completions", chat("mock-length"))
    chunks = events(raw)
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1] == "[DONE]"
    assert mock_answer(PROMPT).startswith(content_of(chunks))
    assert len(content_of(chunks)) < len(mock_answer(PROMPT))


async def test_mock_error_is_in_band(mock: str, client: httpx.AsyncClient) -> None:
    response, raw = await read_all(client, f"{mock}/chat/completions", chat("mock-error"))
    assert response.status_code == 200
    chunks = events(raw)
    assert chunks[-1]["error"]["type"] == "server_error"
    assert chunks[-1]["error"]["message"]
    assert content_of(chunks)  # a few tokens first
    assert b"[DONE]" not in raw and b'"finish_reason":"stop"' not in raw


@pytest.mark.parametrize("selector", ["model", "marker"])
async def test_mock_drop_closes_without_done(
    mock: str, client: httpx.AsyncClient, selector: str
) -> None:
    body = (
        chat("mock-drop")
        if selector == "model"
        else chat("mock", text=f"tell me a story [[fault:drop]] {PROMPT}")
    )
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", f"{mock}/chat/completions", json=body) as response:
            async for chunk in response.aiter_bytes():
                received += chunk
    assert content_of(events(received))
    assert b"[DONE]" not in received and b'"finish_reason":"' not in received
    assert "[[fault" not in content_of(events(received))


async def test_mock_stall_goes_silent_with_connection_open(
    mock: str, client: httpx.AsyncClient
) -> None:
    async with client.stream(
        "POST", f"{mock}/chat/completions", json=chat("mock-stall")
    ) as response:
        chunks = response.aiter_bytes()
        received = b""
        while received.count(b"data: ") < 4:  # role chunk + 3 tokens
            received += await asyncio.wait_for(chunks.__anext__(), 2.0)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(chunks.__anext__(), 0.3)
    assert b'finish_reason":"' not in received


async def test_mock_slow_spaces_tokens(mock: str, client: httpx.AsyncClient) -> None:
    async with client.stream(
        "POST", f"{mock}/chat/completions", json=chat("mock-slow")
    ) as response:
        chunks = response.aiter_bytes()
        received = await chunks.__anext__()
        started = time.monotonic()
        while received.count(b"data: ") < 2:
            received += await chunks.__anext__()
        assert time.monotonic() - started >= 0.25


async def test_mock_server_stop_is_clean_and_leaves_signals_alone(
    client: httpx.AsyncClient,
) -> None:
    tasks_before = asyncio.all_tasks()
    handlers_before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    uvicorn_levels = [logging.getLogger(n).level for n in ("uvicorn.error", "uvicorn.access")]

    server = MockUpstreamServer(token_delay=0.0)
    url = await server.start()
    assert url == server.base_url and url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    assert {s: signal.getsignal(s) for s in handlers_before} == handlers_before
    assert [logging.getLogger(n).level for n in ("uvicorn.error", "uvicorn.access")] == (
        uvicorn_levels
    )

    # a stalled stream must not hold stop() up
    async def stalled() -> None:
        async with client.stream("POST", f"{url}/chat/completions", json=chat("mock-stall")) as r:
            async for _ in r.aiter_bytes():
                pass

    reader = asyncio.create_task(stalled())
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await server.stop()
    assert time.monotonic() - started < 1.5
    await asyncio.gather(reader, return_exceptions=True)

    assert asyncio.all_tasks() - tasks_before == set()
    assert {s: signal.getsignal(s) for s in handlers_before} == handlers_before
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


# --- fake upstream ---------------------------------------------------------------------------


async def test_fake_records_requests_in_order(
    fake: FakeUpstream, client: httpx.AsyncClient
) -> None:
    fake.enqueue(Reply(tokens=["one"]), Reply(tokens=["two"]))
    url = f"{fake.base_url}/chat/completions"
    texts = []
    for i in range(3):
        body = chat(text=f"message {i}")
        headers = {"authorization": f"Bearer k{i}"}
        async with client.stream("POST", url, json=body, headers=headers) as response:
            texts.append(content_of(events(await response.aread())))
    assert texts == ["one", "two", "Hello, world!"]

    recorded = fake.wait_for_requests(3)
    assert [r.body["messages"][-1]["content"] for r in recorded] == [
        "message 0",
        "message 1",
        "message 2",
    ]
    assert [r.headers["authorization"] for r in recorded] == ["Bearer k0", "Bearer k1", "Bearer k2"]
    assert all(r.method == "POST" and r.path == "/v1/chat/completions" for r in recorded)

    await client.post(url, content=b"not json")
    assert fake.requests[-1].body == "not json"
    models = (await client.get(f"{fake.base_url}/models")).json()
    assert [m["id"] for m in models["data"]] == fake.models
    assert len(fake.requests) == 4  # /models is not a chat completion


async def test_fake_stream_usage_and_non_stream(
    fake: FakeUpstream, client: httpx.AsyncClient
) -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    fake.set_default(Reply(tokens=["a", "b"], usage=usage, finish_reason="length"))
    _, raw = await read_all(client, f"{fake.base_url}/chat/completions", chat(usage=True))
    chunks = events(raw)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-3]["choices"][0]["finish_reason"] == "length"
    assert chunks[-2] == {**chunks[-2], "choices": [], "usage": usage}
    assert all(c["usage"] is None for c in chunks[:-2])
    assert chunks[-1] == "[DONE]"

    response = await client.post(f"{fake.base_url}/chat/completions", json=chat(stream=False))
    assert response.json()["choices"][0]["message"]["content"] == "ab"
    assert response.json()["usage"] == usage


async def test_fake_raw_replay_is_byte_exact(fake: FakeUpstream, client: httpx.AsyncClient) -> None:
    raw = 'data: {"choices":[{"delta":{"content":"é"}}]}\r\n\r\n: comment\n\ndata: [DONE]\n\n'
    fake.enqueue(Reply(raw=raw.encode(), chunk_size=3, delay=0.001))
    _, received = await read_all(client, f"{fake.base_url}/chat/completions", chat())
    assert received == raw.encode()


async def test_fake_stall_then_client_disconnect_is_seen_fast(
    fake: FakeUpstream, client: httpx.AsyncClient
) -> None:
    fake.enqueue(Reply(tokens=["a", "b", "c"], stall_after=2))
    async with client.stream("POST", f"{fake.base_url}/chat/completions", json=chat()) as response:
        received = b""
        async for chunk in response.aiter_bytes():
            received += chunk
            if received.count(b"data: ") == 3:  # role + 2 tokens, then silence
                break
        before_close = time.monotonic()
    closed = time.monotonic()

    noticed = await asyncio.to_thread(fake.wait_for_disconnect, 2.0)
    assert noticed is not None
    assert before_close <= noticed < closed + 1.0
    assert fake.client_disconnects == 1
    assert content_of(events(received)) == "ab"
    assert fake.wait_for_disconnect(timeout=0.05) is None  # already reported


async def test_fake_drop_after_closes_without_done(
    fake: FakeUpstream, client: httpx.AsyncClient
) -> None:
    fake.enqueue(Reply(tokens=["a", "b", "c"], drop_after=2))
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream(
            "POST", f"{fake.base_url}/chat/completions", json=chat()
        ) as response:
            async for chunk in response.aiter_bytes():
                received += chunk
    assert content_of(events(received)) == "ab"
    assert b"[DONE]" not in received and b'finish_reason":"' not in received
    assert fake.client_disconnects == 0  # the server hung up, not the client


async def test_fake_status_error_with_body_and_headers(
    fake: FakeUpstream, client: httpx.AsyncClient
) -> None:
    fake.enqueue(
        Reply(status=429, body=b'{"error":{"message":"slow down"}}', headers={"Retry-After": "7"}),
        Reply(status=503),
    )
    response, raw = await read_all(client, f"{fake.base_url}/chat/completions", chat())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert raw == b'{"error":{"message":"slow down"}}'

    response, raw = await read_all(client, f"{fake.base_url}/chat/completions", chat())
    assert response.status_code == 503
    assert json.loads(raw)["error"]["message"]


def test_fake_is_usable_from_sync_code_and_stops_under_a_stall() -> None:
    upstream = FakeUpstream()
    upstream.start()
    upstream.set_default(Reply(stall_after=0))
    stream = httpx.stream("POST", f"{upstream.base_url}/chat/completions", json=chat(), timeout=5)
    with stream as response:
        assert response.status_code == 200
        started = time.monotonic()
        upstream.stop()  # cuts the stalled stream instead of waiting for it
        assert time.monotonic() - started < 1.5
        with pytest.raises(httpx.HTTPError):
            response.read()
    assert upstream.wait_for_requests(1)[0].body["stream"] is True
