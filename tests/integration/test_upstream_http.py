"""The upstream over real HTTP: error mapping, retries, timeouts, usage.

chatrelay runs as a real process and talks to the fake upstream (a real server) through its
ordinary httpx client, so status lines, broken connections and silent sockets are the real
thing. Every failure must end the assistant message `failed` with its own `error.code`, the
same error in the SSE `error` event, the partial text kept, and the upstream key nowhere a
client or the log could see it.

What is tested here happens between chatrelay and its upstream; the message it ends with is
recorded by the same code on either database, which the storage suites run on both. So this
module runs on SQLite only (`BACKENDS`).
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import json
import socket
import time
from collections.abc import Iterator
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from chatrelay.errors import UpstreamTimeout
from chatrelay.upstream.client import UpstreamClient, UpstreamConfig
from chatrelay.upstream.http_errors import parse_retry_after
from chatrelay.upstream.redact import redact
from tests.conftest import UPSTREAM_KEY, Relay, Stack
from tests.fakes.service import ServiceProcess
from tests.fakes.sse_client import Frame, content_of, events
from tests.fakes.upstream import FakeUpstream, RecordedRequest, Reply, chunk_frame
from tests.integration.helpers import new_conversation, post_streaming, wait_final

BACKENDS = ("sqlite",)

MAX_RETRIES = 1
RETRY_BUDGET = 10.0
RELAY_ENV = {
    "CHATRELAY_UPSTREAM_MAX_RETRIES": str(MAX_RETRIES),
    "CHATRELAY_UPSTREAM_RETRY_BUDGET": str(RETRY_BUDGET),
}

# The forms in which an upstream echoes a key: whole, cut short, masked the way OpenAI does.
KEY_PREFIX = UPSTREAM_KEY[:20]  # "sk-test-UPSTREAM-SEC"
KEY_MASKED = UPSTREAM_KEY[:8] + "*" * 20 + UPSTREAM_KEY[-4:]
KEY_TRACES = (UPSTREAM_KEY, KEY_PREFIX, UPSTREAM_KEY[-12:], UPSTREAM_KEY[8:24])


def json_body(message: str, **fields: Any) -> bytes:
    return json.dumps({"error": {"message": message, **fields}}).encode()


def full_log(service: ServiceProcess) -> str:
    """The whole service log (`ServiceProcess.log()` keeps only the tail)."""
    return service.log_path.read_text(errors="replace")


@dataclass
class Exchange:
    frames: list[Frame]
    stored: dict[str, Any]
    requests: list[RecordedRequest]
    elapsed: float

    @property
    def terminal(self) -> Frame:
        return events(self.frames)[-1]

    @property
    def content(self) -> str:
        return content_of(self.frames)


async def exchange(
    client: httpx.AsyncClient, upstream: FakeUpstream, *replies: Reply, content: str = "hi"
) -> Exchange:
    """Enqueue the replies, post one message reading its stream, return what happened."""
    before = len(upstream.requests)
    upstream.enqueue(*replies)
    cid = await new_conversation(client)
    started = time.monotonic()
    _, frames = await post_streaming(client, cid, content)
    elapsed = time.monotonic() - started
    mid = events(frames)[0].json["message"]["id"]
    stored = await wait_final(client, mid)
    return Exchange(frames, stored, upstream.requests[before:], elapsed)


def assert_failed(got: Exchange, code: str) -> dict[str, Any]:
    """Failed with `code`, in the stored message and the SSE `error` event alike."""
    terminal = got.terminal
    assert terminal.event == "error", f"expected an error event, got {terminal.event}"
    assert got.stored["status"] == "failed"
    assert got.stored["error"]["code"] == code, got.stored["error"]
    assert terminal.json["error"] == got.stored["error"]
    assert terminal.json["message"]["status"] == "failed"
    assert got.stored["content"] == got.content, "partial text not kept"
    error: dict[str, Any] = got.stored["error"]
    return error


def assert_no_key(*texts: str) -> None:
    for text in texts:
        for trace in KEY_TRACES:
            assert trace not in text, f"a piece of the upstream key leaked: {trace!r}"


# -- 1. non-2xx answers -------------------------------------------------------------------

CLOUDFLARE_PAGE = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway | example.com</title></head>"
    b"<body><h1>Bad gateway</h1>" + b"<p>filler</p>" * 400 + b"</body></html>"
)
LONG_TEXT = ("x" * 500 + f" leaked {UPSTREAM_KEY} " + "y" * 500).encode()


@dataclass(frozen=True)
class HttpCase:
    status: int
    body: bytes
    content_type: str
    code: str
    says: str  # the message must contain this
    requests: int  # upstream requests made (retries included)
    headers: tuple[tuple[str, str], ...] = ()


HTTP_CASES = {
    "401-json-echoing-key": HttpCase(
        401,
        json_body(f"Incorrect API key provided: {UPSTREAM_KEY}.", code="invalid_api_key"),
        "application/json",
        "upstream_auth_failed",
        "Incorrect API key provided",
        1,
    ),
    "401-json-masked-key": HttpCase(
        401,
        json_body(f"Incorrect API key provided: {KEY_MASKED}. You can find your API key at x."),
        "application/json",
        "upstream_auth_failed",
        "You can find your API key",
        1,
    ),
    "403-json-key-prefix": HttpCase(
        403,
        json_body(f"key {KEY_PREFIX}… may not use this model", type="permission_error"),
        "application/json",
        "upstream_auth_failed",
        "may not use this model",
        1,
    ),
    "404-json": HttpCase(
        404,
        json_body("The model `gpt-9` does not exist", code="model_not_found"),
        "application/json",
        "upstream_not_found",
        "The model `gpt-9` does not exist",
        1,
    ),
    "400-json": HttpCase(
        400,
        json_body("maximum context length is 8192 tokens", type="invalid_request_error"),
        "application/json",
        "upstream_bad_request",
        "maximum context length is 8192 tokens",
        1,
    ),
    "422-detail-json": HttpCase(
        422,
        json.dumps({"detail": "temperature must be <= 2"}).encode(),
        "application/json",
        "upstream_bad_request",
        "temperature must be <= 2",
        1,
    ),
    "400-long-text-with-key": HttpCase(
        400, LONG_TEXT, "text/plain", "upstream_bad_request", "xxxxxxxx", 1
    ),
    "429-insufficient-quota": HttpCase(
        429,
        json_body("You exceeded your current quota", type="insufficient_quota"),
        "application/json",
        "upstream_rate_limited",
        "You exceeded your current quota",
        1,  # billing, not a burst: waiting would not help, so no retry
    ),
    "500-json": HttpCase(
        500,
        json_body("The server had an error processing your request", type="server_error"),
        "application/json",
        "upstream_unavailable",
        "The server had an error processing your request",
        1 + MAX_RETRIES,
    ),
    "502-html": HttpCase(
        502,
        CLOUDFLARE_PAGE,
        "text/html",
        "upstream_unavailable",
        "502 Bad Gateway",
        1 + MAX_RETRIES,
    ),
    "503-empty": HttpCase(
        503, b"", "text/plain", "upstream_unavailable", "empty body", 1 + MAX_RETRIES
    ),
    "307-redirect": HttpCase(
        307,
        b"",
        "text/plain",
        "upstream_not_found",
        "redirected to https://elsewhere.example/v1",
        1,
        (("location", "https://elsewhere.example/v1/chat/completions"),),
    ),
}


@pytest.mark.parametrize("case", list(HTTP_CASES.values()), ids=list(HTTP_CASES))
async def test_non_2xx_answer_maps_to_its_code(relay: Relay, case: HttpCase) -> None:
    reply = Reply(
        status=case.status,
        body=case.body,
        headers={"content-type": case.content_type, **dict(case.headers)},
    )
    async with relay.client() as client:
        got = await exchange(client, relay.upstream, *[reply] * case.requests)
    error = assert_failed(got, case.code)
    assert f"HTTP {case.status}" in error["message"]
    assert case.says in error["message"], error["message"]
    assert len(error["message"]) < 500, "the upstream's message must be shortened"
    assert len(got.requests) == case.requests, "wrong number of upstream requests"
    assert got.stored["content"] == ""
    assert_no_key(got.terminal.data or "", json.dumps(got.stored), full_log(relay.service))
    assert_no_key(relay.service.log())


async def test_html_body_is_summarised_not_relayed(relay: Relay) -> None:
    reply = Reply(status=400, body=CLOUDFLARE_PAGE, headers={"content-type": "text/html"})
    async with relay.client() as client:
        got = await exchange(client, relay.upstream, reply)
    error = assert_failed(got, "upstream_bad_request")
    assert "an HTML page (502 Bad Gateway | example.com)" in error["message"]
    assert "<" not in error["message"] and "filler" not in error["message"]


# -- 2. retries ---------------------------------------------------------------------------


async def request_times(upstream: FakeUpstream, first: int, n: int) -> list[tuple[float, float]]:
    """When requests `first+1` … `first+n` reached the upstream: (monotonic, wall clock)."""
    times = []
    for i in range(1, n + 1):
        await asyncio.to_thread(upstream.wait_for_requests, first + i, 15.0)
        times.append((time.monotonic(), time.time()))
    return times


async def test_500_then_200_is_retried_and_completes(relay: Relay) -> None:
    async with relay.client() as client:
        got = await exchange(
            client, relay.upstream, Reply(status=500), Reply(tokens=["second ", "try"])
        )
    assert got.terminal.event == "done"
    assert got.stored["status"] == "completed"
    assert got.stored["content"] == got.content == "second try"
    assert len(got.requests) == 2
    assert got.requests[0].body == got.requests[1].body, "a retry must resend the same request"


async def test_429_retry_waits_for_retry_after_seconds(relay: Relay) -> None:
    first = len(relay.upstream.requests)
    async with relay.client() as client:
        got, times = await asyncio.gather(
            exchange(
                client,
                relay.upstream,
                Reply(status=429, headers={"Retry-After": "1"}),
                Reply(tokens=["after ", "waiting"]),
            ),
            request_times(relay.upstream, first, 2),
        )
    assert got.stored["status"] == "completed"
    assert got.stored["content"] == "after waiting"
    assert len(got.requests) == 2
    gap = times[1][0] - times[0][0]
    # Backoff alone would wait at most 0.375 s before the first retry.
    assert gap >= 0.9, f"retried after {gap:.3f}s"


async def test_429_retry_after_as_http_date(relay: Relay) -> None:
    when = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    first = len(relay.upstream.requests)
    async with relay.client() as client:
        got, times = await asyncio.gather(
            exchange(
                client,
                relay.upstream,
                Reply(status=429, headers={"Retry-After": email.utils.format_datetime(when, True)}),
                Reply(tokens=["dated"]),
            ),
            request_times(relay.upstream, first, 2),
        )
    assert got.stored["status"] == "completed"
    assert len(got.requests) == 2
    # The date, as seen when the 429 went out, was this far ahead (about 2 to 3 s).
    asked = when.timestamp() - times[0][1]
    assert asked > 1.0, "the test itself was too slow to tell a date from backoff"
    gap = times[1][0] - times[0][0]
    assert gap >= asked - 0.1, f"retried after {gap:.3f}s, the date asked for {asked:.3f}s"


async def test_retry_after_beyond_the_budget_fails_at_once(relay: Relay) -> None:
    reply = Reply(status=429, headers={"Retry-After": str(int(RETRY_BUDGET) * 6)})
    async with relay.client() as client:
        got = await exchange(client, relay.upstream, reply)
    error = assert_failed(got, "upstream_rate_limited")
    assert len(got.requests) == 1
    assert got.elapsed < RETRY_BUDGET / 2, "waited although the wait could not fit the budget"
    assert "HTTP 429" in error["message"]


async def test_drop_after_tokens_is_not_retried(relay: Relay) -> None:
    reply = Reply(tokens=["part", "ial", " never"], drop_after=2, delay=0.01)
    async with relay.client() as client:
        got = await exchange(client, relay.upstream, reply)
    assert_failed(got, "upstream_connection_lost")
    assert got.stored["content"] == "partial"
    assert len(got.requests) == 1, "a retry after output would duplicate text"


async def test_drop_before_any_token_is_retried(relay: Relay) -> None:
    # The role chunk (empty content) arrives, then the connection breaks: nothing visible
    # reached a subscriber yet, so the retry is safe.
    async with relay.client() as client:
        got = await exchange(
            client, relay.upstream, Reply(drop_after=0), Reply(tokens=["clean ", "answer"])
        )
    assert got.stored["status"] == "completed"
    assert got.stored["content"] == "clean answer"
    assert len(got.requests) == 2


async def test_in_band_server_error_before_output_is_retried(relay: Relay) -> None:
    error = {"error": {"message": "The server is overloaded", "type": "server_error"}}
    raw = b"data: " + json.dumps(error).encode() + b"\n\n"
    async with relay.client() as client:
        got = await exchange(client, relay.upstream, Reply(raw=raw), Reply(tokens=["fine"]))
    assert got.stored["status"] == "completed"
    assert got.stored["content"] == "fine"
    assert len(got.requests) == 2


async def test_in_band_error_with_key_is_redacted(relay: Relay) -> None:
    raw = (
        chunk_frame({"role": "assistant", "content": "Some"})
        + b'data: {"error": {"message": "token '
        + UPSTREAM_KEY.encode()
        + b' rejected mid-stream"}}\n\n'
    )
    async with relay.client() as client:
        got = await exchange(client, relay.upstream, Reply(raw=raw))
    error = assert_failed(got, "upstream_error")
    assert "rejected mid-stream" in error["message"]
    assert got.stored["content"] == "Some"
    assert len(got.requests) == 1
    assert_no_key(got.terminal.data or "", json.dumps(got.stored), full_log(relay.service))


async def test_retries_exhausted_fail_with_the_last_error(relay: Relay) -> None:
    replies = [
        Reply(status=500, body=json_body("first failure")),
        Reply(status=503, body=json_body("second failure")),
    ]
    assert len(replies) == 1 + MAX_RETRIES
    async with relay.client() as client:
        got = await exchange(client, relay.upstream, *replies)
    error = assert_failed(got, "upstream_unavailable")
    assert "HTTP 503" in error["message"] and "second failure" in error["message"]
    assert "first failure" not in error["message"]
    assert "after 2 attempts" in error["message"]
    assert len(got.requests) == 2


# -- fidelity on 2xx answers ----------------------------------------------------------------


async def test_upstream_connections_are_reused_across_streams(relay: Relay) -> None:
    # 12 streams one after another need one connection, if each connection goes back to
    # the pool after `[DONE]` (the body's end read, not dropped).
    async with relay.client() as client:
        got = [await exchange(client, relay.upstream, Reply(tokens=["a", "b"])) for _ in range(12)]
    assert [(g.stored["status"], g.stored["error"]) for g in got] == [("completed", None)] * 12
    peers = {request.client for g in got for request in g.requests}
    assert None not in peers
    assert len(peers) == 1, f"{len(peers)} upstream connections for 12 sequential streams"


async def test_finish_reason_then_broken_connection_completes(relay: Relay) -> None:
    raw = (
        chunk_frame({"role": "assistant", "content": "All "})
        + chunk_frame({"content": "said."})
        + chunk_frame({}, "stop")
    )
    # One piece, then the connection is cut: no [DONE], no clean end of the chunked body.
    reply = Reply(raw=raw, drop_after=1)
    async with relay.client() as client:
        got = await exchange(client, relay.upstream, reply)
    assert got.terminal.event == "done"
    assert got.stored["status"] == "completed"
    assert got.stored["content"] == "All said."
    assert got.stored["finish_reason"] == "stop"


async def test_gzip_encoded_stream_is_decoded(relay: Relay) -> None:
    raw = chunk_frame({"content": "compressed "}) + chunk_frame({"content": "fine"}, "stop")
    raw += b"data: [DONE]\n\n"
    reply = Reply(raw=gzip.compress(raw), headers={"content-encoding": "gzip"})
    async with relay.client() as client:
        got = await exchange(client, relay.upstream, reply)
    assert got.stored["status"] == "completed"
    assert got.stored["content"] == "compressed fine"
    assert relay.upstream.requests[-1].headers.get("accept-encoding") == "identity"


async def test_non_streamed_json_completion_is_recorded(relay: Relay) -> None:
    completion = {
        "id": "chatcmpl-whole",
        "object": "chat.completion",
        "created": 1,
        "model": "fake-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Whole answer at once."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
    }
    reply = Reply(
        body=json.dumps(completion).encode(), headers={"content-type": "application/json"}
    )
    async with relay.client() as client:
        got = await exchange(client, relay.upstream, reply)
    assert got.stored["status"] == "completed"
    assert got.stored["content"] == got.content == "Whole answer at once."
    assert got.stored["usage"] == completion["usage"]
    assert got.stored["finish_reason"] == "stop"


async def test_json_error_with_status_200_fails(relay: Relay) -> None:
    body = json_body("Invalid value for 'model'", type="invalid_request_error")
    async with relay.client() as client:
        got = await exchange(client, relay.upstream, Reply(body=body))
    error = assert_failed(got, "upstream_error")
    assert "Invalid value for 'model'" in error["message"]
    assert len(got.requests) == 1


async def test_html_page_with_status_200_fails(relay: Relay) -> None:
    page = b"<html><head><title>Sign in</title></head><body>portal</body></html>"
    reply = Reply(body=page, headers={"content-type": "text/html; charset=utf-8"})
    async with relay.client() as client:
        got = await exchange(client, relay.upstream, reply)
    error = assert_failed(got, "upstream_protocol_error")
    assert "HTML page (Sign in)" in error["message"]
    assert len(got.requests) == 1


# -- 4. usage -----------------------------------------------------------------------------


async def test_usage_is_asked_for_by_default(relay: Relay) -> None:
    usage = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    async with relay.client() as client:
        got = await exchange(client, relay.upstream, Reply(tokens=["a", "b"], usage=usage))
    assert got.requests[0].body["stream_options"] == {"include_usage": True}
    assert got.stored["usage"] == usage


async def test_include_usage_false_sends_no_stream_options(stack: Stack) -> None:
    service = stack.service(CHATRELAY_INCLUDE_USAGE="false")
    usage = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    async with stack.client(service) as client:
        got = await exchange(client, stack.upstream, Reply(tokens=["a", "b"], usage=usage))
    assert got.stored["status"] == "completed"
    assert "stream_options" not in got.requests[0].body
    assert got.requests[0].body["stream"] is True
    assert got.stored["usage"] is None  # the fake sends usage only when asked


# -- 3. timeouts --------------------------------------------------------------------------

TIMEOUTS = {
    "CHATRELAY_UPSTREAM_CONNECT_TIMEOUT": "1",
    "CHATRELAY_UPSTREAM_FIRST_BYTE_TIMEOUT": "0.5",
    "CHATRELAY_UPSTREAM_IDLE_TIMEOUT": "0.5",
    "CHATRELAY_UPSTREAM_TOTAL_TIMEOUT": "30",
}


async def test_first_byte_timeout(stack: Stack) -> None:
    service = stack.service(**TIMEOUTS)
    slow = Reply(tokens=["late"], first_delay=3.0)
    async with stack.client(service) as client:
        got = await exchange(client, stack.upstream, slow, slow)  # the retry is as slow
    error = assert_failed(got, "upstream_timeout_first_byte")
    assert "0.5s" in error["message"]
    assert got.stored["content"] == ""
    assert len(got.requests) == 2, "a first-byte timeout is retried (nothing was sent yet)"
    assert got.elapsed < 2.5, f"took {got.elapsed:.2f}s for two 0.5 s limits"


async def test_idle_timeout_mid_stream(stack: Stack) -> None:
    service = stack.service(**TIMEOUTS)
    reply = Reply(tokens=["be", "fore", " never"], stall_after=2)
    async with stack.client(service) as client:
        got = await exchange(client, stack.upstream, reply)
        gone = await asyncio.to_thread(stack.upstream.wait_for_disconnect, 5.0)
    assert_failed(got, "upstream_timeout_idle")
    assert got.stored["content"] == "before"
    assert len(got.requests) == 1
    assert gone is not None, "the stalled upstream connection was not closed"
    assert got.elapsed < 3.0


async def test_total_timeout_bounds_the_stream_and_its_retries(stack: Stack) -> None:
    service = stack.service(**{**TIMEOUTS, "CHATRELAY_UPSTREAM_TOTAL_TIMEOUT": "1.5"})
    tokens = [f"t{i} " for i in range(60)]
    reply = Reply(tokens=tokens, delay=0.1)  # never idle for 0.5 s, but 6 s in all
    async with stack.client(service) as client:
        got = await exchange(client, stack.upstream, reply)
        # A retry that could only start after the deadline is not made: the upstream's own
        # error is reported, not a total timeout the wait itself caused.
        late = await exchange(
            client, stack.upstream, Reply(status=429, headers={"Retry-After": "3"})
        )
    error = assert_failed(got, "upstream_timeout_total")
    assert "1.5s" in error["message"]
    content = got.stored["content"]
    assert content and "".join(tokens).startswith(content) and content != "".join(tokens)
    assert len(got.requests) == 1
    assert 1.3 < got.elapsed < 4.0, f"ended after {got.elapsed:.2f}s"

    assert_failed(late, "upstream_rate_limited")
    assert len(late.requests) == 1
    assert late.elapsed < 1.5, f"waited {late.elapsed:.2f}s for a retry that could not fit"


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port on 127.0.0.1 that never completes a TCP handshake: its accept queue is full.

    Linux drops a SYN while the listener's accept queue is full, so a connect() hangs until
    its timeout, the way it does towards a firewalled host.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        for _ in range(16):
            probe = socket.socket()
            probe.setblocking(False)
            fillers.append(probe)
            if probe.connect_ex(("127.0.0.1", port)) not in (0, 115):  # 115: EINPROGRESS
                break
            time.sleep(0.02)
        check = socket.socket()
        check.settimeout(0.5)
        fillers.append(check)
        try:
            check.connect(("127.0.0.1", port))
        except TimeoutError:
            pass
        else:
            pytest.skip("could not fill a loopback accept queue here: no real connect timeout")
        yield port
    finally:
        for sock in fillers:
            sock.close()
        listener.close()


async def test_connect_timeout(stack: Stack, full_backlog: int) -> None:
    service = stack.service(
        **TIMEOUTS,
        OPENAI_BASE_URL=f"http://127.0.0.1:{full_backlog}/v1",
        CHATRELAY_UPSTREAM_MAX_RETRIES="0",
    )
    async with stack.client(service) as client:
        cid = await new_conversation(client)
        started = time.monotonic()
        _, frames = await post_streaming(client, cid, "anyone there?")
        elapsed = time.monotonic() - started
        stored = await wait_final(client, events(frames)[0].json["message"]["id"])
    got = Exchange(frames, stored, [], elapsed)
    error = assert_failed(got, "upstream_timeout_connect")
    assert "1s" in error["message"]
    assert 0.9 < elapsed < 3.0, f"ended after {elapsed:.2f}s"


async def test_refused_connection_is_unreachable(stack: Stack) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        service = stack.service(**TIMEOUTS, OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1")
        async with stack.client(service) as client:
            cid = await new_conversation(client)
            _, frames = await post_streaming(client, cid, "hello?")
            stored = await wait_final(client, events(frames)[0].json["message"]["id"])
    got = Exchange(frames, stored, [], 0.0)
    assert_failed(got, "upstream_unreachable")
    assert "gave up after 2 attempts" in stored["error"]["message"]  # refused is retried


# -- the client in process ----------------------------------------------------------------


async def read_slowly(client: UpstreamClient, pause: float) -> str:
    """Consume a stream the way a caller that awaits per delta (a broker publish) would."""
    text = ""
    stream = client.stream_chat({"model": "fake-model", "messages": []})
    async with aclosing(stream.__aiter__()) as deltas:
        async for delta in deltas:
            text += delta.content
            await asyncio.sleep(pause)
    return text


async def test_timers_never_fire_into_a_slow_caller() -> None:
    """The per-attempt timer cancels the reading task, so it must be off while the caller
    holds a delta: a caller's own awaits are no upstream silence. The total deadline still
    holds across those pauses."""
    config = UpstreamConfig(
        base_url="",
        api_key=UPSTREAM_KEY,
        first_byte_timeout=0.2,
        idle_timeout=0.2,
        total_timeout=30.0,
        max_retries=0,
    )
    with FakeUpstream() as upstream:
        upstream.enqueue(Reply(tokens=["a", "b", "c", "d"]))
        client = UpstreamClient(replace(config, base_url=upstream.base_url))
        try:
            assert await read_slowly(client, 0.35) == "abcd"
        finally:
            await client.aclose()

        # The upstream itself needs 3 s: past the 1 s deadline, however the caller reads.
        upstream.enqueue(Reply(tokens=[f"t{i} " for i in range(10)], delay=0.3))
        client = UpstreamClient(replace(config, base_url=upstream.base_url, total_timeout=1.0))
        try:
            with pytest.raises(UpstreamTimeout) as caught:
                await read_slowly(client, 0.35)
        finally:
            await client.aclose()
        assert caught.value.code == "upstream_timeout_total"


# -- helpers, as plain functions ----------------------------------------------------------


def test_retry_after_parsing() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    parse = parse_retry_after
    assert parse(httpx.Headers({"retry-after": "3"}), now=now) == 3.0
    assert parse(httpx.Headers({"retry-after": "1.5"}), now=now) == 1.5
    assert parse(httpx.Headers({"retry-after": "-4"}), now=now) == 0.0
    assert parse(httpx.Headers({"retry-after": "Wed, 01 Jan 2025 12:00:07 GMT"}), now=now) == 7.0
    assert parse(httpx.Headers({"retry-after": "Wed, 01 Jan 2025 11:00:00 GMT"}), now=now) == 0.0
    assert parse(httpx.Headers({"retry-after-ms": "250", "retry-after": "9"}), now=now) == 0.25
    assert parse(httpx.Headers({"retry-after": "soon"}), now=now) is None
    assert parse(httpx.Headers({"retry-after": "inf"}), now=now) is None
    assert parse(httpx.Headers({}), now=now) is None


def test_redaction_of_key_forms() -> None:
    key = UPSTREAM_KEY
    samples = [
        f"Incorrect API key provided: {key}.",
        f"Incorrect API key provided: {KEY_MASKED}.",
        f"key {KEY_PREFIX}… expired",
        f"key {KEY_PREFIX}... expired",
        f"tail {key[-12:]}",
        f"Bearer {key}",
    ]
    for sample in samples:
        clean = redact(sample, key)
        assert "[redacted]" in clean, sample
        assert_no_key(clean)
        assert key[-4:] not in clean
    assert redact("nothing secret here", key) == "nothing secret here"
    assert redact(f"x {key}", None) == f"x {key}"


async def test_oversized_upstream_event_fails_with_its_own_code(stack: Stack) -> None:
    service = stack.service(CHATRELAY_UPSTREAM_MAX_EVENT_BYTES="1024")
    small = chunk_frame({"content": "fits "})
    huge = chunk_frame({"content": "x" * 4096})
    stack.upstream.enqueue(Reply(raw=small + huge + b"data: [DONE]\n\n", chunk_size=512))
    async with stack.client(service) as client:
        cid = (await client.post("/v1/conversations", json={})).json()["id"]
        posted = await client.post(f"/v1/conversations/{cid}/messages", json={"content": "big"})
        mid = posted.json()["assistant_message"]["id"]
        final = await wait_final(client, mid)
    assert final["status"] == "failed"
    assert final["error"]["code"] == "upstream_event_too_large"
    assert "1024" in final["error"]["message"]
    assert final["content"] == "fits ", "text before the oversized event is kept"
