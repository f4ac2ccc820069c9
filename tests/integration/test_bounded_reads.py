"""Size caps on what a client stores, and reads bounded whatever was stored: list `limit`s,
pages cut at `CHATRELAY_MAX_PAGE_BYTES`, the conversation read's newest messages, and
`GET /v1/conversations/{cid}/messages` paging through all of them exactly once."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import Relay
from tests.fakes.upstream import Reply
from tests.integration.helpers import new_conversation, post_accepted, wait_final

PAGE_BYTES = 4096
RELAY_ENV = {
    "CHATRELAY_MAX_TITLE_CHARS": "20",
    "CHATRELAY_MAX_METADATA_BYTES": "1000",
    "CHATRELAY_MAX_METADATA_DEPTH": "3",
    "CHATRELAY_MAX_PARAMS_BYTES": "100",
    "CHATRELAY_MAX_PAGE_BYTES": str(PAGE_BYTES),
    "CHATRELAY_MAX_CONVERSATION_MESSAGES": "5",
    "CHATRELAY_CONTEXT_TOKENS": "500",
}


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text


def compact(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


async def _titles(client: httpx.AsyncClient, prefix: str) -> list[str]:
    listed = await client.get("/v1/conversations?limit=100")
    assert listed.status_code == 200
    return [c["title"] for c in listed.json()["data"] if (c["title"] or "").startswith(prefix)]


async def test_metadata_title_and_params_are_capped(relay: Relay) -> None:
    tag = uuid.uuid4().hex[:6]
    async with relay.client() as client:
        # Exactly at the cap is fine (bytes of the stored, compact JSON: "é" is two).
        fits = {"k": "é" * 10}
        fits["k"] += "x" * (1000 - compact(fits))
        assert compact(fits) == 1000
        ok = await client.post("/v1/conversations", json={"title": tag, "metadata": fits})
        assert ok.status_code == 201 and ok.json()["metadata"] == fits
        over = {"k": fits["k"] + "x"}
        refused = await client.post(
            "/v1/conversations", json={"title": tag + "!", "metadata": over}
        )
        assert_error(refused, 422, "too_large")

        deep_ok = {"a": {"b": {"c": 1}}}
        assert (
            await client.post("/v1/conversations", json={"metadata": deep_ok})
        ).status_code == 201
        too_deep = {"a": {"b": {"c": [1]}}}
        assert_error(
            await client.post("/v1/conversations", json={"title": tag + "!", "metadata": too_deep}),
            422,
            "too_deep",
        )
        assert_error(
            await client.post("/v1/conversations", json={"title": tag + "!" + "t" * 20}),
            422,
            "too_long",
        )
        assert (await client.post("/v1/conversations", json={"title": "t" * 20})).status_code == 201
        assert await _titles(client, tag) == [tag], "refused conversations are not stored"

        cid = await new_conversation(client)
        big = {"params": {"temperature": 0.5, "user": "u" * 100}}
        assert_error(
            await client.post(f"/v1/conversations/{cid}/messages", json={"content": "hi", **big}),
            422,
            "too_large",
        )
        conversation = (await client.get(f"/v1/conversations/{cid}")).json()
        assert conversation["messages"] == [], "a refused post stores nothing"
        relay.upstream.enqueue(Reply(tokens=["fine"]))
        posted = await post_accepted(client, cid, "hi", params={"temperature": 0.5})
        mid = posted["assistant_message"]["id"]
        await wait_final(client, mid)
        assert_error(
            await client.post(f"/v1/messages/{mid}/regenerate", json=big), 422, "too_large"
        )


async def test_list_limit_is_capped(relay: Relay) -> None:
    async with relay.client() as client:
        assert_error(await client.get("/v1/conversations?limit=101"), 400, "invalid_query")
        assert_error(await client.get("/v1/conversations?limit=0"), 400, "invalid_query")
        cid = await new_conversation(client)
        for bad in ("101", "0", "-1", "x", "²"):
            assert_error(
                await client.get(f"/v1/conversations/{cid}/messages", params={"limit": bad}),
                400,
                "invalid_query",
            )


async def test_list_pages_stop_at_the_byte_bound(relay: Relay) -> None:
    """Each conversation carries ~900 bytes of metadata: a page of `limit=10` holds only what
    fits in 4 KiB, and the cursor walk still returns every conversation exactly once."""
    tag = uuid.uuid4().hex[:6]
    async with relay.client("globex") as client:
        made = []
        for i in range(9):
            body = {"title": f"{tag}-{i}", "metadata": {"pad": "p" * 900}}
            response = await client.post("/v1/conversations", json=body)
            assert response.status_code == 201
            made.append(response.json()["id"])
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 10}
            if cursor:
                params["cursor"] = cursor
            response = await client.get("/v1/conversations", params=params)
            assert response.status_code == 200
            assert len(response.content) <= PAGE_BYTES + 100  # the envelope's few bytes
            page = response.json()
            assert page["data"], "every page makes progress"
            seen += [c["id"] for c in page["data"] if c["title"].startswith(tag)]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == made[::-1], "newest first, each exactly once"
        assert pages >= 3, "a 4 KiB page holds at most four of these"


async def test_conversation_read_is_bounded_to_the_newest_messages(relay: Relay) -> None:
    relay.upstream.set_default(Reply(tokens=["answer"]))
    async with relay.client() as client:
        small = await new_conversation(client)
        posted = await post_accepted(client, small, "one")
        await wait_final(client, posted["assistant_message"]["id"])
        read = (await client.get(f"/v1/conversations/{small}")).json()
        assert [m["content"] for m in read["messages"]] == ["one", "answer"]
        assert read["messages_truncated"] is False

        cid = await new_conversation(client)
        for i in range(4):
            posted = await post_accepted(client, cid, f"q{i}")
            await wait_final(client, posted["assistant_message"]["id"])
        read = (await client.get(f"/v1/conversations/{cid}")).json()
        assert read["messages_truncated"] is True
        assert [m["content"] for m in read["messages"]] == [
            "answer",
            "q2",
            "answer",
            "q3",
            "answer",
        ], "the newest five, in order"
        assert read["id"] == cid and "metadata" in read


async def _walk(client: httpx.AsyncClient, cid: str, limit: int, during: Any = None) -> list[Any]:
    seen: list[Any] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get(f"/v1/conversations/{cid}/messages", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"data", "next_cursor"}
        assert len(page["data"]) <= limit
        seen += page["data"]
        if during is not None and len(seen) >= limit:
            await during()
            during = None
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


async def test_messages_pagination_walks_every_message_once_in_order(relay: Relay) -> None:
    # 30 messages recorded at once through the OpenAI route, then a native turn.
    request = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i:02d}"} for i in range(29)
    ]
    relay.upstream.set_default(Reply(tokens=["answer"]))
    async with relay.client() as client:
        completion = await client.post(
            "/v1/chat/completions", json={"model": "m", "messages": request}
        )
        assert completion.status_code == 200, completion.text
        cid = completion.headers["x-chatrelay-conversation-id"]
        expected = [m["content"] for m in request] + ["answer"]

        async def add_a_turn() -> None:
            posted = await post_accepted(client, cid, "added while paging")
            await wait_final(client, posted["assistant_message"]["id"])

        seen = await _walk(client, cid, 7, during=add_a_turn)
        assert [m["content"] for m in seen] == [*expected, "added while paging", "answer"]
        assert len({m["id"] for m in seen}) == len(seen), "no message twice"
        assert all(m["conversation_id"] == cid for m in seen)
        # Any page size gives the same sequence; the default page holds them all.
        assert [m["id"] for m in await _walk(client, cid, 1)] == [m["id"] for m in seen]
        assert [m["id"] for m in await _walk(client, cid, 100)] == [m["id"] for m in seen]

        path = f"/v1/conversations/{cid}/messages"
        for bad in ("x", "-1", "²", "1e3", " 5", "99999999999"):
            assert_error(await client.get(path, params={"cursor": bad}), 400, "invalid_cursor")
    async with relay.client("globex") as other:
        assert_error(await other.get(path), 404, "not_found")
        assert_error(
            await other.get("/v1/conversations/conv_01ARZ3NDEKTSV4RRFFQ69G5FAV/messages"),
            404,
            "not_found",
        )


@pytest.mark.parametrize("size", [PAGE_BYTES * 2])
async def test_a_message_larger_than_a_page_still_pages(relay: Relay, size: int) -> None:
    """One item over the byte bound goes alone in its page: progress, never an empty page."""
    relay.upstream.enqueue(Reply(tokens=["a" * size]), Reply(tokens=["b"]))
    async with relay.client() as client:
        cid = await new_conversation(client)
        for text in ("first", "second"):
            posted = await post_accepted(client, cid, text)
            await wait_final(client, posted["assistant_message"]["id"])
        seen = await _walk(client, cid, 100)
        assert [m["content"][:1] for m in seen] == ["f", "a", "s", "b"]
        read = (await client.get(f"/v1/conversations/{cid}")).json()
        assert read["messages_truncated"] is True, "the read stops at the byte bound too"
        assert [m["content"] for m in read["messages"]] == ["second", "b"]


async def test_a_turn_in_a_long_conversation_sends_only_its_budget(relay: Relay) -> None:
    """2,000 recorded messages, then a native turn: the upstream gets the newest messages
    that fit 500 estimated tokens, in order, ending with the question (the rows read for it
    are counted in tests/unit/generation/test_context_reads.py)."""
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"h{i:04d} " + "w" * 30}
        for i in range(1999)
    ]
    relay.upstream.set_default(Reply(tokens=["ok"]))
    async with relay.client() as client:
        completion = await client.post(
            "/v1/chat/completions", json={"model": "m", "messages": history}
        )
        assert completion.status_code == 200, completion.text
        cid = completion.headers["x-chatrelay-conversation-id"]
        before = len(relay.upstream.requests)
        posted = await post_accepted(client, cid, "the question")
        await wait_final(client, posted["assistant_message"]["id"])
        sent = relay.upstream.requests[before].body["messages"]
    assert sent[-1] == {"role": "user", "content": "the question"}
    assert sent[-2] == {"role": "assistant", "content": "ok"}
    assert 10 < len(sent) < 60, len(sent)
    older = [m["content"][:5] for m in sent[:-2]]
    assert older == [f"h{i:04d}" for i in range(1999 - len(older), 1999)], "newest, in order"
