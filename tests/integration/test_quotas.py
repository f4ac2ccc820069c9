"""Per-tenant quotas and rate limits, over real sockets: each answers 429 with `Retry-After`
and its own code (OpenAI's shape on the OpenAI routes), refuses before anything is stored,
and lets the tenant in again once the window passes or a slot frees."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import Any

import httpx

from tests.conftest import Stack
from tests.fakes.upstream import Reply
from tests.integration.helpers import new_conversation, post_accepted, wait_final

OPENAI_MESSAGES = [{"role": "user", "content": "hi"}]


def assert_429(response: httpx.Response, code: str, *, openai: bool = False) -> int:
    """The 429 of one limit; returns its `Retry-After` (whole seconds, at least 1)."""
    assert response.status_code == 429, response.text
    retry_after = response.headers["retry-after"]
    assert retry_after.isascii() and retry_after.isdigit() and int(retry_after) >= 1
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    if openai:
        assert set(error) == {"message", "type", "code", "param"}
        assert error["type"] == "rate_limit_error"
    else:
        assert set(response.json()) == {"error"} and set(error) == {"code", "message"}
    return int(retry_after)


async def _until_ok(call: Any, *, within: float = 5.0) -> httpx.Response:
    """Retry `call()` until it is not a 429 (a place frees when the server has seen a client
    leave, which takes a moment); the last response."""
    deadline = time.monotonic() + within
    while True:
        response: httpx.Response = await call()
        if response.status_code != 429 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.05)


async def test_requests_per_minute_refuse_then_recover(stack: Stack) -> None:
    # 30 a minute is one every 2 s, after a burst of 3: the refusals below hold as long as
    # they all come within 2 s of the first request, however loaded the machine.
    service = stack.service(CHATRELAY_RATE_LIMIT_PER_MINUTE="30", CHATRELAY_RATE_LIMIT_BURST="3")
    async with stack.client(service) as acme, stack.client(service, "globex") as globex:
        for _ in range(3):
            assert (await acme.get("/v1/conversations")).status_code == 200
        refused = await acme.get("/v1/conversations")
        retry_after = assert_429(refused, "rate_limited")
        assert retry_after in (1, 2), "the next request is due within 2 s"
        assert_429(await acme.get("/v1/models"), "rate_limited", openai=True)
        created = await acme.post("/v1/conversations", json={"title": "refused"})
        assert_429(created, "rate_limited")

        # Another tenant has a bucket of its own; a wrong key is a 401 (authentication first).
        assert (await globex.get("/v1/conversations")).status_code == 200
        bad = await acme.get("/v1/conversations", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401

        await asyncio.sleep(retry_after)
        listed = await acme.get("/v1/conversations?limit=100")
        assert listed.status_code == 200
        assert "refused" not in [c["title"] for c in listed.json()["data"]], (
            "a refused request stores nothing"
        )


async def test_concurrent_generations_are_capped_per_tenant(stack: Stack) -> None:
    service = stack.service(CHATRELAY_MAX_GENERATIONS_PER_TENANT="2")
    # Each generation takes 2 s: long enough that the refusals below cannot race an end.
    stack.upstream.set_default(Reply(tokens=[f"s{i} " for i in range(40)], delay=0.05))
    async with stack.client(service) as acme, stack.client(service, "globex") as globex:
        cid = await new_conversation(acme)

        async def post(content: str) -> httpx.Response:
            return await acme.post(f"/v1/conversations/{cid}/messages", json={"content": content})

        # Three clients at once: exactly two get a slot.
        answers = await asyncio.gather(post("a"), post("b"), post("c"))
        assert sorted(r.status_code for r in answers) == [202, 202, 429]
        refused = next(r for r in answers if r.status_code == 429)
        assert_429(refused, "too_many_generations")
        running = [r.json()["assistant_message"]["id"] for r in answers if r.status_code == 202]

        # Every path that starts a generation counts: regenerate, edit, the OpenAI route.
        conv = (await acme.get(f"/v1/conversations/{cid}")).json()
        assert len(conv["messages"]) == 4, "the refused post stored nothing"
        user_id = next(m["id"] for m in conv["messages"] if m["role"] == "user")
        edit = await acme.post(f"/v1/messages/{user_id}/edit", json={"content": "x"})
        assert_429(edit, "too_many_generations")
        completion = await acme.post(
            "/v1/chat/completions", json={"model": "m", "messages": OPENAI_MESSAGES}
        )
        assert_429(completion, "too_many_generations", openai=True)
        # Another tenant is not affected.
        other = await new_conversation(globex)
        assert (await post_accepted(globex, other, "mine"))["assistant_message"]

        # A cancelled generation frees its slot at once.
        cancelled = await acme.post(f"/v1/messages/{running[0]}/cancel")
        assert cancelled.status_code == 200
        third = await post("d")
        assert third.status_code == 202, third.text
        assert_429(await post("e"), "too_many_generations")

        # So does one that finishes.
        await wait_final(acme, running[1])
        fourth = await _until_ok(lambda: post("f"))
        assert fourth.status_code == 202, fourth.text
        for posted in (third.json(), fourth.json()):
            await acme.post(f"/v1/messages/{posted['assistant_message']['id']}/cancel")
        assert (await post("g")).status_code == 202


async def test_subscribers_per_message_are_capped(stack: Stack) -> None:
    service = stack.service(CHATRELAY_MAX_SUBSCRIBERS_PER_MESSAGE="2")
    stack.upstream.set_default(Reply(tokens=["slow "] * 60, delay=0.1))
    async with stack.client(service) as client:
        cid = await new_conversation(client)
        posted = await post_accepted(client, cid, "watch me")
        mid = posted["assistant_message"]["id"]
        path = f"/v1/messages/{mid}/events"
        async with AsyncExitStack() as streams:
            for _ in range(2):
                held = await streams.enter_async_context(client.stream("GET", path))
                assert held.status_code == 200
            third = await client.get(path)
            assert_429(third, "too_many_subscribers")
            # The token in stream_url is one more way in, counted the same.
            token_url = posted["stream_url"]
            async with httpx.AsyncClient(base_url=service.base_url) as anonymous:
                assert_429(await anonymous.get(token_url), "too_many_subscribers")
            # Another message is not affected.
            other = await post_accepted(client, cid, "[other]")
            other_mid = other["assistant_message"]["id"]
            async with client.stream("GET", f"/v1/messages/{other_mid}/events") as fine:
                assert fine.status_code == 200

        # Both held streams closed: places free again.
        async def subscribe() -> httpx.Response:
            request = client.build_request("GET", path)
            response = await client.send(request, stream=True)
            if response.status_code == 429:
                await response.aread()
                await response.aclose()
            return response

        again = await _until_ok(subscribe)
        assert again.status_code == 200
        await again.aclose()
        await client.post(f"/v1/messages/{mid}/cancel")
        await client.post(f"/v1/messages/{other_mid}/cancel")


async def test_refused_requests_leave_the_process_healthy(stack: Stack) -> None:
    """Many refusals in a row cost nothing lasting: the slot counts stay right."""
    service = stack.service(
        CHATRELAY_MAX_GENERATIONS_PER_TENANT="1", CHATRELAY_MAX_SUBSCRIBERS_PER_MESSAGE="1"
    )
    stack.upstream.set_default(Reply(tokens=["t "] * 5, delay=0.05))
    async with stack.client(service) as client:
        cid = await new_conversation(client)
        first = await post_accepted(client, cid, "one")
        codes = await asyncio.gather(
            *(
                client.post(f"/v1/conversations/{cid}/messages", json={"content": f"n{i}"})
                for i in range(20)
            )
        )
        assert {r.status_code for r in codes} == {429}
        final = await wait_final(client, first["assistant_message"]["id"])
        assert final["status"] == "completed"
        # Finished: its stream replays from memory or the database, one subscriber at a time.
        events = await _until_ok(lambda: client.get(f"/v1/messages/{final['id']}/events"))
        assert events.status_code == 200 and "event: done" in events.text
        again = await _until_ok(
            lambda: client.post(f"/v1/conversations/{cid}/messages", json={"content": "two"})
        )
        assert again.status_code == 202
        await wait_final(client, again.json()["assistant_message"]["id"])


async def test_the_responses_api_keeps_to_the_same_quotas(stack: Stack) -> None:
    """`/v1/responses` starts generations and follows them like the other routes: the
    generation cap refuses a create before anything is stored, a resumed stream is a
    subscriber, and the rate limit covers it; every refusal in OpenAI's shape."""
    service = stack.service(
        CHATRELAY_MAX_GENERATIONS_PER_TENANT="1", CHATRELAY_MAX_SUBSCRIBERS_PER_MESSAGE="1"
    )
    stack.upstream.set_default(Reply(tokens=["slow "] * 60, delay=0.1))
    async with stack.client(service) as client:
        created = await client.post(
            "/v1/responses", json={"model": "m", "input": "first", "background": True}
        )
        assert created.status_code == 200, created.text
        response_id = created.json()["id"]
        refused = await client.post(
            "/v1/responses", json={"model": "m", "input": "second", "background": True}
        )
        assert_429(refused, "too_many_generations", openai=True)
        listed = (await client.get("/v1/conversations?limit=100")).json()["data"]
        assert len(listed) == 1, "the refused create stored no conversation"

        path = f"/v1/responses/{response_id}?stream=true"
        async with client.stream("GET", path) as held:
            assert held.status_code == 200
            assert_429(await client.get(path), "too_many_subscribers", openai=True)
        cancelled = await client.post(f"/v1/responses/{response_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        # The slot is free again once the generation has ended.
        again = await _until_ok(
            lambda: client.post(
                "/v1/responses", json={"model": "m", "input": "third", "background": True}
            )
        )
        assert again.status_code == 200, again.text
        await client.post(f"/v1/responses/{again.json()['id']}/cancel")

    limited = stack.service(CHATRELAY_RATE_LIMIT_PER_MINUTE="1", CHATRELAY_RATE_LIMIT_BURST="1")
    async with stack.client(limited) as client:
        body = {"model": "m", "input": "hi", "background": True}
        first = await client.post("/v1/responses", json=body)
        assert first.status_code == 200, first.text
        assert_429(await client.post("/v1/responses", json=body), "rate_limited", openai=True)
