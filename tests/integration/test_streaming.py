"""The core flow over real sockets: post, stream, record — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import httpx

from tests.conftest import UPSTREAM_KEY, Relay
from tests.fakes.sse_client import collect, content_of, events, frames
from tests.fakes.upstream import Reply
from tests.integration.helpers import (
    new_conversation,
    post_accepted,
    post_streaming,
    stored_row,
    wait_final,
)

TOKENS = ["Hel", "lo", ",", " wörld", " 👋", "!\n", "Line two", " ends."]


async def test_deltas_concatenate_to_done_and_stored_content(relay: Relay) -> None:
    relay.upstream.enqueue(
        Reply(tokens=TOKENS, usage={"prompt_tokens": 7, "completion_tokens": 8, "total_tokens": 15})
    )
    async with relay.client() as client:
        cid = await new_conversation(client, title="stream")
        response, frames_ = await post_streaming(client, cid, "Say hello")
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        # `retry:` leads the first event's block: a block of its own would be an empty
        # `message` event to parsers such as httpx-sse.
        assert frames_[0].retry == 2000 and frames_[0].event == "start"
        assert all(f.event is not None or f.comments for f in frames_), "no empty blocks"

        evs = events(frames_)
        assert [e.event for e in evs] == ["start"] + ["delta"] * len(TOKENS) + ["done"]
        ids = [int(e.id or "0") for e in evs]
        assert ids == sorted(ids) and len(set(ids)) == len(ids), "ids must increase"
        assert evs[0].json["message"]["status"] == "streaming"

        streamed = content_of(frames_)
        done = evs[-1].json["message"]
        stored = (await client.get(f"/v1/messages/{done['id']}")).json()
        assert streamed == "".join(TOKENS)
        assert done["content"] == streamed
        assert stored["content"] == streamed
        assert stored["status"] == done["status"] == "completed"
        assert stored["finish_reason"] == "stop"
        assert stored["usage"] == {"prompt_tokens": 7, "completion_tokens": 8, "total_tokens": 15}
        assert stored["completed_at"] is not None
        # The API answers from memory while the final write is pending: the row itself must
        # already be final when `done` is sent (it goes out after the write).
        row = await stored_row(relay.database_url, done["id"])
        assert (row["status"], row["content"], row["finish_reason"]) == (
            "completed",
            streamed,
            "stop",
        )
        assert row["usage"] == stored["usage"] and row["completed_at"] is not None

    request = relay.upstream.requests[-1]
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


async def test_accepted_flow_through_stream_url(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["a", "b", "c"], delay=0.02))
    async with relay.client() as client:
        cid = await new_conversation(client)
        posted = await post_accepted(client, cid, "hi")
    assert posted["user_message"]["role"] == "user"
    assert posted["user_message"]["content"] == "hi"
    assert posted["assistant_message"]["status"] == "streaming"
    stream_url = posted["stream_url"]
    assert "token=" in stream_url

    # A browser cannot set headers: the signed URL alone must open the stream.
    async with httpx.AsyncClient(base_url=relay.url, timeout=20) as anonymous:
        async with anonymous.stream("GET", stream_url) as response:
            assert response.status_code == 200
            got = await collect(response)
        assert content_of(got) == "abc"
        assert events(got)[-1].event == "done"
        # ...and only that stream: the token is no key for anything else.
        other = await anonymous.get(f"/v1/messages/{posted['assistant_message']['id']}")
        assert other.status_code == 401
        tampered = stream_url[:-2] + ("AA" if not stream_url.endswith("AA") else "BB")
        assert (await anonymous.get(tampered)).status_code == 401


async def test_client_disconnect_does_not_stop_generation(relay: Relay) -> None:
    tokens = [f"t{i} " for i in range(30)]
    relay.upstream.enqueue(Reply(tokens=tokens, delay=0.03))
    disconnects_before = relay.upstream.client_disconnects
    async with relay.client() as client:
        cid = await new_conversation(client)
        async with client.stream(
            "POST",
            f"/v1/conversations/{cid}/messages",
            json={"content": "go"},
            headers={"Accept": "text/event-stream"},
        ) as response:
            seen = 0
            mid = None
            async for frame in frames(response):
                if frame.event == "start":
                    mid = frame.json["message"]["id"]
                if frame.event == "delta":
                    seen += 1
                    if seen == 3:
                        break  # leave mid-stream: the connection closes here
        assert mid is not None
        final = await wait_final(client, mid)
    assert final["status"] == "completed"
    assert final["content"] == "".join(tokens)
    assert relay.upstream.client_disconnects == disconnects_before, "upstream read was cut"


async def test_two_subscribers_get_identical_events(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=[f"w{i} " for i in range(20)], delay=0.02))
    async with relay.client() as client:
        cid = await new_conversation(client)
        posted = await post_accepted(client, cid, "two")
        mid = posted["assistant_message"]["id"]

        async def subscribe() -> list[tuple[str | None, str | None, str | None]]:
            async with client.stream("GET", f"/v1/messages/{mid}/events") as response:
                assert response.status_code == 200
                return [(f.event, f.id, f.data) for f in events(await collect(response))]

        first, second = await asyncio.gather(subscribe(), subscribe())
        late = await subscribe()  # after the end: the whole sequence, from start
    assert first == second == late
    assert first[0][0] == "start" and first[-1][0] == "done"
    assert "".join(json.loads(d or "{}")["content"] for e, _, d in first if e == "delta") == (
        "".join(f"w{i} " for i in range(20))
    )


async def test_upstream_receives_history_in_order(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["first answer"]), Reply(tokens=["second answer"]))
    async with relay.client() as client:
        cid = await new_conversation(client, system_prompt="You are terse.", model="model-x")
        await post_streaming(client, cid, "question one")
        before = len(relay.upstream.requests)
        await post_streaming(client, cid, "question two", params={"temperature": 0.2})
    request = relay.upstream.requests[before]
    assert request.body["model"] == "model-x"
    assert request.body["temperature"] == 0.2
    assert request.body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "question one"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "question two"},
    ]


async def test_conversation_lists_messages_in_order(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["one"]), Reply(tokens=["two"]))
    async with relay.client() as client:
        cid = await new_conversation(client)
        await post_streaming(client, cid, "q1")
        await post_streaming(client, cid, "q2")
        body = (await client.get(f"/v1/conversations/{cid}")).json()
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("user", "q1"),
        ("assistant", "one"),
        ("user", "q2"),
        ("assistant", "two"),
    ]


async def test_concurrent_posts_to_one_conversation_get_distinct_order(relay: Relay) -> None:
    relay.upstream.set_default(Reply(tokens=["ok"]))
    async with relay.client() as client:
        cid = await new_conversation(client)
        posted = await asyncio.gather(*(post_accepted(client, cid, f"m{i}") for i in range(8)))
        for p in posted:
            await wait_final(client, p["assistant_message"]["id"])
        body = (await client.get(f"/v1/conversations/{cid}")).json()
    roles = [m["role"] for m in body["messages"]]
    assert len(roles) == 16
    assert roles == ["user", "assistant"] * 8  # each exchange stays adjacent
    user_contents = sorted(m["content"] for m in body["messages"] if m["role"] == "user")
    assert user_contents == sorted(f"m{i}" for i in range(8))
    relay.upstream.set_default(Reply())


async def test_upstream_error_is_recorded_as_failed(relay: Relay) -> None:
    relay.upstream.enqueue(
        Reply(
            status=401,
            body=json.dumps(
                {"error": {"message": f"Incorrect API key provided: {UPSTREAM_KEY}"}}
            ).encode(),
            headers={"content-type": "application/json"},
        )
    )
    async with relay.client() as client:
        cid = await new_conversation(client)
        _, got = await post_streaming(client, cid, "fail please")
    terminal = events(got)[-1]
    assert terminal.event == "error"
    assert terminal.json["error"]["code"] == "upstream_auth_failed"
    assert terminal.json["message"]["status"] == "failed"
    assert UPSTREAM_KEY not in (terminal.data or ""), "the upstream key leaked to a client"
    assert UPSTREAM_KEY not in relay.service.log(), "the upstream key leaked to the log"


async def test_truncated_upstream_keeps_partial_text(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["part", "ial"], drop_after=2, delay=0.01))
    async with relay.client() as client:
        cid = await new_conversation(client)
        _, got = await post_streaming(client, cid, "drop")
        mid = events(got)[0].json["message"]["id"]
        stored = await wait_final(client, mid)
    assert events(got)[-1].event == "error"
    assert stored["status"] == "failed"
    assert stored["content"] == "partial"
    assert stored["error"]["code"] in {"upstream_truncated", "upstream_connection_lost"}
