"""The HTTP edge against hostile pages and clients: media types, redirects, HEAD, access logs.

A page on another origin can send `text/plain`, form-encoded or multipart posts without a
CORS preflight, so every JSON endpoint refuses any other declared type (415) and stores
nothing; a body-less post needs no type.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.conftest import CLIENT_KEYS, Relay
from tests.fakes.upstream import Reply
from tests.integration.helpers import new_conversation, post_accepted, wait_final
from tests.integration.test_api import assert_error

AUTH = {"Authorization": f"Bearer {CLIENT_KEYS['acme']}"}
# The content types a cross-site form or `fetch` may send without a preflight, and none.
NOT_JSON = [
    pytest.param("text/plain", id="text-plain"),
    pytest.param("text/plain; charset=utf-8", id="text-plain-charset"),
    pytest.param("application/x-www-form-urlencoded", id="form"),
    pytest.param("multipart/form-data; boundary=x", id="multipart"),
    pytest.param(None, id="missing"),
]


def _headers(content_type: str | None) -> dict[str, str]:
    return {} if content_type is None else {"Content-Type": content_type}


async def _conversation_ids(client: httpx.AsyncClient) -> list[str]:
    listed = await client.get("/v1/conversations?limit=100")
    assert listed.status_code == 200, listed.text
    return [c["id"] for c in listed.json()["data"]]


async def _messages(client: httpx.AsyncClient, cid: str) -> list[Any]:
    got = await client.get(f"/v1/conversations/{cid}")
    assert got.status_code == 200, got.text
    messages: list[Any] = got.json()["messages"]
    return messages


@pytest.mark.parametrize("content_type", NOT_JSON)
async def test_native_posts_with_a_non_json_body_are_415_and_store_nothing(
    relay: Relay, content_type: str | None
) -> None:
    relay.upstream.enqueue(Reply(tokens=["first"]))
    async with relay.client("globex") as client:
        cid = await new_conversation(client)
        posted = await post_accepted(client, cid, "hello")
        user_id = posted["user_message"]["id"]
        assistant_id = posted["assistant_message"]["id"]
        await wait_final(client, assistant_id)
        conversations = await _conversation_ids(client)
        messages = await _messages(client, cid)
        upstream_calls = len(relay.upstream.requests)
        headers = _headers(content_type)

        attempts = [
            ("/v1/conversations", b'{"title": "cross-site"}'),
            (f"/v1/conversations/{cid}/messages", b'{"content": "cross-site"}'),
            (f"/v1/messages/{assistant_id}/regenerate", b'{"model": "m"}'),
            (f"/v1/messages/{user_id}/edit", b'{"content": "cross-site"}'),
        ]
        for path, body in attempts:
            response = await client.post(path, content=body, headers=headers)
            error = assert_error(response, 415, "unsupported_media_type")
            assert "application/json" in error["error"]["message"]

        assert await _conversation_ids(client) == conversations
        assert await _messages(client, cid) == messages
    assert len(relay.upstream.requests) == upstream_calls


@pytest.mark.parametrize("content_type", NOT_JSON)
async def test_chat_completions_with_a_non_json_body_are_415_in_openai_shape(
    relay: Relay, content_type: str | None
) -> None:
    body = b'{"model": "m", "messages": [{"role": "user", "content": "cross-site"}]}'
    async with relay.client("globex") as client:
        conversations = await _conversation_ids(client)
        upstream_calls = len(relay.upstream.requests)
        response = await client.post(
            "/v1/chat/completions", content=body, headers=_headers(content_type)
        )
        assert response.status_code == 415, response.text
        error = response.json()["error"]
        assert set(response.json()) == {"error"}
        assert set(error) == {"message", "type", "code", "param"}
        assert error["code"] == "unsupported_media_type"
        assert error["type"] == "invalid_request_error"
        assert await _conversation_ids(client) == conversations
    assert len(relay.upstream.requests) == upstream_calls


async def test_a_chunked_non_json_body_is_415(relay: Relay) -> None:
    async def chunks() -> Any:
        yield b'{"title": '
        yield b'"chunked"}'

    async with relay.client("globex") as client:
        conversations = await _conversation_ids(client)
        response = await client.post(
            "/v1/conversations", content=chunks(), headers={"Content-Type": "text/plain"}
        )
        assert_error(response, 415, "unsupported_media_type")
        assert await _conversation_ids(client) == conversations


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/json ;"]
)
async def test_json_with_parameters_or_any_case_is_accepted(
    relay: Relay, content_type: str
) -> None:
    relay.upstream.enqueue(Reply(tokens=["ok"]))
    async with relay.client() as client:
        created = await client.post(
            "/v1/conversations", content=b'{"title": "t"}', headers={"Content-Type": content_type}
        )
        assert created.status_code == 201, created.text
        cid = created.json()["id"]
        posted = await client.post(
            f"/v1/conversations/{cid}/messages",
            content=b'{"content": "hi"}',
            headers={"Content-Type": content_type},
        )
        assert posted.status_code == 202, posted.text
        await wait_final(client, posted.json()["assistant_message"]["id"])


async def test_body_less_posts_need_no_content_type(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["one"]), Reply(tokens=["two"]))
    async with relay.client() as client:
        cid = await new_conversation(client)
        first = (await post_accepted(client, cid, "hi"))["assistant_message"]["id"]
        await wait_final(client, first)
        # No body at all, and an empty one under a type a page could send: both fine.
        regenerated = await client.post(f"/v1/messages/{first}/regenerate")
        assert regenerated.status_code == 202, regenerated.text
        second = regenerated.json()["assistant_message"]["id"]
        await wait_final(client, second)
        cancelled = await client.post(
            f"/v1/messages/{second}/cancel", content=b"", headers={"Content-Type": "text/plain"}
        )
        assert_error(cancelled, 409, "message_finished")
        created = await client.post("/v1/conversations", headers={"Content-Type": "text/plain"})
        assert created.status_code == 201, created.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/conversations/"),
        ("POST", "/v1/conversations/"),
        ("GET", "/healthz/"),
        ("GET", "/v1/models/"),
        ("GET", "/static/app.js/"),
    ],
)
async def test_a_trailing_slash_is_a_json_404_that_never_reflects_host(
    relay: Relay, method: str, path: str
) -> None:
    async with relay.client() as client:
        response = await client.request(
            method,
            path,
            headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"},
            json={} if method == "POST" else None,
        )
    assert "location" not in response.headers
    assert "evil.example" not in response.text
    assert_error(response, 404, "not_found")


async def _raw_request(
    relay: Relay, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request over a raw socket with `Connection: close`: status, headers and every
    byte the server sent after them, read until it closes (or 5 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.service.port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{relay.service.port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines += ["Connection: close", "", ""]
    writer.write("\r\n".join(lines).encode())
    await writer.drain()
    try:
        raw = await asyncio.wait_for(reader.read(-1), 5)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, body


async def test_head_answers_like_get_without_a_body(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["x"]))
    async with relay.client() as client:
        cid = await new_conversation(client)
        mid = (await post_accepted(client, cid, "hi"))["assistant_message"]["id"]
        await wait_final(client, mid)
        paths = [
            "/healthz",
            "/readyz",
            "/v1/conversations",
            f"/v1/conversations/{cid}",
            f"/v1/messages/{mid}",
            "/v1/models",
            "/",
        ]
        for path in paths:
            got = await client.get(path)
            assert got.status_code == 200, (path, got.text)
            status, headers, body = await _raw_request(relay, "HEAD", path, AUTH)
            assert status == 200, path
            assert body == b"", path
            assert headers["content-type"] == got.headers["content-type"], path
            assert int(headers["content-length"]) > 0, path
        # A HEAD on a POST-only route is still a 405, in each API's shape.
        status, headers, _ = await _raw_request(relay, "HEAD", "/v1/chat/completions", AUTH)
        assert status == 405 and headers["allow"] == "POST"


async def test_head_on_an_event_stream_opens_no_stream(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=[f"t{i} " for i in range(10)], delay=0.2))
    async with relay.client() as client:
        cid = await new_conversation(client)
        posted = await post_accepted(client, cid, "slow")
        mid = posted["assistant_message"]["id"]
        # While it streams: headers only, and the connection closes at once (a stream
        # would hold it open for the 2 s the generation still runs, and send frames).
        status, headers, body = await _raw_request(
            relay, "HEAD", f"/v1/messages/{mid}/events", AUTH
        )
        assert status == 200
        assert headers["content-type"].startswith("text/event-stream")
        assert body == b""
        status, _, body = await _raw_request(relay, "HEAD", posted["stream_url"])
        assert status == 200 and body == b""
        still = (await client.get(f"/v1/messages/{mid}")).json()
        assert still["status"] == "streaming"
        final = await wait_final(client, mid)
    assert final["status"] == "completed" and final["content"] == "".join(
        f"t{i} " for i in range(10)
    )


async def test_stream_tokens_never_reach_the_access_log(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["logged"]))
    async with relay.client() as client:
        cid = await new_conversation(client)
        posted = await post_accepted(client, cid, "hi")
        mid = posted["assistant_message"]["id"]
        await wait_final(client, mid)
        stream_url = posted["stream_url"]
        fresh_url = (await client.get(f"/v1/messages/{mid}")).json()["stream_url"]
    tokens = [url.partition("?token=")[2] for url in (stream_url, fresh_url)]
    assert all(tokens)
    async with httpx.AsyncClient(base_url=relay.url) as anonymous:
        streamed = await anonymous.get(stream_url)
        assert streamed.status_code == 200 and "event: done" in streamed.text
        resumed = await anonymous.get(fresh_url + "&last_event_id=1")
        assert resumed.status_code == 200
        # A name spelt differently is still the token the app reads, and still redacted.
        encoded = await anonymous.get(f"/v1/messages/{mid}/events?%74oken={tokens[0]}")
        assert encoded.status_code == 200
    expected = f'"GET /v1/messages/{mid}/events?token=[redacted]&last_event_id=1 HTTP/1.1" 200'
    deadline = asyncio.get_running_loop().time() + 5
    log = relay.service.log_path.read_text(errors="replace")
    while expected not in log and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        log = relay.service.log_path.read_text(errors="replace")
    assert expected in log
    assert f'"GET /v1/messages/{mid}/events?%74oken=[redacted] HTTP/1.1" 200' in log
    for token in tokens:
        assert token not in log


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="request-line"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", id="header"),
        pytest.param(b"GET /healthz\x00 HTTP/1.1\r\nHost: x\r\n\r\n", id="nul-in-target"),
        pytest.param(b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n", id="version"),
    ],
)
async def test_malformed_http_is_a_json_400_and_the_service_stays_up(
    relay: Relay, raw: bytes
) -> None:
    # Answered below the app, by web/http_protocol.py, in the JSON error shape.
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.service.port)
    writer.write(raw)
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(-1), 5)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"]["code"] == "bad_request"
    async with httpx.AsyncClient(base_url=relay.url) as client:
        assert (await client.get("/healthz")).status_code == 200
