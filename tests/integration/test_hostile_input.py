"""Input a careless or hostile client can send: a clear 4xx, nothing stored that reads break.

Each case was a 500 once (and the non-finite numbers also left a row behind that made every
later read of the tenant's conversations fail).
"""

from __future__ import annotations

import base64
import sqlite3

import asyncpg
import httpx
import pytest

from tests.conftest import Relay
from tests.fakes.upstream import Reply, chunk_frame
from tests.integration.helpers import new_conversation, post_accepted, wait_final
from tests.integration.test_api import assert_error

NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"]
JSON = {"Content-Type": "application/json"}


async def _conversation_count(client: httpx.AsyncClient) -> int:
    listed = await client.get("/v1/conversations?limit=100")
    assert listed.status_code == 200, listed.text
    return len(listed.json()["data"])


@pytest.mark.parametrize("number", NON_FINITE)
async def test_non_finite_numbers_are_refused_and_nothing_is_stored(
    relay: Relay, number: str
) -> None:
    async with relay.client(tenant="globex") as client:
        before = await _conversation_count(client)
        body = '{"title": "t", "metadata": {"x": ' + number + "}}"
        response = await client.post("/v1/conversations", content=body, headers=JSON)
        assert_error(response, 400, "invalid_json")
        assert (
            number.lstrip("-") in response.json()["error"]["message"]
            or "number" in (response.json()["error"]["message"])
        )
        assert await _conversation_count(client) == before

        cid = await new_conversation(client)
        post = await client.post(
            f"/v1/conversations/{cid}/messages",
            content='{"content": "hi", "params": {"temperature": ' + number + "}}",
            headers=JSON,
        )
        assert_error(post, 400, "invalid_json")
        conversation = await client.get(f"/v1/conversations/{cid}")
        assert conversation.status_code == 200 and conversation.json()["messages"] == []


@pytest.mark.parametrize("number", ["NaN", "1e999"])
async def test_non_finite_numbers_on_chat_completions_are_a_400_in_openai_shape(
    relay: Relay, number: str
) -> None:
    requests_before = len(relay.upstream.requests)
    async with relay.client() as client:
        response = await client.post(
            "/v1/chat/completions",
            content='{"model": "m", "temperature": '
            + number
            + ', "messages": [{"role": "user", "content": "hi"}]}',
            headers=JSON,
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_json"
    assert len(relay.upstream.requests) == requests_before  # nothing went upstream


async def test_duplicate_keys_are_refused(relay: Relay) -> None:
    async with relay.client() as client:
        response = await client.post(
            "/v1/conversations", content='{"title": "a", "title": "b"}', headers=JSON
        )
    body = assert_error(response, 400, "invalid_json")
    assert "duplicate key 'title'" in body["error"]["message"]


async def _corrupt(relay: Relay, sql: str, *args: str) -> None:
    """Write a row as an older version could have left it (bypassing the service)."""
    if relay.backend == "sqlite":
        path = relay.database_url.removeprefix("sqlite:///")
        with sqlite3.connect(path, timeout=10) as conn:
            conn.execute(sql.replace("$1", "?").replace("$2", "?"), args)
        return
    conn = await asyncpg.connect(relay.database_url, timeout=5)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def test_rows_left_with_non_finite_numbers_still_read_and_delete(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["ok"], usage={"prompt_tokens": 1, "completion_tokens": 1}))
    async with relay.client() as client:
        cid = await new_conversation(client, title="legacy", metadata={"x": 1})
        posted = await post_accepted(client, cid, "hello")
        mid = posted["assistant_message"]["id"]
        await wait_final(client, mid)
        await _corrupt(
            relay,
            "UPDATE conversations SET metadata = $1 WHERE id = $2",
            '{"x": NaN, "y": [Infinity, 2]}',
            cid,
        )
        await _corrupt(
            relay,
            "UPDATE messages SET usage = $1 WHERE id = $2",
            '{"prompt_tokens": NaN, "completion_tokens": -Infinity}',
            mid,
        )
        listed = await client.get("/v1/conversations?limit=100")
        assert listed.status_code == 200, listed.text
        mine = next(c for c in listed.json()["data"] if c["id"] == cid)
        assert mine["metadata"] == {"x": None, "y": [None, 2]}
        got = await client.get(f"/v1/conversations/{cid}")
        assert got.status_code == 200, got.text
        assert got.json()["messages"][1]["usage"] == {
            "prompt_tokens": None,
            "completion_tokens": None,
        }
        assert (await client.get(f"/v1/messages/{mid}")).status_code == 200
        events = await client.get(f"/v1/messages/{mid}/events")
        assert events.status_code == 200 and "event: done" in events.text
        assert (await client.delete(f"/v1/conversations/{cid}")).status_code == 204


async def test_non_finite_numbers_from_the_upstream_are_stored_as_null(relay: Relay) -> None:
    # Python's json would read NaN here and store it; the message must stay servable.
    raw = (
        chunk_frame({"role": "assistant", "content": "a"})
        + b'data: {"choices":[{"index":0,"delta":{"content":"b"},"logprobs":{"x":NaN},'
        b'"finish_reason":"stop"}],"usage":{"prompt_tokens":NaN,"completion_tokens":2,'
        b'"total_tokens":Infinity}}\n\n' + b"data: [DONE]\n\n"
    )
    relay.upstream.enqueue(Reply(raw=raw))
    async with relay.client() as client:
        cid = await new_conversation(client)
        mid = (await post_accepted(client, cid, "hi"))["assistant_message"]["id"]
        final = await wait_final(client, mid)
        assert final["status"] == "completed" and final["content"] == "ab"
        assert final["usage"]["completion_tokens"] == 2
        assert final["usage"]["prompt_tokens"] is None
        assert (await client.get(f"/v1/conversations/{cid}")).status_code == 200


def _token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "abc%C3%A9def",  # non-ASCII after percent-decoding
        _token(b"9999999999.acme." + "é".encode() * 16),  # non-ASCII MAC
        _token("²³.acme.0123456789abcdef0123456789abcdef".encode()),  # Unicode digits
        _token(b"\xff\xfe.acme.x"),  # not UTF-8
        "a" * 5000,
    ],
)
async def test_malformed_stream_tokens_are_401(relay: Relay, token: str) -> None:
    async with relay.client() as client:
        cid = await new_conversation(client)
        relay.upstream.enqueue(Reply(tokens=["x"]))
        mid = (await post_accepted(client, cid, "hi"))["assistant_message"]["id"]
    async with httpx.AsyncClient(base_url=relay.url) as anonymous:
        response = await anonymous.get(f"/v1/messages/{mid}/events?token={token}")
    assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize("cursor", ["²", "①", "\u0661\u0662", "1_0", "+1", "0x1"])
async def test_non_ascii_digit_cursors_are_400(relay: Relay, cursor: str) -> None:
    relay.upstream.enqueue(Reply(tokens=["x"]))
    async with relay.client() as client:
        cid = await new_conversation(client)
        mid = (await post_accepted(client, cid, "hi"))["assistant_message"]["id"]
        await wait_final(client, mid)
        by_header = await client.get(
            f"/v1/messages/{mid}/events", headers={"Last-Event-ID": cursor.encode()}
        )
        assert_error(by_header, 400, "invalid_cursor")
        by_query = await client.get(f"/v1/messages/{mid}/events", params={"last_event_id": cursor})
        assert_error(by_query, 400, "invalid_cursor")


@pytest.mark.parametrize("limit", [" 5", "%205", "\u0665", "1_0", "+5"])
async def test_list_limit_takes_ascii_digits_only(relay: Relay, limit: str) -> None:
    async with relay.client() as client:
        response = await client.get(f"/v1/conversations?limit={limit}")
    assert_error(response, 400, "invalid_query")
