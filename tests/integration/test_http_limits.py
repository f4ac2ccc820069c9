"""HTTP limits against raw sockets: huge and slow heads, stalled bodies, idle and excess
connections, and a stream subscriber that never reads (issue #12, docs/security.md).

Everything talks bytes over a real socket to a real `chatrelay serve`, with small limits
and timeouts so each case takes about one timeout. Every refusal must be the JSON error
shape with `Connection: close`, and the service must stay responsive meanwhile.

These limits live in the HTTP protocol layer, below the app and its storage: the module runs
on SQLite only (`BACKENDS`), the storage suites run on both databases.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CLIENT_KEYS, Relay, Stack
from tests.fakes.upstream import Reply
from tests.integration.helpers import new_conversation, post_accepted, wait_final

HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 1.5
KEEP_ALIVE = 2
WRITE_TIMEOUT = 1.5
MAX_HEADER = 8192
MAX_URL = 2048
MARGIN = 3.0  # how much later than its timeout a refusal may come on a busy machine

BACKENDS = ("sqlite",)
RELAY_ENV = {
    "CHATRELAY_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    "CHATRELAY_BODY_TIMEOUT": str(BODY_TIMEOUT),
    "CHATRELAY_KEEP_ALIVE_TIMEOUT": str(KEEP_ALIVE),
    "CHATRELAY_WRITE_TIMEOUT": str(WRITE_TIMEOUT),
    "CHATRELAY_MAX_HEADER_BYTES": str(MAX_HEADER),
    "CHATRELAY_MAX_URL_BYTES": str(MAX_URL),
}
AUTH = f"Authorization: Bearer {CLIENT_KEYS['acme']}\r\n".encode()


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float  # from the call until the server closed the connection

    def error(self) -> dict[str, Any]:
        """The JSON error body, checked for the contract's shape."""
        assert self.headers.get("content-type", "").startswith("application/json"), self
        assert int(self.headers["content-length"]) == len(self.body), self
        payload = json.loads(self.body)
        assert set(payload) == {"error"}, payload
        assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]
        error: dict[str, Any] = payload["error"]
        return error


def _parse(raw: bytes, elapsed: float) -> RawResponse:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {raw[:300]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split()[1]), headers, body, elapsed)


async def _exchange(port: int, data: bytes, *, within: float) -> RawResponse:
    """Send `data`, then read until the server closes; the answer must come `within` s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(-1), within)
    finally:
        writer.close()
    return _parse(raw, time.monotonic() - started)


async def _healthy(url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        assert (await client.get("/healthz")).status_code == 200


def _read_answer(sock: socket.socket) -> RawResponse:
    """One response with a Content-Length, read from a blocking socket without waiting for
    the connection to end."""
    received = b""
    while True:
        head, sep, body = received.partition(b"\r\n\r\n")
        if sep:
            answer = _parse(head + sep, 0)
            if len(body) >= int(answer.headers["content-length"]):
                answer.body = body[: int(answer.headers["content-length"])]
                return answer
        chunk = sock.recv(65536)
        assert chunk, f"closed without a complete answer: {received!r}"
        received += chunk


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc status")


# -- header size and URL length ---------------------------------------------------------------


async def test_a_64_mib_header_is_refused_431_before_it_ends_and_memory_stays_flat(
    relay: Relay,
) -> None:
    assert relay.service.proc is not None
    pid = relay.service.proc.pid
    peak_before = _peak_rss_kib(pid)
    sock = socket.create_connection(("127.0.0.1", relay.service.port))
    sock.settimeout(10)
    try:
        # Only the first MiB, the head far from finished: the answer must come already.
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20))
        answer = await asyncio.to_thread(_read_answer, sock)

        # The rest of 64 MiB: dropped unread (or refused), never buffered.
        def pump() -> None:
            piece = b"a" * (1 << 20)
            try:
                for _ in range(63):
                    sock.sendall(piece)
            except OSError:
                pass  # the server closed after its answer: fine

        sender = threading.Thread(target=pump)
        sender.start()
        await _healthy(relay.url)  # the event loop is not stuck parsing
        await asyncio.to_thread(sender.join, 30)
        assert not sender.is_alive()
    finally:
        sock.close()
    assert answer.status == 431
    assert answer.headers["connection"] == "close"
    assert answer.error()["code"] == "headers_too_large"
    await _healthy(relay.url)
    grown_mib = (_peak_rss_kib(pid) - peak_before) / 1024
    assert grown_mib < 16, f"peak RSS grew {grown_mib:.1f} MiB while refusing a 64 MiB header"


@pytest.mark.parametrize("complete", [True, False], ids=["whole-head", "unfinished-head"])
async def test_a_head_over_the_limit_is_431_json(relay: Relay, complete: bool) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"p" * MAX_HEADER + b"\r\n"
    answer = await _exchange(relay.service.port, head + (b"\r\n" if complete else b""), within=5)
    assert answer.status == 431
    assert answer.headers["connection"] == "close"
    assert answer.error()["code"] == "headers_too_large"
    await _healthy(relay.url)


async def test_many_small_headers_count_towards_the_limit(relay: Relay) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADER // 8))
    answer = await _exchange(
        relay.service.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n", within=5
    )
    assert answer.status == 431
    assert answer.error()["code"] == "headers_too_large"


async def test_a_head_under_the_limit_is_served(relay: Relay) -> None:
    pad = b"p" * (MAX_HEADER - 200)
    answer = await _exchange(
        relay.service.port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + pad + b"\r\nConnection: close\r\n\r\n",
        within=5,
    )
    assert answer.status == 200, answer
    assert json.loads(answer.body) == {"status": "ok"}


@pytest.mark.parametrize("complete", [True, False], ids=["whole-head", "unfinished-target"])
async def test_a_long_target_is_414_json(relay: Relay, complete: bool) -> None:
    target = b"/healthz?q=" + b"q" * MAX_URL
    data = b"GET " + target + (b" HTTP/1.1\r\nHost: x\r\n\r\n" if complete else b"")
    answer = await _exchange(relay.service.port, data, within=5)
    assert answer.status == 414
    assert answer.headers["connection"] == "close"
    assert answer.error()["code"] == "uri_too_long"
    await _healthy(relay.url)


async def test_server_layer_errors_on_openai_routes_take_openai_shape(relay: Relay) -> None:
    data = (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\n"
        + AUTH
        + b"X-Pad: "
        + b"p" * MAX_HEADER
        + b"\r\n\r\n"
    )
    answer = await _exchange(relay.service.port, data, within=5)
    assert answer.status == 431
    error = answer.error()
    assert set(error) == {"message", "type", "code", "param"}
    assert (error["code"], error["type"]) == ("headers_too_large", "invalid_request_error")


# -- slow heads, silent and idle connections --------------------------------------------------


async def test_a_head_sent_half_way_is_408_after_the_header_timeout(relay: Relay) -> None:
    answer = await _exchange(
        relay.service.port,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        within=HEADER_TIMEOUT + MARGIN,
    )
    assert answer.status == 408
    assert answer.headers["connection"] == "close"
    assert answer.error()["code"] == "request_timeout"
    assert answer.elapsed >= HEADER_TIMEOUT * 0.9, "refused before its timeout"


async def test_a_head_dripped_a_byte_at_a_time_is_408_by_its_deadline(relay: Relay) -> None:
    """Slowloris: bytes keep coming, but the whole head must arrive within the timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.service.port)
    started = time.monotonic()
    answered = asyncio.create_task(reader.read(-1))  # reads until the server closes
    try:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 200
        for byte in head:
            if answered.done() or time.monotonic() - started > HEADER_TIMEOUT + MARGIN:
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except OSError:
                break  # the server has answered and closed
            await asyncio.sleep(0.1)
        raw = await asyncio.wait_for(answered, MARGIN)
    finally:
        writer.close()
    elapsed = time.monotonic() - started
    answer = _parse(raw, elapsed)
    assert answer.status == 408
    assert answer.error()["code"] == "request_timeout"
    assert elapsed < HEADER_TIMEOUT + MARGIN


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    relay: Relay,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.service.port)
    started = time.monotonic()
    try:
        raw = await asyncio.wait_for(reader.read(-1), HEADER_TIMEOUT + MARGIN)
    finally:
        writer.close()
    assert raw == b"", "nothing was asked, so nothing is answered"
    assert time.monotonic() - started >= HEADER_TIMEOUT * 0.9


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(
    relay: Relay,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.service.port)
    try:
        for _ in range(2):  # the connection is reused, then left idle
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            answer = _parse(head, 0)
            assert answer.status == 200
            assert "close" not in answer.headers.get("connection", "")
            await reader.readexactly(int(answer.headers["content-length"]))
        idle_from = time.monotonic()
        rest = await asyncio.wait_for(reader.read(-1), KEEP_ALIVE + MARGIN)
    finally:
        writer.close()
    assert rest == b""
    assert time.monotonic() - idle_from >= KEEP_ALIVE * 0.9


# -- bodies -----------------------------------------------------------------------------------


async def _conversation_count(relay: Relay) -> int:
    async with relay.client() as client:
        listed = await client.get("/v1/conversations?limit=100")
        assert listed.status_code == 200, listed.text
        return len(listed.json()["data"])


def _post_head(path: bytes, extra: bytes) -> bytes:
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n" + AUTH
        + b"Content-Type: application/json\r\n" + extra + b"\r\n"
    )  # fmt: skip


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            _post_head(b"/v1/conversations", b"Content-Length: 100\r\n") + b'{"title": "sh',
            id="shorter-than-content-length",
        ),
        pytest.param(
            _post_head(b"/v1/conversations", b"Transfer-Encoding: chunked\r\n")
            + b'6\r\n{"titl\r\n',
            id="stalled-chunked",
        ),
        pytest.param(
            _post_head(b"/v1/conversations", b"Content-Length: 100\r\n"), id="no-body-at-all"
        ),
    ],
)
async def test_a_stalled_body_is_408_and_stores_nothing(relay: Relay, data: bytes) -> None:
    before = await _conversation_count(relay)
    answer = await _exchange(relay.service.port, data, within=BODY_TIMEOUT + MARGIN)
    assert answer.status == 408
    assert answer.headers["connection"] == "close"
    assert answer.error()["code"] == "request_timeout"
    assert answer.elapsed >= BODY_TIMEOUT * 0.9
    assert await _conversation_count(relay) == before
    assert "Traceback" not in relay.service.log()


async def test_a_stalled_body_on_chat_completions_is_408_in_openai_shape(relay: Relay) -> None:
    data = _post_head(b"/v1/chat/completions", b"Content-Length: 200\r\n") + b'{"model": '
    answer = await _exchange(relay.service.port, data, within=BODY_TIMEOUT + MARGIN)
    assert answer.status == 408
    error = answer.error()
    assert set(error) == {"message", "type", "code", "param"}
    assert error["code"] == "request_timeout"
    assert "Traceback" not in relay.service.log()


async def test_a_slow_body_that_keeps_moving_is_accepted(relay: Relay) -> None:
    """The body timeout is on progress: a body longer in total than it, sent in pieces each
    well inside it, is read to the end."""
    body = b'{"title": "' + b"t" * 40 + b'"}'
    pieces = [body[i : i + 10] for i in range(0, len(body), 10)]
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.service.port)
    started = time.monotonic()
    try:
        writer.write(
            _post_head(
                b"/v1/conversations", b"Content-Length: %d\r\nConnection: close\r\n" % len(body)
            )
        )
        for piece in pieces:
            await asyncio.sleep(BODY_TIMEOUT / 3)
            writer.write(piece)
            await writer.drain()
        raw = await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()
    assert time.monotonic() - started > BODY_TIMEOUT
    answer = _parse(raw, 0)
    assert answer.status == 201, answer
    assert json.loads(answer.body)["title"] == "t" * 40


# -- malformed requests -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="request-line"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", id="header"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n", id="length"),
    ],
)
async def test_malformed_requests_are_json_400(relay: Relay, raw: bytes) -> None:
    answer = await _exchange(relay.service.port, raw, within=5)
    assert answer.status == 400
    assert answer.headers["connection"] == "close"
    assert answer.error()["code"] == "bad_request"
    await _healthy(relay.url)


# -- connection cap ---------------------------------------------------------------------------


async def test_connections_past_the_cap_get_503_json_with_retry_after(stack: Stack) -> None:
    service = stack.service(CHATRELAY_MAX_CONNECTIONS="3", CHATRELAY_HEADER_TIMEOUT="20")
    held = [await asyncio.open_connection("127.0.0.1", service.port) for _ in range(3)]
    try:
        for _, writer in held:
            writer.write(b"GET /healthz HTTP/1.1\r\n")  # unfinished: each holds its place
            await writer.drain()
        await asyncio.sleep(0.2)  # let the server accept them all
        answer = await _exchange(
            service.port,
            b"GET /v1/conversations HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n",
            within=5,
        )
        assert answer.status == 503
        assert answer.headers["retry-after"] == "1"
        assert answer.headers["connection"] == "close"
        assert answer.error()["code"] == "too_many_connections"
        # Liveness probes still get through, or an orchestrator would kill a busy instance.
        probe = await _exchange(
            service.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", within=5
        )
        assert probe.status == 200
    finally:
        for _, writer in held:
            writer.close()
    await asyncio.sleep(0.2)
    async with stack.client(service) as client:
        assert (await client.get("/v1/conversations")).status_code == 200


# -- subscribers that do not read -------------------------------------------------------------


# ~6 MB of answer: more than the kernel's socket buffers (about 3 MB on loopback with the
# reader's small window) plus the transport's 64 KiB high-water mark, so the server really
# has to wait on the reader.
LONG_ANSWER = [f"{i:05d}" + "x" * 16_000 for i in range(400)]


async def _subscribe(relay: Relay, mid: str) -> socket.socket:
    """A raw subscriber of the message's stream, with a small receive window."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    await asyncio.to_thread(sock.connect, ("127.0.0.1", relay.service.port))
    sock.sendall(b"GET /v1/messages/" + mid.encode() + b"/events HTTP/1.1\r\n"
                 b"Host: x\r\n" + AUTH + b"Accept: text/event-stream\r\n\r\n")  # fmt: skip
    return sock


def _dropped(relay: Relay, sock: socket.socket) -> bool:
    port = sock.getsockname()[1]
    return any(
        f"127.0.0.1:{port}: dropped a client" in line for line in relay.service.log().splitlines()
    )


async def test_a_subscriber_that_never_reads_is_dropped_and_the_generation_is_recorded(
    relay: Relay,
) -> None:
    tokens = LONG_ANSWER
    relay.upstream.enqueue(Reply(tokens=tokens, delay=0.002))
    async with relay.client() as client:
        cid = await new_conversation(client)
        posted = await post_accepted(client, cid, "a long answer, please")
        mid = posted["assistant_message"]["id"]
        sock = await _subscribe(relay, mid)
        try:
            final = await wait_final(client, mid, within=30)
            # Never read until now: the server must have given up on this reader by the
            # write timeout (after the generation, its last events wait on the reader).
            await asyncio.sleep(WRITE_TIMEOUT + MARGIN)
            received = await asyncio.to_thread(_drain, sock)
            assert _dropped(relay, sock)
        finally:
            sock.close()
        assert received.startswith(b"HTTP/1.1 200"), received[:200]
        assert b"event: done" not in received, "the stream was delivered whole: never dropped"
        assert len(received) < len("".join(tokens)) // 2
        assert final["status"] == "completed"
        stored = (await client.get(f"/v1/messages/{mid}")).json()
        assert stored["status"] == "completed"
        assert stored["content"] == "".join(tokens)


async def test_a_slow_subscriber_that_keeps_reading_gets_the_whole_stream(relay: Relay) -> None:
    """The write timeout is on progress: pauses well inside it, over a stream that takes
    several times it to deliver, are not a reason to drop the reader."""
    relay.upstream.enqueue(Reply(tokens=LONG_ANSWER, delay=0.002))
    async with relay.client() as client:
        cid = await new_conversation(client)
        mid = (await post_accepted(client, cid, "a long answer, slowly"))["assistant_message"]["id"]
        sock = await _subscribe(relay, mid)
        started = time.monotonic()
        try:
            received = await asyncio.to_thread(_read_in_bursts, sock, WRITE_TIMEOUT * 2 / 3)
            assert not _dropped(relay, sock)
        finally:
            sock.close()
        assert time.monotonic() - started > 2 * WRITE_TIMEOUT
        assert b"event: done" in received
        assert received.count(b"event: delta") == len(LONG_ANSWER)
        assert (await wait_final(client, mid))["status"] == "completed"


def _read_in_bursts(sock: socket.socket, pause: float) -> bytes:
    """1 MiB at a time, then `pause` seconds of not reading, until the `done` event."""
    received = b""
    while b"event: done" not in received[-70_000:]:
        burst_end = len(received) + (1 << 20)
        while len(received) < burst_end and b"event: done" not in received[-70_000:]:
            chunk = sock.recv(1 << 16)
            assert chunk, f"the stream ended early after {len(received)} bytes: {received[-600:]!r}"
            received += chunk
        time.sleep(pause)
    return received


def _drain(sock: socket.socket) -> bytes:
    """Everything the server left in the socket, until it ends (EOF or reset)."""
    received = b""
    sock.settimeout(5)
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
