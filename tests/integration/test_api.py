"""The resource API and its errors: every bad input gets the contract's JSON error."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Relay
from tests.fakes.upstream import Reply
from tests.integration.helpers import new_conversation, post_streaming, wait_final

MISSING_CONV = "conv_01ARZ3NDEKTSV4RRFFQ69G5FAV"
MISSING_MSG = "msg_01ARZ3NDEKTSV4RRFFQ69G5FAV"
JSON = {"Content-Type": "application/json"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body


async def test_health_and_readiness(relay: Relay) -> None:
    async with httpx.AsyncClient(base_url=relay.url) as client:
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"


async def test_conversation_crud(relay: Relay) -> None:
    async with relay.client() as client:
        created = await client.post(
            "/v1/conversations",
            json={"title": "T", "system_prompt": "S", "model": "m", "metadata": {"k": [1, 2]}},
        )
        assert created.status_code == 201
        conv = created.json()
        assert {k: conv[k] for k in ("title", "system_prompt", "model", "metadata")} == {
            "title": "T",
            "system_prompt": "S",
            "model": "m",
            "metadata": {"k": [1, 2]},
        }
        assert set(conv) == {
            "id",
            "title",
            "system_prompt",
            "model",
            "metadata",
            "created_at",
            "updated_at",
        }
        got = (await client.get(f"/v1/conversations/{conv['id']}")).json()
        assert got["messages"] == [] and got["id"] == conv["id"]

        deleted = await client.delete(f"/v1/conversations/{conv['id']}")
        assert deleted.status_code == 204
        assert_error(await client.get(f"/v1/conversations/{conv['id']}"), 404, "not_found")
        assert_error(await client.delete(f"/v1/conversations/{conv['id']}"), 404, "not_found")
        listed = (await client.get("/v1/conversations?limit=100")).json()
        assert conv["id"] not in [c["id"] for c in listed["data"]]


async def test_delete_removes_messages_at_once(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["x"]))
    async with relay.client() as client:
        cid = await new_conversation(client)
        _, got = await post_streaming(client, cid, "hello")
        mid = got[-1].json["message"]["id"]
        assert (await client.delete(f"/v1/conversations/{cid}")).status_code == 204
        # Gone everywhere, including the event stream still held in memory for resumes.
        assert_error(await client.get(f"/v1/messages/{mid}"), 404, "not_found")
        assert_error(await client.get(f"/v1/messages/{mid}/events"), 404, "not_found")
        assert_error(await client.post(f"/v1/messages/{mid}/cancel"), 404, "not_found")


async def test_list_is_newest_first_with_cursor_pagination(relay: Relay) -> None:
    # A tenant of its own, so other tests' conversations don't interleave.
    async with relay.client("globex") as client:
        ids = [await new_conversation(client, title=f"c{i}") for i in range(5)]
        page1 = (await client.get("/v1/conversations", params={"limit": 2})).json()
        page2 = (
            await client.get(
                "/v1/conversations", params={"limit": 2, "cursor": page1["next_cursor"]}
            )
        ).json()
        collected = [c["id"] for c in page1["data"]] + [c["id"] for c in page2["data"]]
        cursor = page2["next_cursor"]
        while cursor:
            page = (
                await client.get("/v1/conversations", params={"limit": 2, "cursor": cursor})
            ).json()
            collected += [c["id"] for c in page["data"]]
            cursor = page["next_cursor"]
        default = (await client.get("/v1/conversations")).json()
    assert collected[:5] == list(reversed(ids))
    assert len(collected) == len(set(collected))
    assert len(page1["data"]) == 2 and page1["next_cursor"]
    assert len(default["data"]) <= 20


async def test_tenants_do_not_see_each_other(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["secret"]))
    async with relay.client("acme") as acme, relay.client("globex") as globex:
        cid = await new_conversation(acme, title="acme only")
        _, got = await post_streaming(acme, cid, "mine")
        mid = got[-1].json["message"]["id"]
        assert_error(await globex.get(f"/v1/conversations/{cid}"), 404, "not_found")
        assert_error(await globex.delete(f"/v1/conversations/{cid}"), 404, "not_found")
        assert_error(await globex.get(f"/v1/messages/{mid}"), 404, "not_found")
        assert_error(await globex.get(f"/v1/messages/{mid}/events"), 404, "not_found")
        assert_error(await globex.post(f"/v1/messages/{mid}/cancel"), 404, "not_found")
        assert_error(
            await globex.post(f"/v1/conversations/{cid}/messages", json={"content": "x"}),
            404,
            "not_found",
        )
        listed = (await globex.get("/v1/conversations?limit=100")).json()
        assert cid not in [c["id"] for c in listed["data"]]


async def test_auth_errors(relay: Relay) -> None:
    async with httpx.AsyncClient(base_url=relay.url) as client:
        assert_error(await client.get("/v1/conversations"), 401, "unauthorized")
        wrong = await client.get("/v1/conversations", headers={"Authorization": "Bearer not-a-key"})
        assert_error(wrong, 401, "unauthorized")
        assert "not-a-key" not in wrong.text
        basic = await client.get("/v1/conversations", headers={"Authorization": "Basic abc"})
        assert_error(basic, 401, "unauthorized")


BAD_BODIES = [
    pytest.param(b"{not json", 400, "invalid_json", id="invalid-json"),
    pytest.param(b"[1, 2]", 400, "invalid_json", id="array-body"),
    pytest.param(b"\xff\xfe", 400, "invalid_json", id="not-utf8"),
    pytest.param(b"{}", 422, "missing_field", id="no-content"),
    pytest.param(b'{"content": ""}', 422, "empty_content", id="empty-content"),
    pytest.param(b'{"content": "   "}', 422, "empty_content", id="blank-content"),
    pytest.param(b'{"content": 5}', 422, "invalid_field", id="content-not-string"),
    pytest.param(b'{"content": "x", "colour": 1}', 422, "unknown_field", id="unknown-field"),
    pytest.param(b'{"content": "x", "params": []}', 422, "invalid_field", id="params-not-object"),
    pytest.param(
        b'{"content": "x", "params": {"messages": []}}', 422, "invalid_field", id="params-reserved"
    ),
    pytest.param(
        b'{"content": "x", "cancel_on_disconnect": "yes"}', 422, "invalid_field", id="bool-field"
    ),
    pytest.param(b'{"content": "x", "model": 3}', 422, "invalid_field", id="model-not-string"),
    pytest.param(b'{"content": "x", "model": " "}', 422, "invalid_field", id="model-blank"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_BODIES)
async def test_bad_message_bodies(relay: Relay, body: bytes, status: int, code: str) -> None:
    async with relay.client() as client:
        cid = await new_conversation(client)
        before = len(relay.upstream.requests)
        response = await client.post(
            f"/v1/conversations/{cid}/messages",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert_error(response, status, code)
        conv = (await client.get(f"/v1/conversations/{cid}")).json()
    assert conv["messages"] == [], "a rejected post must store nothing"
    assert len(relay.upstream.requests) == before


async def test_oversized_bodies_get_413(relay: Relay) -> None:
    big = b'{"content": "' + b"a" * (1024 * 1024 + 10) + b'"}'
    async with relay.client() as client:
        cid = await new_conversation(client)
        declared = await client.post(f"/v1/conversations/{cid}/messages", content=big)
        assert_error(declared, 413, "payload_too_large")

        async def chunked():  # type: ignore[no-untyped-def]
            for start in range(0, len(big), 65536):
                yield big[start : start + 65536]

        undeclared = await client.post(f"/v1/conversations/{cid}/messages", content=chunked())
        assert_error(undeclared, 413, "payload_too_large")
        too_long = await client.post(
            f"/v1/conversations/{cid}/messages", json={"content": "b" * 200_001}
        )
        assert_error(too_long, 422, "too_long")


async def test_bad_conversation_bodies(relay: Relay) -> None:
    async with relay.client() as client:
        for body, code in [
            ({"title": 3}, "invalid_field"),
            ({"metadata": "x"}, "invalid_field"),
            ({"system_prompt": ["a"]}, "invalid_field"),
            ({"titel": "typo"}, "unknown_field"),
            ({"model": ""}, "invalid_field"),
        ]:
            assert_error(await client.post("/v1/conversations", json=body), 422, code)
        empty = await client.post("/v1/conversations")
        assert empty.status_code == 201, "an empty body creates an untitled conversation"


async def test_unknown_ids_and_routes(relay: Relay) -> None:
    async with relay.client() as client:
        for path in (
            f"/v1/conversations/{MISSING_CONV}",
            "/v1/conversations/not-an-id",
            f"/v1/messages/{MISSING_MSG}",
            "/v1/messages/%00%01",
            f"/v1/messages/{MISSING_MSG}/events",
            "/nothing-here",
        ):
            assert_error(await client.get(path), 404, "not_found")
        # Other /v1/ paths are ones an OpenAI-compatible client might call: OpenAI's shape.
        unknown = await client.get("/v1/nothing-here")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_url"
        assert_error(
            await client.post(f"/v1/conversations/{MISSING_CONV}/messages", json={"content": "x"}),
            404,
            "not_found",
        )
        assert_error(await client.post(f"/v1/messages/{MISSING_MSG}/cancel"), 404, "not_found")
        assert_error(await client.put("/v1/conversations"), 405, "method_not_allowed")


async def test_bad_query_parameters(relay: Relay) -> None:
    async with relay.client() as client:
        for params, code in [
            ({"limit": "0"}, "invalid_query"),
            ({"limit": "101"}, "invalid_query"),
            ({"limit": "ten"}, "invalid_query"),
            ({"cursor": "garbage"}, "invalid_cursor"),
        ]:
            assert_error(await client.get("/v1/conversations", params=params), 400, code)


async def test_get_message_shape(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["shape"]))
    async with relay.client() as client:
        cid = await new_conversation(client)
        _, got = await post_streaming(client, cid, "q")
        message = (await client.get(f"/v1/messages/{got[-1].json['message']['id']}")).json()
    for key in (
        "id",
        "conversation_id",
        "role",
        "content",
        "status",
        "finish_reason",
        "model",
        "usage",
        "error",
        "created_at",
        "completed_at",
    ):
        assert key in message
    assert message["conversation_id"] == cid and message["role"] == "assistant"


async def test_nul_characters_are_stored_as_replacement(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["a\x00b", "c"]))
    async with relay.client() as client:
        created = await client.post("/v1/conversations", json={"title": "t\x00itle"})
        assert created.json()["title"] == "t\ufffditle", "the 201 shows what was stored"
        cid = created.json()["id"]
        _, got = await post_streaming(client, cid, "nul \x00 inside")
        conv = (await client.get(f"/v1/conversations/{cid}")).json()
    streamed = "".join(f.json["content"] for f in got if f.event == "delta")
    assert streamed == "a\ufffdbc"
    assert conv["title"] == "t\ufffditle"
    assert [m["content"] for m in conv["messages"]] == ["nul \ufffd inside", "a\ufffdbc"]
    assert conv["messages"][1]["status"] == "completed"


async def test_deeply_nested_json_is_a_400(relay: Relay) -> None:
    body = b'{"content": "x", "params": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    async with relay.client() as client:
        cid = await new_conversation(client)
        response = await client.post(
            f"/v1/conversations/{cid}/messages", content=body, headers=JSON
        )
    assert_error(response, 400, "invalid_json")


async def test_lone_surrogate_escapes_are_a_400(relay: Relay) -> None:
    async with relay.client() as client:
        created = await client.post(
            "/v1/conversations", content=b'{"title": "\\ud800"}', headers=JSON
        )
        assert_error(created, 400, "invalid_json")
        cid = await new_conversation(client)
        posted = await client.post(
            f"/v1/conversations/{cid}/messages", content=b'{"content": "a\\udfffb"}', headers=JSON
        )
        assert_error(posted, 400, "invalid_json")
        paired = await client.post(
            f"/v1/conversations/{cid}/messages",
            content=b'{"content": "ok \\ud83d\\udc4b"}',
            headers=JSON,
        )
        assert paired.status_code == 202, "a proper surrogate pair is fine"
        await wait_final(client, paired.json()["assistant_message"]["id"])
