"""`x-request-id` on every response, and `CHATRELAY_LOG_FORMAT=json`: every line of the
service's log is a JSON object, one per request and one per generation outcome, with ids
that match the responses, and no prompt, answer, key or token in any of them."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import CLIENT_KEYS, UPSTREAM_KEY, Relay, Stack
from tests.fakes.upstream import Reply
from tests.integration.helpers import new_conversation, post_accepted, wait_final
from tests.integration.scrape import scrape

RELAY_ENV = {"CHATRELAY_LOG_FORMAT": "json"}
POST_ROUTE = "/v1/conversations/{cid}/messages"


def _log_lines(relay_or_path: Any) -> list[dict[str, Any]]:
    """Every line of the service log, each parsed as JSON (a line that is not fails)."""
    text = relay_or_path.read_text(errors="replace")
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            parsed = json.loads(line)
        except ValueError:
            raise AssertionError(f"log line {number} is not JSON: {line!r}") from None
        assert isinstance(parsed, dict), line
        lines.append(parsed)
    return lines


async def _wait_for_lines(path: Any, *wanted: dict[str, Any]) -> list[dict[str, Any]]:
    """The log once a line matching each of `wanted` (a subset of its fields) is in it."""
    deadline = time.monotonic() + 5
    while True:
        lines = _log_lines(path)
        found = [
            next((ln for ln in lines if all(ln.get(k) == v for k, v in want.items())), None)
            for want in wanted
        ]
        if all(f is not None for f in found):
            return [f for f in found if f is not None]
        if time.monotonic() > deadline:
            missing = [w for w, f in zip(wanted, found, strict=True) if f is None]
            raise AssertionError(f"no log line for {missing}")
        await asyncio.sleep(0.05)


# -- x-request-id -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    ["abc-DEF_1.2:3", "r" * 128, "0"],
    ids=["mixed", "128-chars", "one-char"],
)
async def test_a_well_formed_request_id_is_echoed(relay: Relay, given: str) -> None:
    async with relay.client() as client:
        response = await client.get("/v1/conversations", headers={"X-Request-Id": given})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == given


@pytest.mark.parametrize(
    "given",
    ["has space", "r" * 129, "semi;colon", "new\tline", b"caf\xc3\xa9", ""],
    ids=["space", "129-chars", "semicolon", "tab", "non-ascii", "empty"],
)
async def test_a_malformed_request_id_is_replaced(relay: Relay, given: str | bytes) -> None:
    async with relay.client() as client:
        response = await client.get("/v1/conversations", headers={"X-Request-Id": given})
    assert response.status_code == 200
    got = response.headers["x-request-id"]
    assert got != (given.decode("latin-1") if isinstance(given, bytes) else given)
    assert got.startswith("req_") and len(got) == 30
    assert response.headers.get_list("x-request-id") == [got]


async def test_every_kind_of_response_carries_a_request_id(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["a"]), Reply(tokens=["b"]), Reply(tokens=["c"]))
    async with relay.client() as client, httpx.AsyncClient(base_url=relay.url) as anonymous:
        cid = await new_conversation(client)
        responses = {
            "health": await anonymous.get("/healthz"),
            "metrics": await anonymous.get("/metrics"),
            "unknown path": await anonymous.get(f"/nothing/{uuid.uuid4().hex}"),
            "no key": await anonymous.get("/v1/conversations"),
            "405": await client.put("/v1/conversations"),
            "page": await anonymous.get("/"),
            "models": await client.get("/v1/models"),
            "openai 400": await client.post("/v1/chat/completions", json={"model": "m"}),
            "openai 404 route": await client.get("/v1/chat/completions/x"),
            "accepted": await client.post(
                f"/v1/conversations/{cid}/messages", json={"content": "x"}
            ),
        }
        async with client.stream(
            "POST",
            f"/v1/conversations/{cid}/messages",
            json={"content": "y"},
            headers={"Accept": "text/event-stream"},
        ) as stream:
            await stream.aread()
            responses["native stream"] = stream
        async with client.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "z"}]},
        ) as stream:
            await stream.aread()
            responses["openai stream"] = stream
    ids = {}
    for name, response in responses.items():
        assert response.headers.get("x-request-id", "").startswith("req_"), name
        ids[name] = response.headers["x-request-id"]
    assert len(set(ids.values())) == len(ids), "request ids repeat"
    assert responses["native stream"].headers["content-type"].startswith("text/event-stream")
    assert responses["openai stream"].headers["content-type"].startswith("text/event-stream")


async def test_openai_sdk_sees_the_request_id(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["Hi"]))
    client = openai.AsyncOpenAI(
        base_url=relay.url + "/v1", api_key=CLIENT_KEYS["acme"], max_retries=0, timeout=20
    )
    async with client:
        completion = await client.chat.completions.with_raw_response.create(
            model="m",
            messages=[{"role": "user", "content": "hello"}],
            extra_headers={"X-Request-Id": "sdk-call-1"},
        )
        parsed = completion.parse()
    assert completion.headers["x-request-id"] == "sdk-call-1"
    assert parsed._request_id == "sdk-call-1"


# -- JSON logs ------------------------------------------------------------------------------


async def test_json_lines_per_request_and_per_generation(relay: Relay) -> None:
    nonce = uuid.uuid4().hex
    prompt = f"PROMPT-{nonce}"
    answer = [f"ANSWER-{nonce}", " more"]
    relay.upstream.enqueue(
        Reply(tokens=answer, usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
    )
    async with relay.client() as client:
        cid = await new_conversation(client)
        streamed_id = f"stream-{nonce}"
        async with client.stream(
            "POST",
            f"/v1/conversations/{cid}/messages",
            json={"content": prompt},
            headers={"Accept": "text/event-stream", "X-Request-Id": streamed_id},
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["x-request-id"] == streamed_id
            mid = stream.headers["x-message-id"]
            await stream.aread()
        # A stream token is a credential: it must appear nowhere in the log.
        url = (await client.get(f"/v1/messages/{mid}")).json()["stream_url"]
        token = url.partition("?token=")[2]
        async with httpx.AsyncClient(base_url=relay.url) as anonymous:
            replay = await anonymous.get(url, headers={"X-Request-Id": f"replay-{nonce}"})
            assert replay.status_code == 200
            missing = await anonymous.get(f"/v1/messages/{mid}/nope")
            assert missing.status_code == 404
        missing_id = missing.headers["x-request-id"]

    request_line, generation_line, replay_line, missing_line = await _wait_for_lines(
        relay.service.log_path,
        {"event": "request", "request_id": streamed_id},
        {"event": "generation", "message_id": mid},
        {"event": "request", "request_id": f"replay-{nonce}"},
        {"event": "request", "request_id": missing_id},
    )
    assert request_line["tenant"] == "acme"
    assert request_line["route"] == POST_ROUTE and request_line["method"] == "POST"
    assert request_line["path"] == f"/v1/conversations/{cid}/messages"
    assert request_line["status"] == 200 and request_line["stream"] is True
    assert request_line["duration_ms"] >= request_line["ttft_ms"] > 0
    assert request_line["level"] == "info" and request_line["logger"] == "chatrelay.request"

    assert generation_line["request_id"] == streamed_id  # the request that started it
    assert generation_line["tenant"] == "acme" and generation_line["conversation_id"] == cid
    assert generation_line["status"] == "completed" and generation_line["error_code"] is None
    assert generation_line["model"] == "gpt-4o-mini"  # the default: the turn named none
    assert generation_line["prompt_tokens"] == 5 and generation_line["completion_tokens"] == 2
    assert generation_line["events"] == len(answer)
    assert generation_line["duration_ms"] >= generation_line["ttft_ms"] > 0
    assert "prompt" not in generation_line and "answer" not in generation_line

    assert replay_line["route"] == "/v1/messages/{mid}/events" and replay_line["tenant"] == "acme"
    assert "token" not in replay_line["path"]
    assert missing_line["route"] == "unmatched" and missing_line["status"] == 404
    assert missing_line["error_code"] == "not_found"

    text = relay.service.log_path.read_text(errors="replace")
    for secret in (prompt, answer[0], token, UPSTREAM_KEY, *CLIENT_KEYS.values()):
        assert secret not in text, f"{secret[:12]}… reached the log"


async def test_a_failed_generation_logs_its_error_code(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(status=404, body=b'{"error": {"message": "no model"}}'))
    async with relay.client() as client:
        cid = await new_conversation(client)
        response = await client.post(
            f"/v1/conversations/{cid}/messages",
            json={"content": "x"},
            headers={"X-Request-Id": "will-fail"},
        )
        assert response.status_code == 202
        mid = response.json()["assistant_message"]["id"]
        await wait_final(client, mid)
    (line,) = await _wait_for_lines(
        relay.service.log_path, {"event": "generation", "message_id": mid}
    )
    assert line["request_id"] == "will-fail" and line["level"] == "warning"
    assert line["status"] == "failed" and line["error_code"] == "upstream_not_found"
    assert line["ttft_ms"] is None


async def test_log_content_setting_puts_prompt_and_answer_in_the_generation_line(
    stack: Stack,
) -> None:
    service = stack.service(CHATRELAY_LOG_FORMAT="json", CHATRELAY_LOG_CONTENT="1")
    stack.upstream.enqueue(Reply(tokens=["the", " answer"]))
    async with stack.client(service) as client:
        cid = await new_conversation(client)
        posted = await post_accepted(client, cid, "the question")
        mid = posted["assistant_message"]["id"]
        await wait_final(client, mid)
    (line,) = await _wait_for_lines(service.log_path, {"event": "generation", "message_id": mid})
    assert line["prompt"] == "the question" and line["answer"] == "the answer"


async def test_metrics_off_and_metrics_behind_a_token(stack: Stack) -> None:
    token = "metrics-token-0123456789"
    guarded = stack.service(CHATRELAY_METRICS_TOKEN=token)
    off = stack.service(CHATRELAY_METRICS="off")
    async with httpx.AsyncClient(base_url=guarded.base_url) as client:
        refused = await client.get("/metrics")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        got = await scrape(client, Authorization=f"Bearer {token}")
        assert "chatrelay_http_requests" in got.families
        assert got.value("chatrelay_http_requests_total", route="/metrics", status="401") == 2
    async with httpx.AsyncClient(base_url=off.base_url) as client:
        gone = await client.get("/metrics")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    assert token not in guarded.log_path.read_text(errors="replace")
