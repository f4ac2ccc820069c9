"""Regenerate and edit: old turns are kept but leave the context; the context fits a budget."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Relay, Stack
from tests.fakes.upstream import Reply
from tests.integration.helpers import new_conversation, post_streaming, wait_final


async def _turn(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
    response = await client.post(path, json=body)
    assert response.status_code == 202, response.text
    posted = response.json()
    await wait_final(client, posted["assistant_message"]["id"])
    return posted


async def test_regenerate_supersedes_and_reuses_history(relay: Relay) -> None:
    relay.upstream.enqueue(
        Reply(tokens=["answer one"]), Reply(tokens=["answer two"]), Reply(tokens=["again"])
    )
    async with relay.client() as client:
        cid = await new_conversation(client, system_prompt="sys")
        _, first = await post_streaming(client, cid, "q1")
        old_id = first[-1].json["message"]["id"]
        before = len(relay.upstream.requests)
        posted = await _turn(client, f"/v1/messages/{old_id}/regenerate", {})
        assert posted["user_message"] is None
        new_id = posted["assistant_message"]["id"]
        request = relay.upstream.requests[before]
        assert request.body["messages"] == [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "q1"},
        ], "regenerate must send the same history, without the old answer"
        conv = (await client.get(f"/v1/conversations/{cid}")).json()
        by_id = {m["id"]: m for m in conv["messages"]}
        assert by_id[old_id]["superseded_by"] == new_id
        assert by_id[old_id]["content"] == "answer one", "the old answer is kept"
        assert by_id[new_id]["content"] == "answer two"
        assert by_id[new_id]["superseded_by"] is None

        # The next turn's context holds only the new answer.
        before = len(relay.upstream.requests)
        await post_streaming(client, cid, "q2")
        contents = [m["content"] for m in relay.upstream.requests[before].body["messages"]]
        assert contents == ["sys", "q1", "answer two", "q2"]

        again = await client.post(f"/v1/messages/{old_id}/regenerate", json={})
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "message_superseded"
        user_id = conv["messages"][0]["id"]
        wrong = await client.post(f"/v1/messages/{user_id}/regenerate", json={})
        assert wrong.status_code == 409


async def test_edit_replaces_user_message_and_later_turns(relay: Relay) -> None:
    relay.upstream.enqueue(
        Reply(tokens=["a1"]), Reply(tokens=["a2"]), Reply(tokens=["edited answer"])
    )
    async with relay.client() as client:
        cid = await new_conversation(client)
        _, t1 = await post_streaming(client, cid, "first")
        await post_streaming(client, cid, "second")
        conv = (await client.get(f"/v1/conversations/{cid}")).json()
        first_user = conv["messages"][0]["id"]
        assert conv["messages"][0]["content"] == "first"

        before = len(relay.upstream.requests)
        posted = await _turn(client, f"/v1/messages/{first_user}/edit", {"content": "first, fixed"})
        assert relay.upstream.requests[before].body["messages"] == [
            {"role": "user", "content": "first, fixed"}
        ], "turns after the edited message leave the context"
        conv = (await client.get(f"/v1/conversations/{cid}")).json()
        superseded = [m["content"] for m in conv["messages"] if m["superseded_by"]]
        active = [m["content"] for m in conv["messages"] if not m["superseded_by"]]
        assert superseded == ["first", "a1", "second", "a2"]
        assert active == ["first, fixed", "edited answer"]
        assert posted["user_message"]["content"] == "first, fixed"

        assistant_id = t1[-1].json["message"]["id"]
        not_user = await client.post(f"/v1/messages/{assistant_id}/edit", json={"content": "x"})
        assert not_user.status_code == 409
        empty = await client.post(f"/v1/messages/{first_user}/edit", json={"content": ""})
        assert empty.status_code == 422


async def test_context_keeps_recent_whole_messages_within_budget(stack: Stack) -> None:
    # ~100 estimated tokens: the system prompt and the newest turns fit, old ones do not.
    service = stack.service(CHATRELAY_CONTEXT_TOKENS="100")
    stack.upstream.set_default(Reply(tokens=["ok " * 20]))
    async with stack.client(service) as client:
        cid = await new_conversation(client, system_prompt="be brief")
        for i in range(6):
            await post_streaming(client, cid, f"question {i} " + "x" * 40)
        last = stack.upstream.requests[-1].body["messages"]
    assert last[0] == {"role": "system", "content": "be brief"}
    assert last[-1]["content"].startswith("question 5 ")
    assert len(last) < 12, "old turns must have been dropped"
    sent_users = [m["content"][:10] for m in last if m["role"] == "user"]
    assert sent_users == sorted(sent_users), "kept messages stay in order"
    for message in last:
        assert message["content"] in ("be brief", "ok " * 20) or message["content"].endswith(
            "x" * 40
        ), "messages are whole, never cut"
