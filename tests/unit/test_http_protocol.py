"""`LimitedHttpProtocol` in-process, driven byte by byte through a recording transport.

The raw-socket tests (tests/integration/test_http_limits.py) show each limit against the
real service; these cover the branches a socket cannot steer deterministically: a limit met
while an earlier answer is still going out, `HEAD`, `Expect: 100-continue`, flow control.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from chatrelay.web.http_protocol import HttpLimits, LimitedHttpProtocol, protocol_for

LIMITS = HttpLimits(
    max_header_bytes=2048,
    max_url_bytes=512,
    header_timeout=0.2,
    body_timeout=0.2,
    write_timeout=0.2,
    max_connections=2,
)


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.eof_written = False
        self.reading_paused = False
        self.buffered = 0  # what a test says is stuck in the write buffer

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.eof_written, "wrote after the half-close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )


class App:
    """Answers `/stream` with a body that goes out only when `release` is set; `/read`
    reads the whole request body first; anything else is a small JSON 200."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.bodies: list[bytes] = []
        self.disconnects = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        if scope["path"] == "/read":
            body = b""
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.disconnects += 1
                    return
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            self.bodies.append(body)
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if scope["path"] == "/stream":
            await send({"type": "http.response.body", "body": b"first;", "more_body": True})
            await self.release.wait()
            await send({"type": "http.response.body", "body": b"last", "more_body": False})
            return
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})


class Refusals:
    """Records what the protocol counts, as `Metrics.request_rejected` would."""

    def __init__(self) -> None:
        self.counted: list[tuple[str, str | None]] = []

    def request_rejected(self, code: str, limit: str | None = None) -> None:
        self.counted.append((code, limit))


class Connection:
    def __init__(self, app: App, state: ServerState, refusals: Refusals | None = None) -> None:
        config = uvicorn.Config(app, lifespan="off", log_config=None, interface="asgi3")
        config.load()
        protocol_class = protocol_for(LIMITS, refusals)
        self.protocol: LimitedHttpProtocol = protocol_class(config, state, {})
        self.transport = RecordingTransport()
        self.protocol.connection_made(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    @property
    def written(self) -> bytes:
        return bytes(self.transport.written)

    def statuses(self) -> list[int]:
        return [
            int(line.split(b" ")[1])
            for line in self.written.split(b"\r\n")
            if line.startswith(b"HTTP/1.1 ")
        ]


@pytest.fixture
async def app() -> AsyncIterator[App]:
    made = App()
    yield made
    made.release.set()
    await asyncio.sleep(0)


async def _settle(seconds: float = 0.0) -> None:
    """Let timers and the app's task run for `seconds` (the limits here are 0.2 s)."""
    await asyncio.sleep(seconds)
    for _ in range(5):
        await asyncio.sleep(0)


def _error_code(written: bytes) -> str:
    body = written.rsplit(b"\r\n\r\n", 1)[1]
    code: str = json.loads(body)["error"]["code"]
    return code


async def test_a_late_pipelined_head_never_writes_into_an_answer_still_going_out(
    app: App,
) -> None:
    conn = Connection(app, ServerState())
    conn.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHo")
    await _settle(LIMITS.header_timeout * 2)
    assert conn.statuses() == [200]
    assert b"408" not in conn.written
    assert not conn.transport.closed
    app.release.set()
    await _settle()
    assert conn.written.endswith(b"last\r\n0\r\n\r\n"), conn.written
    assert conn.transport.closed, "the connection ends after the answer it was giving"


async def test_an_oversized_pipelined_head_waits_for_the_answer_in_flight(app: App) -> None:
    conn = Connection(app, ServerState())
    conn.send(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await _settle()
    conn.send(b"GET /next HTTP/1.1\r\nX-Big: " + b"b" * (LIMITS.max_header_bytes + 1))
    await _settle()
    assert conn.statuses() == [200] and not conn.transport.closed
    app.release.set()
    await _settle()
    assert conn.statuses() == [200]
    assert conn.transport.closed


async def test_refusals_on_a_head_request_carry_no_body(app: App) -> None:
    state = ServerState()
    others = [Connection(app, state) for _ in range(LIMITS.max_connections)]
    conn = Connection(app, state)
    conn.send(b"HEAD /v1/conversations HTTP/1.1\r\nHost: x\r\n\r\n")
    await _settle()
    assert conn.statuses() == [503]
    head, _, body = conn.written.partition(b"\r\n\r\n")
    assert body == b"" and b"content-length: " in head and b"retry-after: 1" in head
    assert len(others) == LIMITS.max_connections


async def test_the_connection_cap_exempts_healthz(app: App) -> None:
    state = ServerState()
    _others = [Connection(app, state) for _ in range(LIMITS.max_connections)]
    conn = Connection(app, state)
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await _settle()
    assert conn.statuses() == [200]


async def test_a_body_awaiting_100_continue_is_not_late(app: App) -> None:
    conn = Connection(app, ServerState())
    # `/stream` never reads the body, so `100 Continue` is never sent: not the client's fault.
    conn.send(
        b"POST /stream HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    )
    await _settle(LIMITS.body_timeout * 3)
    assert b"408" not in conn.written and not conn.transport.closed


async def test_a_body_the_app_is_slow_to_read_is_not_late(app: App) -> None:
    conn = Connection(app, ServerState())
    conn.send(b"POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
    conn.protocol.flow.pause_reading()  # as uvicorn does when the app has not read enough
    await _settle(LIMITS.body_timeout * 3)
    assert b"408" not in conn.written and not conn.transport.closed
    conn.protocol.flow.resume_reading()  # from here on, the client is late
    await _settle(LIMITS.body_timeout * 2)
    assert conn.statuses() == [200], "the app answered first, so there is no 408 to send"
    assert conn.transport.eof_written, "the stalled connection is being closed"


async def test_a_stalled_body_disconnects_the_app_and_answers_408(app: App) -> None:
    conn = Connection(app, ServerState())
    conn.send(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
    await _settle(LIMITS.body_timeout * 2)
    assert conn.statuses() == [408]
    assert _error_code(conn.written) == "request_timeout"
    assert app.disconnects == 1 and app.bodies == []
    assert conn.transport.eof_written
    conn.send(b"a" * 90)  # whatever still comes while lingering is dropped
    await _settle()
    assert conn.statuses() == [408]


async def test_a_reader_stuck_past_the_high_water_mark_is_aborted_and_a_moving_one_is_not(
    app: App,
) -> None:
    moving, stuck = Connection(app, ServerState()), Connection(app, ServerState())
    for conn in (moving, stuck):
        conn.transport.buffered = 100_000
        conn.protocol.pause_writing()
    for _ in range(3):
        await _settle(LIMITS.write_timeout * 0.6)
        moving.transport.buffered -= 10_000  # the client takes a little each time
    assert not moving.transport.aborted
    assert stuck.transport.aborted


async def test_a_head_split_over_many_reads_is_counted_before_it_is_parsed(app: App) -> None:
    conn = Connection(app, ServerState())
    conn.send(b"GET / HTTP/1.1\r\nX-Big: ")
    for _ in range(LIMITS.max_header_bytes // 100 + 1):
        conn.send(b"b" * 100)
    await _settle()
    assert conn.statuses() == [431]
    assert _error_code(conn.written) == "headers_too_large"


async def test_each_refusal_by_a_limit_is_counted_with_its_limit(app: App) -> None:
    """What `chatrelay_rejected_requests_total{code, limit}` gets from below the app; a
    request that is merely not HTTP names no limit and is not counted."""
    refusals = Refusals()
    big = Connection(app, ServerState(), refusals)
    big.send(b"GET /x HTTP/1.1\r\nX-Big: " + b"b" * (LIMITS.max_header_bytes + 1))
    long = Connection(app, ServerState(), refusals)
    long.send(b"GET /" + b"u" * LIMITS.max_url_bytes + b" HTTP/1.1\r\n")
    slow_head = Connection(app, ServerState(), refusals)
    slow_head.send(b"GET /x HTTP/1.1\r\nHo")
    slow_body = Connection(app, ServerState(), refusals)
    slow_body.send(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    garbage = Connection(app, ServerState(), refusals)
    garbage.send(b"NOT HTTP AT ALL\r\n\r\n")
    await _settle(LIMITS.header_timeout * 2)
    crowded = Connection(app, ServerState(), refusals)
    for _ in range(LIMITS.max_connections):
        crowded.protocol.connections.add(Connection(app, ServerState()).protocol)
    crowded.send(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    await _settle()
    assert sorted(refusals.counted) == [
        ("headers_too_large", "header_size"),
        ("request_timeout", "body_timeout"),
        ("request_timeout", "header_timeout"),
        ("too_many_connections", "connections"),
        ("uri_too_long", "url_length"),
    ]
    assert _error_code(garbage.written) == "bad_request"
