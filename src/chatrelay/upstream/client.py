"""The request loop: opens upstream chat completion streams, times them and retries them.

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
  whole key, any 8-character piece of it, and masked forms such as `sk-abc***6789`). Which
  error a failure is, is `http_errors.py`'s business; the redaction is `redact.py`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from chatrelay.config_upstreams import AuthStyle, TrustSettings, UpstreamRoute, strip_credentials
from chatrelay.errors import UpstreamError, UpstreamProtocolError
from chatrelay.json_values import dumps_fast, loads_upstream
from chatrelay.observe import NULL_OBSERVER, Observer
from chatrelay.sse.event import SSEEvent
from chatrelay.sse.parser import SSEEventTooLarge, SSEParser
from chatrelay.upstream.assembler import ChunkAssembler, ChunkDelta
from chatrelay.upstream.body import Trace, body_chunks
from chatrelay.upstream.http11 import Http11Transport
from chatrelay.upstream.http_errors import Call, http_error, not_an_event_stream, transport_error
from chatrelay.upstream.redact import scrub
from chatrelay.upstream.timeouts import Phase, timeout_error
from chatrelay.upstream.tls import tls_context
from chatrelay.upstream.watchdog import Watchdog

log = logging.getLogger("chatrelay.upstream")

_MAX_ERROR_BODY = 8192  # bytes of a non-2xx body we read
_MAX_JSON_BODY = 4 * 1024 * 1024  # bytes of a 2xx JSON body (a non-streamed completion)
_BACKOFF_BASE = 0.25
_BACKOFF_CAP = 8.0
_WRITE_TIMEOUT = 30.0
_DRAIN_SECONDS = 0.5  # how long the end of a body after `[DONE]` may take to arrive
_DRAIN_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class UpstreamConfig:
    base_url: str
    api_key: str | None = field(repr=False)
    connect_timeout: float = 10.0
    first_byte_timeout: float = 60.0
    idle_timeout: float = 60.0
    total_timeout: float = 600.0
    max_retries: int = 2
    retry_budget: float = 20.0
    include_usage: bool = True
    max_event_bytes: int = 1_048_576
    name: str = "default"
    auth: AuthStyle = AuthStyle.BEARER
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    trust: TrustSettings = field(default_factory=TrustSettings)
    proxy: str | None = field(default=None, repr=False)
    proxy_setting: str | None = None  # the variable that named the proxy
    source: str = "OPENAI_BASE_URL"  # the setting to fix when the URL is wrong

    @classmethod
    def for_route(
        cls,
        route: UpstreamRoute,
        *,
        base_url: str | None = None,
        retry_budget: float = 20.0,
        include_usage: bool = True,
        max_event_bytes: int = 1_048_576,
    ) -> UpstreamConfig:
        """A configured upstream; `base_url` overrides its URL (the built-in mock's)."""
        return cls(
            base_url=base_url or route.base_url,
            api_key=route.api_key,
            connect_timeout=route.timeouts.connect,
            first_byte_timeout=route.timeouts.first_byte,
            idle_timeout=route.timeouts.idle,
            total_timeout=route.timeouts.total,
            max_retries=route.max_retries,
            retry_budget=retry_budget,
            include_usage=include_usage,
            max_event_bytes=max_event_bytes,
            name=route.name,
            auth=route.auth,
            headers=route.headers,
            trust=route.trust,
            proxy=route.proxy,
            proxy_setting=route.proxy_setting,
            source=route.source,
        )

    @cached_property
    def secrets(self) -> tuple[str, ...]:
        """What redaction removes from every upstream-derived message (made once: every
        attempt and every error asks for it)."""
        found = [self.api_key or "", *self.headers.values()]
        if self.proxy:
            found.append(urlsplit(self.proxy).password or "")
        return tuple(value for value in found if len(value) >= 4)

    def endpoint(self, name: str) -> str:
        """`<base path>/<name>`, keeping the base URL's query string (Azure's
        `api-version`) on every request."""
        parts = urlsplit(self.base_url)
        path = parts.path.rstrip("/") + "/" + name
        return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))

    @property
    def limits(self) -> dict[Phase, float]:
        """Seconds per phase of an attempt (0 = no limit)."""
        return {
            Phase.CONNECT: self.connect_timeout,
            Phase.FIRST_BYTE: self.first_byte_timeout,
            Phase.IDLE: self.idle_timeout,
            Phase.TOTAL: self.total_timeout,
        }


# -- answers that are not an event stream -------------------------------------------------


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


async def _drain_for_reuse(body: AsyncIterator[bytes]) -> None:
    """Read what follows `[DONE]` (the end of the chunked body), briefly and boundedly.

    A response closed before its body ends cannot go back to the pool, so without this
    every stream would pay a new TCP (and TLS) connection to the upstream. An upstream
    that keeps sending, or holds the body open, loses its connection instead.
    """
    drained = 0
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for chunk in body:
                drained += len(chunk)
                if drained > _DRAIN_MAX_BYTES:
                    return


# -- the stream ---------------------------------------------------------------------------


class UpstreamStream:
    """One chat completion stream: iterate for `ChunkDelta`s; `assembler` holds the message.

    `attempts` counts the requests made (1 + retries).
    """

    def __init__(self, client: UpstreamClient, body: dict[str, Any]) -> None:
        self._client = client
        self._body = body
        self.assembler = ChunkAssembler()
        self.attempts = 0
        # The first attempt's request, built (and maybe written) by `send_early`.
        self._early: httpx.Request | None = None

    def send_early(self) -> None:
        """Write the first attempt's request now, if a pooled connection is at hand, so
        that the upstream works on it while the caller finishes its own work (records the
        turn) before the stream is read; otherwise it goes out with the first attempt."""
        self._early = self._client.chat_request(self._body)
        self._client.send_early(self._early)

    def _take_early(self) -> httpx.Request | None:
        """The first attempt's request, no longer held here (nor in a local of the
        attempt's frame, which lives as long as the stream)."""
        request, self._early = self._early, None
        return request

    def discard_early(self) -> None:
        """The stream will not be read: close the connection of an early request."""
        request, self._early = self._early, None
        if request is not None:
            self._client.discard_early(request)

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
                scrub(exc, cfg.secrets)
                wait = self._retry_wait(exc, emitted, started, deadline)
                if wait is None:
                    if self.attempts > 1:
                        exc.message = f"{exc.message} (gave up after {self.attempts} attempts)"
                        exc.args = (exc.message,)
                    log.warning(
                        "upstream %s stream failed: %s%s after %d attempt(s): %s",
                        cfg.name,
                        exc.code,
                        f" (HTTP {exc.upstream_status})" if exc.upstream_status else "",
                        self.attempts,
                        exc.message,
                    )
                    raise
                self._client.observer.upstream_retry(exc.code)
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
        secret = cfg.secrets
        parser = SSEParser(max_line_bytes=cfg.max_event_bytes)
        assembler = self.assembler
        response: httpx.Response | None = None
        scope = asyncio.timeout(None)
        watchdog = Watchdog(scope, deadline)
        try:
            async with scope:
                watchdog.arm(Phase.CONNECT, cfg.connect_timeout)

                async def trace(name: str, info: dict[str, Any]) -> None:
                    # httpcore reports when the connection is ready and the request goes out:
                    # from then on it is the first-byte limit that counts.
                    if watchdog.phase == Phase.CONNECT and name.endswith(
                        "send_request_headers.started"
                    ):
                        watchdog.arm(Phase.FIRST_BYTE, cfg.first_byte_timeout)

                sent = time.monotonic()
                response = await self._client.send_chat(self._body, trace, self._take_early())
                self._client.observer.upstream_responded(time.monotonic() - sent)
                if watchdog.phase == Phase.CONNECT:  # a transport that does not trace
                    watchdog.arm(Phase.FIRST_BYTE, cfg.first_byte_timeout)
                content_type = response.headers.get("content-type", "").lower()
                if response.status_code >= 300:
                    watchdog.error_response = response
                    body = await _read_limited(response, watchdog.error_body, _MAX_ERROR_BODY)
                    raise self._client.http_error(response, body, "POST", "chat/completions")
                if "json" in content_type:
                    for whole in await self._json_answer(response, assembler):
                        watchdog.pause()
                        yield whole
                    return
                if "html" in content_type:
                    body = await _read_limited(response, bytearray(), _MAX_ERROR_BODY)
                    raise not_an_event_stream(body, content_type, secret, source=cfg.source)
                chunks = body_chunks(response)
                failure: SSEEventTooLarge | None = None
                async for chunk in chunks:
                    watchdog.arm(Phase.IDLE, cfg.idle_timeout)
                    try:
                        events = parser.feed(chunk)
                    except SSEEventTooLarge as too_large:
                        # The events completed before the oversized line still count
                        # (a chunk may hold both), then the stream fails.
                        events, failure = list(too_large.events), too_large
                    for event in events:
                        delta = assembler.feed(event)
                        if delta is not None:
                            # The timer cancels this task when it fires, so it must not run
                            # while the caller holds the delta and awaits things of its own.
                            watchdog.pause()
                            yield delta
                            watchdog.resume()
                    if failure is not None:
                        raise failure
                    if assembler.done:
                        await _drain_for_reuse(chunks)
                        break
                for event in parser.close():
                    delta = assembler.feed(event)
                    if delta is not None:
                        watchdog.pause()
                        yield delta
                        watchdog.resume()
                assembler.finish(parser.error_field)
        except TimeoutError:
            raise self._timeout_error(watchdog) from None
        except httpx.HTTPError as exc:
            error = transport_error(exc, Call.STREAM, secret=secret, limits=cfg.limits)
            if error.code == "upstream_connection_lost" and assembler.finish_reason is not None:
                # The upstream said the answer was complete, then the connection broke
                # before `[DONE]` (or the usage chunk): the message is whole.
                log.info("upstream connection broke after finish_reason: %s", type(exc).__name__)
                return
            raise error from None
        finally:
            watchdog.close()
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
            payload: Any = loads_upstream(text)
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

    def _timeout_error(self, watchdog: Watchdog) -> UpstreamError:
        cfg = self._client.config
        if watchdog.error_response is not None:
            # The status line came, its body did not: report the status, not a timeout.
            return self._client.http_error(
                watchdog.error_response, bytes(watchdog.error_body), "POST", "chat/completions"
            )
        return timeout_error(watchdog.kind, cfg.limits[watchdog.kind])


class UpstreamClient:
    """The pooled HTTP client for one OpenAI-compatible base URL.

    httpx is the API, not httpcore the transport: httpcore scans its whole pool per
    request start and end (encode/httpcore#1035) and parses HTTP in pure Python (h11).
    An upstream reached directly goes through chatrelay's own HTTP/1.1 connections
    (`http11.Http11Transport`: a pool taken from and returned to in constant time, C
    parsing, a new connection for ~30 µs of CPU against aiohttp's ~80-110); one behind a
    proxy through aiohttp's (`transport.UpstreamTransport`), which speaks to proxies.
    """

    def __init__(self, config: UpstreamConfig, *, observer: Observer = NULL_OBSERVER) -> None:
        self.config = config
        self.observer = observer
        headers = {"User-Agent": "chatrelay", **config.headers}
        if config.api_key and config.auth is AuthStyle.API_KEY:
            headers["api-key"] = config.api_key
        elif config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        timeout = httpx.Timeout(
            connect=config.connect_timeout or None, read=None, write=_WRITE_TIMEOUT, pool=None
        )
        self._transport: httpx.AsyncBaseTransport
        if config.proxy:
            # aiohttp (and its import time) only for an upstream behind a proxy.
            from chatrelay.upstream.transport import UpstreamTransport

            self._transport = UpstreamTransport(
                tls_context(config.trust), proxy=config.proxy, proxy_setting=config.proxy_setting
            )
        else:
            self._transport = Http11Transport(tls_context(config.trust))
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=timeout,
            transport=self._transport,
            trust_env=False,
        )
        # A stream's request is built from parts made once: the client's per-request
        # merging of URLs, headers and cookies was a tenth of a short stream's CPU.
        self._chat_url = httpx.URL(config.endpoint("chat/completions"))
        self._models_url = httpx.URL(config.endpoint("models"))
        self._chat_headers = httpx.Headers(
            {
                **headers,
                "Accept": "text/event-stream",
                "Accept-Encoding": "identity",
                "Content-Type": "application/json",
            }
        )
        # As httpx's `Request` would: `Host` first unless a configured header sets it.
        host = [] if "Host" in self._chat_headers else [(b"Host", self._chat_url.netloc)]
        self._chat_head = [*host, *self._chat_headers.raw]
        self._chat_timeouts = timeout.as_dict()

    @property
    def http(self) -> httpx.AsyncClient:
        """For one-off calls (the model list); streams go through `send_chat`."""
        return self._http

    def chat_request(self, body: dict[str, Any]) -> httpx.Request:
        """The POST of a chat completion request, its body read.

        Built with the headers httpx would add (`Host`, `Content-Length`) already in
        place and the body as a stream: `Request(content=...)` re-checks the headers'
        encoding and merges its own on every call (12 against 5 µs).
        """
        content = dumps_fast(body).encode()
        request = httpx.Request(
            "POST",
            self._chat_url,
            headers=httpx.Headers(
                [*self._chat_head, (b"Content-Length", b"%d" % len(content))], encoding="ascii"
            ),
            stream=httpx.ByteStream(content),
            extensions={"timeout": self._chat_timeouts},
        )
        request.read()
        return request

    def send_early(self, request: httpx.Request) -> bool:
        """Write `request` at once if the transport can (`Http11Transport.send_early`)."""
        transport = self._transport
        return isinstance(transport, Http11Transport) and transport.send_early(request)

    def discard_early(self, request: httpx.Request) -> None:
        if isinstance(self._transport, Http11Transport):
            self._transport.discard_early(request)

    async def send_chat(
        self, body: dict[str, Any], trace: Trace, early: httpx.Request | None = None
    ) -> httpx.Response:
        """POST a chat completion request (`early`: the same request, built by
        `chat_request` and perhaps written by `send_early`, whose answer is then waited
        for); the response's body is left to stream."""
        request = early if early is not None else self.chat_request(body)
        request.extensions["trace"] = trace
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self._http.aclose()

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

    def describe(self) -> str:
        """One line for the start-up log: where the upstream is, how it is reached."""
        cfg = self.config
        key = f"key set, sent as {cfg.auth}" if cfg.api_key else "no key"
        proxy = f", through proxy {strip_credentials(cfg.proxy)}" if cfg.proxy else ""
        extra = f", extra headers {', '.join(sorted(cfg.headers))}" if cfg.headers else ""
        ca = ", private CA" if cfg.trust.ca_file else ""
        return f"upstream {cfg.name}: {strip_credentials(cfg.base_url)} ({key}{proxy}{extra}{ca})"

    def http_error(
        self, response: httpx.Response, body: bytes, method: str, name: str
    ) -> UpstreamError:
        """A non-2xx answer to `method <endpoint name>`, naming the URL and its setting."""
        target = f"{method} {strip_credentials(self.config.endpoint(name))}"
        return http_error(
            response,
            body,
            self.config.secrets,
            target=target,
            source=self.config.source,
            proxy_setting=self.config.proxy_setting,
        )

    async def list_models(self) -> dict[str, Any]:
        secret = self.config.secrets
        try:
            response = await self.http.get(
                self._models_url, timeout=self.config.first_byte_timeout or None
            )
        except httpx.HTTPError as exc:
            raise transport_error(
                exc, Call.MODELS, secret=secret, limits=self.config.limits
            ) from None
        if response.status_code >= 300:
            raise self.http_error(response, response.content[:_MAX_ERROR_BODY], "GET", "models")
        try:
            payload = response.json()
        except ValueError:
            raise UpstreamProtocolError("upstream model list is not JSON") from None
        if not isinstance(payload, dict):
            raise UpstreamProtocolError("upstream model list is not an object")
        return payload
