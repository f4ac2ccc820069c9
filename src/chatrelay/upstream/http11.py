"""httpx's transport over chatrelay's own HTTP/1.1 connections, for upstreams reached directly.

Why not aiohttp under httpx (`transport.UpstreamTransport`, still used behind a proxy):
profiled under a burst of new streams, aiohttp's request path — its connector opening
every connection through `aiohappyeyeballs` and `sock_connect` (~80-110 µs of CPU against
~30 µs for the event loop's own `create_connection`), its `ClientRequest`/`ClientResponse`
objects, two `StreamReader`s per response and flow control resumed on every read — was
more of a stream's set-up and of each paced event than anything chatrelay does itself.
What a relay needs of HTTP/1.1 to its upstream is small: write one request, parse the
response with the C parser uvicorn uses (httptools, llhttp), hand the body's bytes to the
SSE parser as they arrive, and keep the connection for the next stream.

- A pool per (scheme, host, port): the most recently returned idle connection is taken
  first (it is the likeliest to be alive), an idle one expires after `keepalive_expiry`,
  one the server closed leaves the pool when it closes.
- New connections: the host name resolved once per 10 s (`resolver`); one address is
  connected to by the event loop directly, several are raced (IPv6 and IPv4) with
  `aiohappyeyeballs` as aiohttp does; TLS by the loop with the configured trust.
- Failures are the httpx exceptions httpcore raises for the same event (`ConnectError`,
  `ConnectTimeout`, `ReadError`, `RemoteProtocolError`, `ReadTimeout`, and the TLS
  refusals as `UpstreamTLSError`), so `http_errors` maps them as before.
- The `trace` request extension is told when the request goes out (where the connect limit
  ends and the first-byte limit begins), as httpcore does.
- Bodies: `Content-Length`, chunked, or until the connection closes; a body not read to its
  end closes its connection, one read to its end returns it to the pool.
- `send_early`: a request written at once on an idle connection, before the task that
  will read its answer runs, so that the upstream works on it while chatrelay records the
  turn (`generation.runner.Generation` says why); `handle_async_request` then waits for
  the answer instead of sending the request again, and `discard_early` closes a
  connection whose answer nobody will read.
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import cast

import aiohappyeyeballs
import httptools
import httpx

from chatrelay.upstream.body import BODY_EXTENSION, Trace
from chatrelay.upstream.failures import tls_failure
from chatrelay.upstream.resolver import Resolver

# Unread body bytes at which reading the socket pauses; the reader takes all that is
# buffered at once, and reading resumes then.
_HIGH_WATER = 256 * 1024
_MAX_HEAD_BYTES = 64 * 1024  # status line and headers of one response
_BAD_HEADER = re.compile(rb"[\x00\r\n]")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HAPPY_EYEBALLS_DELAY = 0.25  # s before the next address is tried beside a slow one (RFC 8305)

Origin = tuple[str, str, int]
# The request extension under which `send_early` leaves the connection it wrote on.
_EARLY = "chatrelay.early_connection"


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, its response parsed as it arrives."""

    # One per held stream: slots keep it to its fields (no instance dict).
    __slots__ = (
        "_buffered",
        "_chunks",
        "_complete",
        "_error",
        "_head",
        "_head_bytes",
        "_headers",
        "_parser",
        "_paused",
        "_reason",
        "_status",
        "_unasked",
        "_until_close",
        "_waiter",
        "busy",
        "closed",
        "idle_since",
        "keep_alive",
        "transport",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.busy = False  # a request is out and its response not yet read to its end
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self._head: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._reason = b""
        self._status = 0
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._complete = False
        self._until_close = False
        self._unasked = False  # bytes after the answer: the start of a response nobody asked for
        self._error: httpx.TransportError | None = None
        self.keep_alive = False

    # -- the event loop's side ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport has asyncio.Transport's methods, not its class
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # bytes on an idle connection (a server's 408, say): not reusable
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            self._fail(httpx.RemoteProtocolError(str(exc.__context__ or exc)))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"the upstream's answer is not HTTP: {exc}"))
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the upstream switched protocols"))

    def eof_received(self) -> bool | None:
        self.closed = True  # not to be taken from the pool before `connection_lost` runs
        return None  # close the transport: a half-closed upstream answers nothing more

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._complete:
            return
        if self._until_close and exc is None and self._status:
            self._complete = True  # a body delimited by the end of the connection
            self._wake()
            return
        if not self._status:
            error: httpx.TransportError = httpx.RemoteProtocolError(
                "Server disconnected without sending a response."
            )
        elif isinstance(exc, OSError):
            error = httpx.ReadError(f"{type(exc).__name__}: {exc}")
        else:
            error = httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body"
            )
        self._fail(error)

    # -- httptools' callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:  # the connection cannot be trusted with another request
            self._unasked = True
            self.keep_alive = False

    def on_status(self, status: bytes) -> None:
        if not self._unasked:
            self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._unasked:
            return
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > _MAX_HEAD_BYTES:
            raise httpx.RemoteProtocolError("the upstream's response headers are too large")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._unasked:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            self._headers, self._reason, self._head_bytes = [], b"", 0
            return
        self._status = status
        framed = any(
            name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self._headers
        )
        self._until_close = not framed and status not in (204, 304)
        self.keep_alive = self._parser.should_keep_alive() and not self._until_close
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._unasked:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._status and not self._unasked:
            self._complete = True
            self._wake()

    # -- the request's side ---------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: httpx.TransportError) -> None:
        if self._error is None:
            self._error = error
        for future in (self._head, self._waiter):
            if future is not None and not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def send(self, head: bytes) -> None:
        """Write a request (its answer is `answer`'s)."""
        assert self.transport is not None
        self._head = asyncio.get_running_loop().create_future()
        self.busy = True
        self.transport.write(head)

    async def answer(self, limit: float | None) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """The response's status, reason and headers when they arrive."""
        assert self._head is not None
        try:
            if limit is None:  # a stream: the caller's watchdog times the first byte
                await self._head
            else:
                async with asyncio.timeout(limit):
                    await self._head
        except TimeoutError:
            self.close()
            raise httpx.ReadTimeout("the upstream did not answer in time") from None
        return self._status, self._reason, self._headers

    async def body(self, limit: float | None, ended: Callable[[], None]) -> AsyncIterator[bytes]:
        """The response body's bytes as they arrive; `ended()` once it is read to its end."""
        loop = asyncio.get_running_loop()
        chunks = self._chunks
        while True:
            if chunks:
                if len(chunks) == 1:
                    chunk = chunks.popleft()
                else:  # several arrived while the reader was busy: one read takes them all
                    chunk = b"".join(chunks)
                    chunks.clear()
                self._buffered = 0
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                yield chunk
                continue
            if self._complete:
                ended()
                return
            if self._error is not None:
                raise self._error
            self._waiter = loop.create_future()
            try:
                if limit is None:
                    await self._waiter
                else:
                    async with asyncio.timeout(limit):
                        await self._waiter
            except TimeoutError:
                self.close()
                raise httpx.ReadTimeout("the upstream's body stalled") from None
            finally:
                self._waiter = None

    @property
    def complete(self) -> bool:
        return self._complete

    def recycle(self) -> None:
        """Ready for the next request (the response was read to its end)."""
        self._reset()
        self.busy = False
        self.idle_since = time.monotonic()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def discard(self) -> None:
        """Close it without waiting for the answer to the request written on it."""
        head = self._head
        if head is not None:
            if not head.done():
                head.cancel()
            elif not head.cancelled():
                head.exception()  # seen: nobody else will look at it
        self.close()


class _Body(httpx.AsyncByteStream):
    """A response body; done with, its connection goes back to the pool or is closed."""

    def __init__(
        self, pool: Http11Transport, origin: Origin, conn: _Connection, timeout: float | None
    ) -> None:
        self._pool = pool
        self._origin = origin
        self._conn: _Connection | None = conn
        self._timeout = timeout

    def __aiter__(self) -> AsyncIterator[bytes]:
        # The connection's own generator, not one around it: a paced stream is a chunk
        # per token, and each generator between it and the SSE parser is a frame per chunk.
        conn = self._conn
        if conn is None:
            raise httpx.StreamClosed()
        return conn.body(self._timeout, self._release)

    async def aclose(self) -> None:
        self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.complete and conn.keep_alive and not conn.closed:
            conn.recycle()
            self._pool.give_back(self._origin, conn)
        else:
            conn.close()


class Http11Transport(httpx.AsyncBaseTransport):
    """httpx's transport interface over pooled HTTP/1.1 connections (no proxy)."""

    def __init__(self, tls: ssl.SSLContext, *, keepalive_expiry: float = 60.0) -> None:
        self._tls = tls
        self._expiry = keepalive_expiry
        # Per origin, idle connections oldest first: taken from the right, expired from
        # the left.
        self._idle: dict[Origin, collections.deque[_Connection]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._resolver = Resolver()
        self._closed = False

    def give_back(self, origin: Origin, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            return
        idle = self._idle.get(origin)
        if idle is None:
            idle = self._idle[origin] = collections.deque()
        idle.append(conn)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(self._expiry, self._expire)

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        oldest = time.monotonic() - self._expiry
        while idle:
            conn = idle.pop()
            transport = conn.transport
            alive = not conn.closed and transport is not None and not transport.is_closing()
            if alive and conn.idle_since > oldest:
                return conn
            conn.close()
        return None

    def send_early(self, request: httpx.Request) -> bool:
        """Write `request` now if an idle connection to its origin is at hand.

        False when none is (or the request cannot be written as it is): the request is
        then sent as usual when `handle_async_request` gets it. The request's body must
        have been given whole (`content=`), as a stream's is.
        """
        origin = _origin_of(request.url)
        if origin is None:
            return False
        conn = self._take(origin)
        if conn is None:
            return False
        try:
            head = _request_head(request, request.content)
        except (httpx.HTTPError, httpx.RequestNotRead):
            self.give_back(origin, conn)  # refused again, properly, when it is sent
            return False
        conn.send(head)
        request.extensions[_EARLY] = conn
        return True

    @staticmethod
    def discard_early(request: httpx.Request) -> None:
        """Close the connection `send_early` wrote `request` on, if its answer was not
        waited for (the generation ended before its first attempt)."""
        conn = request.extensions.pop(_EARLY, None)
        if isinstance(conn, _Connection):
            conn.discard()

    def _expire(self) -> None:
        """Close the connections idle for longer than the expiry (and forget closed ones)."""
        self._sweep = None
        oldest = time.monotonic() - self._expiry
        for origin, idle in list(self._idle.items()):
            while idle and (idle[0].closed or idle[0].idle_since <= oldest):
                idle.popleft().close()
            if not idle:
                del self._idle[origin]
        if self._idle and not self._closed:
            self._sweep = asyncio.get_running_loop().call_later(self._expiry, self._expire)

    async def _connect(self, origin: Origin, limit: float | None) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._tls if scheme == "https" else None
        name = host if tls else None  # what the certificate must be valid for
        try:
            async with asyncio.timeout(limit):
                infos = await self._resolver.resolve(host, port)
                if len(infos) == 1:
                    address = infos[0][4]
                    _, conn = await loop.create_connection(
                        _Connection, address[0], address[1], ssl=tls, server_hostname=name
                    )
                else:  # several addresses (IPv6 and IPv4, say): raced as aiohttp does
                    sock = await aiohappyeyeballs.start_connection(
                        infos, happy_eyeballs_delay=_HAPPY_EYEBALLS_DELAY, interleave=1
                    )
                    _, conn = await loop.create_connection(
                        _Connection, sock=sock, ssl=tls, server_hostname=name
                    )
        except TimeoutError:
            raise httpx.ConnectTimeout("timed out connecting to the upstream") from None
        except ssl.SSLError as exc:
            raise tls_failure(exc) from exc
        except OSError as exc:
            if isinstance(exc.__cause__, ssl.SSLError):
                raise tls_failure(exc.__cause__) from exc
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from exc
        return conn

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin = _origin_of(request.url)
        if origin is None:
            raise httpx.UnsupportedProtocol(
                f"Request URL has an unsupported protocol '{request.url.scheme}://'."
            )
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        early = request.extensions.pop(_EARLY, None)
        conn: _Connection
        head: bytes | None = None  # None: `send_early` wrote it
        if isinstance(early, _Connection):
            conn = early
        else:
            head = _request_head(request, await request.aread())
            conn = self._take(origin) or await self._connect(origin, timeouts.get("connect"))
        trace: Trace | None = request.extensions.get("trace")
        if trace is not None:
            await trace("http11.send_request_headers.started", {})
        try:
            if head is not None:
                conn.send(head)
            status, reason, headers = await conn.answer(timeouts.get("read"))
        except BaseException:
            conn.close()
            raise
        return httpx.Response(
            status,
            headers=headers,
            stream=(body := _Body(self, origin, conn, timeouts.get("read"))),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": reason,
                BODY_EXTENSION: body,
            },
        )

    async def aclose(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def _origin_of(url: httpx.URL) -> Origin | None:
    """(scheme, host, port), or None for a scheme this transport does not speak."""
    scheme = url.scheme
    if scheme not in _DEFAULT_PORTS:
        return None
    return (scheme, url.host, url.port or _DEFAULT_PORTS[scheme])


def _request_head(request: httpx.Request, content: bytes) -> bytes:
    """The request's bytes on the wire: request line, headers (httpx set `Host` and the
    body's framing), the body. A header that would split the request is refused."""
    parts = [request.method.encode(), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    chunked = False
    for name, value in request.headers.raw:
        if _BAD_HEADER.search(name) or _BAD_HEADER.search(value):
            raise httpx.LocalProtocolError("a request header holds a line break or NUL")
        if name.lower() == b"transfer-encoding":
            chunked = True  # a streamed request body, read whole above: one chunk
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    if chunked:
        if content:
            parts += (b"%x\r\n" % len(content), content, b"\r\n")
        parts.append(b"0\r\n\r\n")
    else:
        parts.append(content)
    return b"".join(parts)
