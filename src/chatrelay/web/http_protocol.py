"""uvicorn's httptools protocol with the limits a public server needs, answered in JSON.

uvicorn (0.54, httptools) sets no header size limit, no header or body read timeout and no
write timeout, and answers the errors it does raise in plain text. So a client could hold a
connection forever with half a request head, a body shorter than its `Content-Length`, or by
never reading its stream, and a huge header both grows memory and stalls the event loop: the
parser's buffers grow by concatenation, which is quadratic in the number of reads.

`LimitedHttpProtocol` adds, per connection and without touching the per-event write path:

- the request head is counted as it arrives, *before* the parser buffers it: past
  `max_header_bytes` it is `431`, a target past `max_url_bytes` is `414`;
- the whole head must arrive within `header_timeout` of the connection (or of its first byte,
  for later requests on a keep-alive connection): else `408`, or a plain close if not one
  byte came;
- a body that makes no progress for `body_timeout` while the server is ready to read it is
  `408` (a body shorter than its `Content-Length`, a stalled chunked body);
- a response the client stops reading (the transport's buffer above its high-water mark, not
  draining) for `write_timeout` gets the connection dropped: the app sees a disconnect, and a
  stream's generation goes on and is recorded;
- past `max_connections` open connections a request is `503` with `Retry-After`
  (`/healthz` excepted, so an orchestrator does not kill a busy instance);
- requests the parser refuses are `400 bad_request` in JSON, not uvicorn's text.

Each refusal answers `Connection: close`, half-closes, and reads (discarding) for a moment
before closing, so the client can read the answer instead of losing it to a TCP reset.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from asyncio import TimerHandle
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from chatrelay.config import Settings
from chatrelay.errors import (
    BadRequest,
    ChatRelayError,
    HeadersTooLarge,
    LimitKind,
    RequestTimeout,
    ServiceUnavailable,
    UriTooLong,
)
from chatrelay.web.errors import server_layer_error

try:  # Linux: how much of what the kernel accepted the peer has not acknowledged yet
    import fcntl
    import termios

    _TIOCOUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # pragma: no cover - other platforms
    _TIOCOUTQ = None

__all__ = ["HttpLimits", "LimitedHttpProtocol", "RefusalCounter", "protocol_for"]

log = logging.getLogger("chatrelay.http")

# After a refusal, how long the connection is read (and the bytes dropped) before it closes.
_LINGER_SECONDS = 1.0
_RETRY_AFTER_SECONDS = 1
# Routes whose errors take OpenAI's shape (as the app answers them: web/errors.py).
_OPENAI_PATHS = frozenset({b"/v1/chat/completions", b"/v1/models"})
_EXEMPT_FROM_CAP = frozenset({b"/healthz"})


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int
    max_url_bytes: int
    header_timeout: float
    body_timeout: float
    write_timeout: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_url_bytes=settings.max_url_bytes,
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            write_timeout=settings.write_timeout,
            max_connections=settings.max_connections,
        )


class RefusalCounter(Protocol):
    """Where a refusal by a limit is counted (`metrics.Metrics`): code and `LimitKind` value."""

    def request_rejected(self, code: str, limit: str | None = None) -> None: ...


def protocol_for(
    limits: HttpLimits, refusals: RefusalCounter | None = None
) -> type[LimitedHttpProtocol]:
    """The protocol class to give `uvicorn.Config(http=...)`: uvicorn builds one instance per
    connection with its own arguments, so the limits (and where refusals are counted: the
    app's metrics, which never see these requests) travel on the class."""
    return type(
        "ChatRelayHttpProtocol",
        (LimitedHttpProtocol,),
        {"limits": limits, "refusals": refusals},
    )


def _path_of(target: bytes) -> bytes:
    return target.split(b"?", 1)[0]


class LimitedHttpProtocol(HttpToolsProtocol):
    limits: ClassVar[HttpLimits]
    refusals: ClassVar[RefusalCounter | None] = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.url = b""
        self._head_method = False  # the current request is a HEAD: answers carry no body
        self._reading_head = True  # between requests or inside a head: bytes count as head
        self._head_started = False  # a byte of the current head has been parsed
        self._head_bytes = 0
        self._head_timer: TimerHandle | None = None
        self._body_pending = False  # head parsed, body not complete
        self._body_timer: TimerHandle | None = None
        self._last_read = 0.0
        self._write_timer: TimerHandle | None = None
        self._write_backlog = 0
        self._write_resumed = False
        self._linger_timer: TimerHandle | None = None
        self._refused = False  # an answer of ours went out: the rest of the input is dropped
        self._lost = False

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        for timer in (self._head_timer, self._body_timer, self._write_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._write_timer = self._linger_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after our answer: read and drop, so the client sees no reset
        self._unset_keepalive_if_required()
        if self._reading_head:
            self._head_bytes += len(data)
        elif self._body_pending:
            self._last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            # A limit raised inside a parser callback reaches us as the parser's error.
            refusal = exc.__context__
            if not isinstance(refusal, ChatRelayError):
                self.logger.warning("Invalid HTTP request received.")
                refusal = BadRequest("the request is not valid HTTP/1.1")
            self._refuse(refusal)
            return
        if self._reading_head and self._head_bytes > self.limits.max_header_bytes:
            # The head is still incomplete and already too big: stop before it grows.
            self._refuse(self._head_too_large())
        elif self._body_pending and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_check)

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_method = False
        self._head_started = True
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.header_timeout, self._head_timed_out
            )

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_url_bytes:
            raise UriTooLong(f"the request target is longer than {self.limits.max_url_bytes} bytes")

    def on_headers_complete(self) -> None:
        self._head_method = self.parser.get_method() == b"HEAD"
        # The head arrived whole in fewer reads than the running count needed: measure it.
        size = len(self.url) + 16 + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.limits.max_header_bytes:
            raise self._head_too_large()
        if (
            len(self.connections) > self.limits.max_connections
            and _path_of(self.url) not in _EXEMPT_FROM_CAP
        ):
            raise ServiceUnavailable(
                "the server has too many open connections; retry shortly",
                code="too_many_connections",
                retry_after=_RETRY_AFTER_SECONDS,
                limit=LimitKind.CONNECTIONS,
            )
        self._reading_head = False
        self._head_started = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._body_pending = True
        self._last_read = self.loop.time()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._body_pending = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._reading_head = True
        self._head_bytes = 0
        super().on_message_complete()

    # -- timeouts -----------------------------------------------------------------------------

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refused or self._lost:
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # A pipelined head is late while the previous answer still goes out: finish that
            # answer, then close, rather than write a 408 into the middle of it.
            cycle.keep_alive = False
            self._refused = True
            return
        if not self._head_started and self._head_bytes == 0:
            self.transport.close()  # never said a word: nothing to answer
            return
        self._refuse(
            RequestTimeout(
                f"the request head did not arrive within {self.limits.header_timeout:g} s"
            )
        )

    def _body_check(self) -> None:
        self._body_timer = None
        if not self._body_pending or self._refused or self._lost:
            return
        now = self.loop.time()
        cycle = self.cycle
        timeout = self.limits.body_timeout
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            # The app is not reading yet (flow control, or `Expect: 100-continue` not yet
            # answered): the client cannot be late. Count from now.
            self._last_read = now
            self._body_timer = self.loop.call_later(timeout, self._body_check)
            return
        idle = now - self._last_read
        if idle < timeout:
            self._body_timer = self.loop.call_later(timeout - idle, self._body_check)
            return
        self._refuse(
            RequestTimeout(
                f"the request body stalled for {timeout:g} s", limit=LimitKind.BODY_TIMEOUT
            )
        )

    # -- writes the client does not take ------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        self._watch_writes()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._write_resumed = True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._lost and self.transport.get_write_buffer_size():
            self._watch_writes()  # an answer still on its way: a close would wait for it

    def timeout_keep_alive_handler(self) -> None:
        super().timeout_keep_alive_handler()
        if not self._lost and self.transport.get_write_buffer_size():
            self._watch_writes()

    def _unsent_bytes(self) -> int:
        """Written but not yet taken by the client: the transport's buffer plus the kernel's
        send queue. The kernel's part matters: it holds megabytes, and it reports room to the
        transport only once half of it is free, so a client that reads steadily in bursts can
        leave the transport's buffer unchanged for longer than the timeout."""
        unsent = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if _TIOCOUTQ is not None and sock is not None:
            try:
                queued = fcntl.ioctl(sock.fileno(), _TIOCOUTQ, b"\0\0\0\0")
                unsent += struct.unpack("i", queued)[0]
            except (OSError, ValueError):
                pass  # the socket is already gone: the transport's buffer says enough
        return unsent

    def _watch_writes(self) -> None:
        if self._write_timer is None and not self._lost:
            self._write_backlog = self._unsent_bytes()
            self._write_resumed = False
            self._write_timer = self.loop.call_later(self.limits.write_timeout, self._write_check)

    def _write_check(self) -> None:
        self._write_timer = None
        if self._lost:
            return
        backlog = self.transport.get_write_buffer_size()
        waiting = self.flow.write_paused or self.transport.is_closing()
        if backlog == 0 or not waiting:
            return  # delivered, or below the high-water mark and nothing waits on it
        if self._write_resumed or self._unsent_bytes() < self._write_backlog:
            self._watch_writes()  # slow, but moving
            return
        log.warning(
            "%s: dropped a client that read nothing for %g s (%d bytes unsent)",
            self._peer(),
            self.limits.write_timeout,
            backlog,
        )
        self.transport.abort()

    # -- refusing -----------------------------------------------------------------------------

    def _head_too_large(self) -> HeadersTooLarge:
        return HeadersTooLarge(
            f"the request head is larger than {self.limits.max_header_bytes} bytes"
        )

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "client"

    def _refuse(self, error: ChatRelayError) -> None:
        """Answer `error` (when an answer still fits on this connection) and close."""
        if self._refused or self._lost:
            return
        self._refused = True
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
        self._body_pending = False
        cycle = self.cycle
        if self._reading_head:
            # About the next request, which has no cycle yet.
            if cycle is not None and not cycle.response_complete:
                cycle.keep_alive = False  # the previous answer is still going out
                return
            answer = True
        else:
            # About the current request: answer only if the app has not begun to, and no
            # earlier (pipelined) answer is still going out.
            answer = cycle is not None and not cycle.response_started and not self.pipeline
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True  # the app sees the client gone, and writes nothing
                cycle.message_event.set()
        log.warning("%s: %s (%s)", self._peer(), error.code, error.message)
        if self.refusals is not None and error.refused_by is not None:
            self.refusals.request_rejected(error.code, error.refused_by)
        if answer:
            self.transport.write(self._error_response(error))
        self.flow.resume_reading()  # keep reading (and dropping) while we linger
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger_timer = self.loop.call_later(_LINGER_SECONDS, self._end_linger)

    def _end_linger(self) -> None:
        self._linger_timer = None
        if not self._lost:
            self.transport.close()
            if self.transport.get_write_buffer_size():
                self._watch_writes()

    def _error_response(self, error: ChatRelayError) -> bytes:
        status, body = server_layer_error(error, openai_shape=_path_of(self.url) in _OPENAI_PATHS)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: %d\r\n" % len(body))
        if error.retry_after is not None:
            head.append(b"retry-after: %d\r\n" % max(1, round(error.retry_after)))
        head.append(b"connection: close\r\n\r\n")
        if self._head_method:
            return b"".join(head)
        return b"".join([*head, body])
