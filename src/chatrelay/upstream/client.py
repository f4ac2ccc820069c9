"""The only user of httpx: opens upstream chat completion streams and maps failures to errors.

Policy (docs/upstream.md has the full table of codes and settings):

- Retries: exponential backoff with jitter, `Retry-After` / `retry-after-ms` honoured (seconds
  or an HTTP-date), only for retryable failures (connect errors and timeouts, first-byte
  timeouts, 429, 5xx, a connection lost or an in-band server error before any output), and
  only while no chunk with visible output has been handed to the caller: after that a retry
  would duplicate text. Bounded by `max_retries`, by `retry_budget` seconds since the first
  attempt and by the total deadline.
- Timeouts, each with its own code: `connect` (TCP/TLS until the request can be written),
  `first_byte` (request written until the first byte of the body), `idle` (gap between two
  reads of the body), `total` (the whole stream, retries included). A limit of 0 is "none".
- Errors carry the upstream's own message, shortened and with the upstream key removed (the
  whole key, any 8-character piece of it, and masked forms such as `sk-abc***6789`).
"""

from __future__ import annotations

import asyncio
import email.utils
import html
import itertools
import json
import logging
import math
import random
import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from chatrelay.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout
from chatrelay.sse.event import SSEEvent
from chatrelay.sse.parser import SSEParser
from chatrelay.upstream.assembler import ChunkAssembler, ChunkDelta

log = logging.getLogger("chatrelay.upstream")

_MAX_ERROR_BODY = 8192  # bytes of a non-2xx body we read
_MAX_JSON_BODY = 4 * 1024 * 1024  # bytes of a 2xx JSON body (a non-streamed completion)
_MAX_ERROR_MESSAGE = 300  # characters of the upstream's own message we carry
_BACKOFF_BASE = 0.25
_BACKOFF_CAP = 8.0
_WRITE_TIMEOUT = 30.0

_REDACTED = "[redacted]"
_FRAGMENT = 8  # a run of this many characters of the key is treated as the key
_TOKEN = re.compile(r"[A-Za-z0-9_\-.~+/=*•…]+")
_MASK = re.compile(r"[*•…]|\.{3}")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_REQUEST_ID = re.compile(r"[A-Za-z0-9_\-:.]{1,100}")

# Which limit the watchdog timer currently enforces; also the timeout's error code suffix.
CONNECT, FIRST_BYTE, IDLE, TOTAL = "connect", "first_byte", "idle", "total"


@dataclass(frozen=True)
class UpstreamConfig:
    base_url: str
    api_key: str | None
    connect_timeout: float = 10.0
    first_byte_timeout: float = 60.0
    idle_timeout: float = 60.0
    total_timeout: float = 600.0
    max_retries: int = 2
    retry_budget: float = 20.0
    include_usage: bool = True
    max_event_bytes: int = 1_048_576


# -- secrets ------------------------------------------------------------------------------


def redact(text: str, secret: str | None) -> str:
    """`text` with the secret removed: whole, any `_FRAGMENT`-long piece, or masked.

    Upstreams echo keys in several shapes: whole ("Incorrect API key provided: sk-…"),
    masked ("sk-proj-****…KwQA", OpenAI), or cut short (a prefix, by them or by our own
    truncation of a body). Every token of key-like characters is checked.
    """
    if not secret:
        return text
    text = text.replace(secret, _REDACTED)
    if len(secret) < _FRAGMENT:
        return text
    pieces = {secret[i : i + _FRAGMENT] for i in range(len(secret) - _FRAGMENT + 1)}

    def scrub(match: re.Match[str]) -> str:
        token = match.group(0)
        return _REDACTED if _leaks(token, secret, pieces) else token

    return _TOKEN.sub(scrub, text)


def _leaks(token: str, secret: str, pieces: set[str]) -> bool:
    parts = _MASK.split(token)  # the visible runs of a masked token (one run if unmasked)
    for part in parts:
        for i in range(len(part) - _FRAGMENT + 1):
            if part[i : i + _FRAGMENT] in pieces:
                return True
    if len(parts) > 1:
        # Masked: a visible head that starts the key or a visible tail that ends it.
        head, tail = parts[0], parts[-1].rstrip(".,;:")
        if len(head) >= 3 and secret.startswith(head):
            return True
        if len(tail) >= 4 and secret.endswith(tail):
            return True
    return False


def _scrub(exc: UpstreamError, secret: str | None) -> None:
    """Redact an error in place (the chunk assembler's in-band errors are not redacted)."""
    clean = redact(exc.message, secret)
    if clean != exc.message:
        exc.message = clean
        exc.args = (clean,)


def _shorten(text: str, limit: int = _MAX_ERROR_MESSAGE) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


# -- HTTP answers -------------------------------------------------------------------------


def parse_retry_after(headers: httpx.Headers, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP-date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            millis = float(raw_ms.strip())
        except ValueError:
            millis = math.nan
        if math.isfinite(millis):
            return max(0.0, millis / 1000.0)
    raw = headers.get("retry-after")
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC without saying so
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def _describe_json_error(payload: Any) -> str:
    """The message of an error body: OpenAI `{"error": {...}}`, `{"detail"}`, `{"message"}`."""
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, str):
        return error
    if not isinstance(error, dict):
        return ""
    message = error.get("message") or error.get("detail") or ""
    if isinstance(message, (dict, list)):
        message = json.dumps(message, ensure_ascii=False)
    parts = []
    for key in ("type", "code"):
        value = error.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "":
            parts.append(f"{key}={value}")
    detail = str(message)
    if parts:
        detail = f"{detail} ({', '.join(parts)})" if detail else ", ".join(parts)
    return detail


def _error_kind(payload: Any) -> str:
    """The upstream's own error code/type, e.g. OpenAI's `insufficient_quota`."""
    error = payload.get("error", payload) if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return ""
    return " ".join(str(error.get(key) or "") for key in ("code", "type"))


def _body_detail(text: str, content_type: str) -> tuple[str, Any]:
    """What an answer's body says, for a message; and its JSON, if it is JSON."""
    payload: Any = None
    if "json" in content_type or text.startswith(("{", "[")):
        try:
            payload = json.loads(text)
        except (ValueError, RecursionError):
            payload = None
        detail = _describe_json_error(payload) if payload is not None else ""
        if detail:
            return detail, payload
    if not text:
        return "empty body", payload
    if "html" in content_type or text[:512].lower().startswith(("<!doctype", "<html")):
        title = _TITLE.search(text)
        name = _shorten(html.unescape(title.group(1)), 120) if title else ""
        return (f"an HTML page ({name})" if name else "an HTML page"), payload
    return text, payload


def error_from_response(
    status: int,
    body: bytes,
    content_type: str,
    *,
    secret: str | None,
    retry_after: float | None = None,
    request_id: str | None = None,
    location: str | None = None,
) -> UpstreamError:
    """A typed error for a non-2xx upstream answer, carrying the upstream's own message."""
    text = body.decode("utf-8", "replace").strip()
    detail, payload = _body_detail(text, content_type)
    if 300 <= status < 400:
        where = f" to {location}" if location else ""
        detail = f"redirected{where}; check OPENAI_BASE_URL ({detail})"
    # Redact before shortening, so that a cut can never leave a piece of the key behind
    # (redact() catches pieces too, this is belt and braces).
    detail = _shorten(redact(detail, secret))
    message = f"upstream answered HTTP {status}: {detail}"
    if request_id and _REQUEST_ID.fullmatch(request_id):
        message += f" [upstream request id {request_id}]"
    message = redact(message, secret)
    if status in (401, 403):
        return UpstreamError(message, code="upstream_auth_failed", upstream_status=status)
    if status == 404 or 300 <= status < 400:
        return UpstreamError(message, code="upstream_not_found", upstream_status=status)
    if status == 429:
        # OpenAI answers 429 `insufficient_quota` when billing is exhausted: waiting won't help.
        quota = "insufficient_quota" in _error_kind(payload)
        return UpstreamError(
            message,
            code="upstream_rate_limited",
            upstream_status=status,
            retry_after=retry_after,
            retryable=not quota,
        )
    if status >= 500:
        return UpstreamError(
            message,
            code="upstream_unavailable",
            upstream_status=status,
            retry_after=retry_after,
            retryable=True,
        )
    return UpstreamError(message, code="upstream_bad_request", upstream_status=status)


def _http_error(response: httpx.Response, body: bytes, secret: str | None) -> UpstreamError:
    headers = response.headers
    return error_from_response(
        response.status_code,
        body,
        headers.get("content-type", ""),
        secret=secret,
        retry_after=parse_retry_after(headers),
        request_id=headers.get("x-request-id") or headers.get("request-id"),
        location=headers.get("location"),
    )


def _completion_as_chunk(payload: dict[str, Any]) -> dict[str, Any] | None:
    """A non-streamed `chat.completion` rewritten as one chunk (its messages as deltas)."""
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices:
        return None
    converted = []
    for choice in choices:
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            return None
        item = {k: v for k, v in choice.items() if k != "message"}
        item["delta"] = choice["message"]
        converted.append(item)
    chunk = {k: v for k, v in payload.items() if k != "choices"}
    chunk["choices"] = converted
    return chunk


async def _read_limited(response: httpx.Response, into: bytearray, limit: int) -> bytes:
    """Read the (decoded) body into `into`, at most `limit` bytes; `into` keeps a partial read."""
    async for chunk in response.aiter_bytes():
        into.extend(chunk)
        if len(into) >= limit:
            break
    return bytes(into[:limit])


# -- the stream ---------------------------------------------------------------------------


@dataclass
class _Watchdog:
    """One asyncio timer per attempt, re-armed as the attempt moves from phase to phase.

    `phase` is the phase whose limit was armed last (`seconds`); `kind` is the limit the
    timer stands for now (that phase's, or the total deadline when it comes first), so a
    timeout is named without comparing clocks after the fact.
    """

    timer: asyncio.Timeout
    deadline: float | None  # loop time; None = no total limit
    phase: str = CONNECT
    seconds: float = 0.0
    kind: str = CONNECT
    error_response: httpx.Response | None = None
    error_body: bytearray = field(default_factory=bytearray)

    def arm(self, phase: str, seconds: float) -> None:
        """Enforce `seconds` from now for `phase`, or the total deadline when that is nearer."""
        self.phase, self.seconds = phase, seconds
        now = asyncio.get_running_loop().time()
        when = now + seconds if seconds > 0 else None
        if self.deadline is not None and (when is None or when >= self.deadline):
            self.timer.reschedule(self.deadline)
            self.kind = TOTAL
        else:
            self.timer.reschedule(when)
            self.kind = phase

    def pause(self) -> None:
        """No timer while a delta is with the caller: firing would cancel the caller's awaits."""
        self.timer.reschedule(None)

    def resume(self) -> None:
        """The phase limit starts again (the caller's time is not the upstream's silence);
        the total deadline stays put, and fires at once if it passed meanwhile."""
        self.arm(self.phase, self.seconds)


class UpstreamStream:
    """One chat completion stream: iterate for `ChunkDelta`s; `assembler` holds the message.

    `attempts` counts the requests made (1 + retries).
    """

    def __init__(self, client: UpstreamClient, body: dict[str, Any]) -> None:
        self._client = client
        self._body = body
        self.assembler = ChunkAssembler()
        self.attempts = 0

    async def __aiter__(self) -> AsyncGenerator[ChunkDelta, None]:
        cfg = self._client.config
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + cfg.total_timeout if cfg.total_timeout > 0 else None
        while True:
            self.attempts += 1
            self.assembler = ChunkAssembler()
            emitted = False
            try:
                async with aclosing(self._attempt(deadline)) as deltas:
                    async for delta in deltas:
                        if delta.content or delta.reasoning or delta.refusal or delta.tool_calls:
                            emitted = True
                        yield delta
                return
            except UpstreamError as exc:
                _scrub(exc, cfg.api_key)
                wait = self._retry_wait(exc, emitted, started, deadline)
                if wait is None:
                    if self.attempts > 1:
                        exc.message = f"{exc.message} (gave up after {self.attempts} attempts)"
                        exc.args = (exc.message,)
                    log.warning(
                        "upstream stream failed: %s%s after %d attempt(s): %s",
                        exc.code,
                        f" (HTTP {exc.upstream_status})" if exc.upstream_status else "",
                        self.attempts,
                        exc.message,
                    )
                    raise
                log.warning(
                    "upstream attempt %d failed (%s); retrying in %.2fs",
                    self.attempts,
                    exc.code,
                    wait,
                )
                await asyncio.sleep(wait)

    def _retry_wait(
        self, exc: UpstreamError, emitted: bool, started: float, deadline: float | None
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up with `exc`."""
        cfg = self._client.config
        if emitted or not exc.retryable or self.attempts > cfg.max_retries:
            return None
        backoff = min(_BACKOFF_CAP, _BACKOFF_BASE * 2.0 ** (self.attempts - 1))
        wait = max(backoff * (0.5 + random.random()), exc.retry_after or 0.0)
        resume = asyncio.get_running_loop().time() + wait
        if resume - started > cfg.retry_budget:
            return None
        if deadline is not None and resume >= deadline:
            return None
        return wait

    async def _attempt(self, deadline: float | None) -> AsyncGenerator[ChunkDelta, None]:
        cfg = self._client.config
        secret = cfg.api_key
        parser = SSEParser(max_line_bytes=cfg.max_event_bytes)
        assembler = self.assembler
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout(None) as timer:
                watchdog = _Watchdog(timer, deadline)
                watchdog.arm(CONNECT, cfg.connect_timeout)

                async def trace(name: str, info: dict[str, Any]) -> None:
                    # httpcore reports when the connection is ready and the request goes out:
                    # from then on it is the first-byte limit that counts.
                    if watchdog.phase == CONNECT and name.endswith("send_request_headers.started"):
                        watchdog.arm(FIRST_BYTE, cfg.first_byte_timeout)

                http = self._client.http
                request = http.build_request(
                    "POST",
                    "chat/completions",
                    json=self._body,
                    headers={"Accept": "text/event-stream", "Accept-Encoding": "identity"},
                    extensions={"trace": trace},
                )
                response = await http.send(request, stream=True)
                if watchdog.phase == CONNECT:  # a transport that does not trace
                    watchdog.arm(FIRST_BYTE, cfg.first_byte_timeout)
                content_type = response.headers.get("content-type", "").lower()
                if response.status_code >= 300:
                    watchdog.error_response = response
                    body = await _read_limited(response, watchdog.error_body, _MAX_ERROR_BODY)
                    raise _http_error(response, body, secret)
                if "json" in content_type:
                    for whole in await self._json_answer(response, assembler):
                        watchdog.pause()
                        yield whole
                    return
                if "html" in content_type:
                    body = await _read_limited(response, bytearray(), _MAX_ERROR_BODY)
                    page, _ = _body_detail(body.decode("utf-8", "replace").strip(), content_type)
                    raise UpstreamProtocolError(
                        f"upstream answered {_shorten(redact(page, secret))}, not an event "
                        "stream; check OPENAI_BASE_URL"
                    )
                async for chunk in response.aiter_bytes():
                    watchdog.arm(IDLE, cfg.idle_timeout)
                    for event in parser.feed(chunk):
                        delta = assembler.feed(event)
                        if delta is not None:
                            # The timer cancels this task when it fires, so it must not run
                            # while the caller holds the delta and awaits things of its own.
                            watchdog.pause()
                            yield delta
                            watchdog.resume()
                    if assembler.done:
                        break
                for event in parser.close():
                    delta = assembler.feed(event)
                    if delta is not None:
                        watchdog.pause()
                        yield delta
                        watchdog.resume()
                assembler.finish()
        except TimeoutError:
            raise self._timeout_error(watchdog) from None
        except httpx.ConnectTimeout:
            raise _timeout(CONNECT, cfg.connect_timeout) from None
        except httpx.ConnectError as exc:
            raise UpstreamError(
                f"could not connect to the upstream: {_shorten(redact(str(exc), secret), 200)}",
                code="upstream_unreachable",
                retryable=True,
            ) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            if assembler.finish_reason is not None:
                # The upstream said the answer was complete, then the connection broke
                # before `[DONE]` (or the usage chunk): the message is whole.
                log.info("upstream connection broke after finish_reason: %s", type(exc).__name__)
                return
            raise UpstreamError(
                f"upstream connection broke: {type(exc).__name__}",
                code="upstream_connection_lost",
                retryable=True,
            ) from None
        except httpx.DecodingError:
            raise UpstreamProtocolError(
                "upstream body could not be decoded (Content-Encoding)"
            ) from None
        except httpx.TimeoutException:  # httpx's own write timeout
            raise _timeout(FIRST_BYTE, cfg.first_byte_timeout) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"upstream request failed: {type(exc).__name__}", code="upstream_error"
            ) from None
        finally:
            if response is not None:
                await response.aclose()

    @staticmethod
    async def _json_answer(response: httpx.Response, assembler: ChunkAssembler) -> list[ChunkDelta]:
        """A 2xx JSON answer: an error object (in-band error) or a non-streamed completion.

        Some OpenAI-compatible servers ignore `stream: true`; their whole answer is replayed
        as one chunk, so the message is still recorded.
        """
        body = await _read_limited(response, bytearray(), _MAX_JSON_BODY)
        text = body.decode("utf-8", "replace")
        try:
            payload: Any = json.loads(text)
        except (ValueError, RecursionError):
            payload = None
        if isinstance(payload, dict) and payload.get("error"):
            assembler.feed(SSEEvent(text))  # raises the in-band error, as in a stream
        chunk = _completion_as_chunk(payload) if isinstance(payload, dict) else None
        if chunk is None:
            raise UpstreamProtocolError(
                "upstream answered JSON that is neither an event stream nor a chat completion"
            )
        delta = assembler.feed(SSEEvent(json.dumps(chunk)))
        assembler.finish()
        return [] if delta is None else [delta]

    def _timeout_error(self, watchdog: _Watchdog) -> UpstreamError:
        cfg = self._client.config
        if watchdog.error_response is not None:
            # The status line came, its body did not: report the status, not a timeout.
            return _http_error(watchdog.error_response, bytes(watchdog.error_body), cfg.api_key)
        limits = {
            CONNECT: cfg.connect_timeout,
            FIRST_BYTE: cfg.first_byte_timeout,
            IDLE: cfg.idle_timeout,
            TOTAL: cfg.total_timeout,
        }
        return _timeout(watchdog.kind, limits[watchdog.kind])


def _timeout(kind: str, limit: float) -> UpstreamTimeout:
    messages = {
        CONNECT: f"could not connect to the upstream within {limit:g}s",
        FIRST_BYTE: f"upstream sent no data within {limit:g}s",
        IDLE: f"upstream went quiet for {limit:g}s mid-stream",
        TOTAL: f"upstream stream exceeded the total limit of {limit:g}s",
    }
    # Nothing but the total limit rules out a retry; whether output was already handed on
    # (which does) is the retry loop's business.
    return UpstreamTimeout(messages[kind], code=f"upstream_timeout_{kind}", retryable=kind != TOTAL)


_POOL_SHARDS = 8


class UpstreamClient:
    """Pooled HTTP clients for one OpenAI-compatible base URL.

    Streams are spread round-robin over a few httpx clients: httpcore scans every
    connection of its pool each time a request starts or ends, which at thousands of
    concurrent streams costs more than the streaming itself (encode/httpcore#1035).
    """

    def __init__(self, config: UpstreamConfig, *, shards: int = _POOL_SHARDS) -> None:
        self.config = config
        headers = {"User-Agent": "chatrelay"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._shards = [
            httpx.AsyncClient(
                base_url=config.base_url.rstrip("/") + "/",
                headers=headers,
                timeout=httpx.Timeout(
                    connect=config.connect_timeout or None,
                    read=None,
                    write=_WRITE_TIMEOUT,
                    pool=None,
                ),
                limits=httpx.Limits(
                    max_connections=None, max_keepalive_connections=max(8, 200 // shards)
                ),
                trust_env=False,
            )
            for _ in range(max(1, shards))
        ]
        self._next = itertools.cycle(self._shards)

    @property
    def http(self) -> httpx.AsyncClient:
        """The next client in turn; take it once per request."""
        return next(self._next)

    async def aclose(self) -> None:
        for client in self._shards:
            await client.aclose()

    def chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request body as sent: streaming on, usage asked for unless turned off."""
        sent = dict(body)
        sent["stream"] = True
        if self.config.include_usage:
            options = dict(sent.get("stream_options") or {})
            options.setdefault("include_usage", True)
            sent["stream_options"] = options
        return sent

    def stream_chat(self, body: dict[str, Any]) -> UpstreamStream:
        return UpstreamStream(self, self.chat_body(body))

    async def list_models(self) -> dict[str, Any]:
        secret = self.config.api_key
        try:
            response = await self.http.get("models", timeout=self.config.first_byte_timeout or None)
        except httpx.ConnectTimeout:
            raise _timeout(CONNECT, self.config.connect_timeout) from None
        except httpx.TimeoutException:
            raise UpstreamTimeout(
                "upstream did not list its models in time", code="upstream_timeout_first_byte"
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"could not reach the upstream: {type(exc).__name__}", code="upstream_unreachable"
            ) from None
        if response.status_code >= 300:
            raise _http_error(response, response.content[:_MAX_ERROR_BODY], secret)
        try:
            payload = response.json()
        except ValueError:
            raise UpstreamProtocolError("upstream model list is not JSON") from None
        if not isinstance(payload, dict):
            raise UpstreamProtocolError("upstream model list is not an object")
        return payload
