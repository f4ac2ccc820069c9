"""The only user of httpx: opens upstream chat completion streams and maps failures to errors.

Retries (exponential backoff with jitter, `Retry-After` honoured) happen only before the
first chunk with visible output has been handed to the caller: after that a retry would
duplicate text. Timeouts: connect, first byte, idle gap between bytes, total duration,
each with its own error code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from chatrelay.errors import UpstreamError, UpstreamTimeout
from chatrelay.sse.parser import SSEParser
from chatrelay.upstream.openai import ChunkAssembler, ChunkDelta

log = logging.getLogger("chatrelay.upstream")

_MAX_ERROR_BODY = 8192
_MAX_ERROR_MESSAGE = 300


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


def _redact(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "[redacted]")
    return text


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None


def error_from_response(
    status: int,
    body: bytes,
    content_type: str,
    *,
    secret: str | None,
    retry_after: float | None = None,
) -> UpstreamError:
    """A typed error for a non-2xx upstream answer, carrying the upstream's own message."""
    text = body.decode("utf-8", "replace").strip()
    detail = ""
    if "json" in content_type or text.startswith("{"):
        try:
            payload = json.loads(text)
            error = payload.get("error", payload) if isinstance(payload, dict) else payload
            if isinstance(error, dict):
                detail = str(error.get("message") or error.get("detail") or "")
            elif isinstance(error, str):
                detail = error
        except ValueError:
            detail = ""
    if not detail:
        if not text:
            detail = "empty body"
        elif "html" in content_type or text.lstrip().lower().startswith(("<!doctype", "<html")):
            detail = "an HTML page"
        else:
            detail = text
    detail = _redact(detail, secret)
    if len(detail) > _MAX_ERROR_MESSAGE:
        detail = detail[:_MAX_ERROR_MESSAGE] + "…"
    message = f"upstream answered HTTP {status}: {detail}"
    if status in (401, 403):
        return UpstreamError(message, code="upstream_auth_failed", upstream_status=status)
    if status == 404:
        return UpstreamError(message, code="upstream_not_found", upstream_status=status)
    if status == 429:
        return UpstreamError(
            message,
            code="upstream_rate_limited",
            upstream_status=status,
            retry_after=retry_after,
            retryable=True,
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


class UpstreamStream:
    """One chat completion stream: iterate for `ChunkDelta`s; `assembler` holds the message."""

    def __init__(self, client: UpstreamClient, body: dict[str, Any]) -> None:
        self._client = client
        self._body = body
        self.assembler = ChunkAssembler()
        self.attempts = 0

    async def __aiter__(self) -> AsyncGenerator[ChunkDelta, None]:
        cfg = self._client.config
        started = time.monotonic()
        deadline = started + cfg.total_timeout
        while True:
            self.attempts += 1
            self.assembler = ChunkAssembler()
            emitted = False
            try:
                async for delta in self._attempt(deadline):
                    if delta.content or delta.reasoning or delta.refusal or delta.tool_calls:
                        emitted = True
                    yield delta
                return
            except UpstreamError as exc:
                if emitted or not exc.retryable or self.attempts > cfg.max_retries:
                    raise
                backoff = min(8.0, 0.25 * 2 ** (self.attempts - 1)) * (0.5 + random.random())
                wait = max(backoff, exc.retry_after or 0.0)
                if time.monotonic() + wait - started > cfg.retry_budget:
                    raise
                log.warning(
                    "upstream attempt %d failed (%s); retrying in %.2fs",
                    self.attempts,
                    exc.code,
                    wait,
                )
                await asyncio.sleep(wait)

    async def _attempt(self, deadline: float) -> AsyncIterator[ChunkDelta]:
        cfg = self._client.config
        loop = asyncio.get_running_loop()
        parser = SSEParser()
        assembler = self.assembler
        phase = "connect"
        try:
            async with asyncio.timeout(None) as timer:
                timer.reschedule(
                    loop.time() + min(cfg.first_byte_timeout, deadline - time.monotonic())
                )
                request = self._client.http.build_request(
                    "POST",
                    "/chat/completions",
                    json=self._body,
                    headers={"Accept": "text/event-stream"},
                )
                response = await self._client.http.send(request, stream=True)
                try:
                    phase = "first_byte"
                    if response.status_code >= 300:
                        body = await _read_limited(response)
                        raise error_from_response(
                            response.status_code,
                            body,
                            response.headers.get("content-type", ""),
                            secret=cfg.api_key,
                            retry_after=_retry_after(response),
                        )
                    content_type = response.headers.get("content-type", "")
                    if "json" in content_type:
                        body = await _read_limited(response)
                        raise error_from_response(502, body, content_type, secret=cfg.api_key)
                    async for chunk in response.aiter_raw():
                        phase = "idle"
                        now = loop.time()
                        timer.reschedule(now + min(cfg.idle_timeout, deadline - time.monotonic()))
                        for event in parser.feed(chunk):
                            delta = assembler.feed(event)
                            if delta is not None:
                                yield delta
                        if assembler.done:
                            break
                    for event in parser.close():
                        delta = assembler.feed(event)
                        if delta is not None:
                            yield delta
                    assembler.finish()
                finally:
                    await response.aclose()
        except TimeoutError:
            if time.monotonic() >= deadline - 0.001:
                raise UpstreamTimeout(
                    f"upstream stream exceeded the total limit of {cfg.total_timeout:g}s",
                    code="upstream_timeout_total",
                ) from None
            if phase in ("connect", "first_byte"):
                raise UpstreamTimeout(
                    f"upstream sent no data within {cfg.first_byte_timeout:g}s",
                    code="upstream_timeout_first_byte",
                    retryable=True,
                ) from None
            raise UpstreamTimeout(
                f"upstream went quiet for {cfg.idle_timeout:g}s mid-stream",
                code="upstream_timeout_idle",
            ) from None
        except httpx.ConnectTimeout:
            raise UpstreamTimeout(
                f"could not connect to the upstream within {cfg.connect_timeout:g}s",
                code="upstream_timeout_connect",
                retryable=True,
            ) from None
        except httpx.ConnectError as exc:
            raise UpstreamError(
                f"could not connect to the upstream: {_redact(str(exc), cfg.api_key)[:200]}",
                code="upstream_unreachable",
                retryable=True,
            ) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise UpstreamError(
                f"upstream connection broke: {type(exc).__name__}",
                code="upstream_connection_lost",
                retryable=True,
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"upstream request failed: {type(exc).__name__}", code="upstream_error"
            ) from None


async def _read_limited(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_raw():
        body.extend(chunk)
        if len(body) >= _MAX_ERROR_BODY:
            break
    return bytes(body[:_MAX_ERROR_BODY])


class UpstreamClient:
    """A pooled HTTP client for one OpenAI-compatible base URL."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        headers = {"User-Agent": "chatrelay"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self.http = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(connect=config.connect_timeout, read=None, write=30.0, pool=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=200),
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

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
        try:
            response = await self.http.get("models", timeout=self.config.first_byte_timeout)
        except httpx.TimeoutException:
            raise UpstreamTimeout(
                "upstream did not list its models in time", code="upstream_timeout_first_byte"
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"could not reach the upstream: {type(exc).__name__}", code="upstream_unreachable"
            ) from None
        if response.status_code >= 300:
            raise error_from_response(
                response.status_code,
                response.content,
                response.headers.get("content-type", ""),
                secret=self.config.api_key,
                retry_after=_retry_after(response),
            )
        try:
            payload = response.json()
        except ValueError:
            raise UpstreamError(
                "upstream model list is not JSON", code="upstream_protocol_error"
            ) from None
        if not isinstance(payload, dict):
            raise UpstreamError(
                "upstream model list is not an object", code="upstream_protocol_error"
            )
        return payload
