"""What went wrong, as a typed `UpstreamError`: non-2xx answers and httpx failures.

A non-2xx answer is mapped by status to a code, and its body (JSON in the usual dialects,
an HTML page, plain text) is read for the upstream's own words, redacted before it is
shortened. An httpx exception is mapped by one table, `_TRANSPORT_FAILURES`, that serves both
requests the client makes: streaming a completion and listing the models. They disagree on
a few codes, on purpose and side by side in the table (the model list is one short GET with
no stream to lose, so every failure that is not a timeout there reads as unreachable).
"""

from __future__ import annotations

import email.utils
import html
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

import httpx

from chatrelay.errors import UpstreamError, UpstreamProtocolError, UpstreamTimeout
from chatrelay.upstream.failures import UpstreamProxyRefused, UpstreamTLSError
from chatrelay.upstream.redact import Secrets, redact, shorten
from chatrelay.upstream.timeouts import Phase, timeout_error

_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_REQUEST_ID = re.compile(r"[A-Za-z0-9_\-:.]{1,100}")


# -- non-2xx answers ----------------------------------------------------------------------


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


def body_detail(text: str, content_type: str) -> tuple[str, Any]:
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
        name = shorten(html.unescape(title.group(1)), 120) if title else ""
        return (f"an HTML page ({name})" if name else "an HTML page"), payload
    return text, payload


def error_from_response(
    status: int,
    body: bytes,
    content_type: str,
    *,
    secret: Secrets,
    retry_after: float | None = None,
    request_id: str | None = None,
    location: str | None = None,
    target: str | None = None,
    source: str = "OPENAI_BASE_URL",
    proxy_setting: str | None = None,
) -> UpstreamError:
    """A typed error for a non-2xx upstream answer, carrying the upstream's own message.

    `target` is the request as `METHOD url` and `source` the setting that made its URL: a
    404 or a redirect names both, since a wrong base URL and an unknown model otherwise
    read the same. A 407 is the proxy's (plain-HTTP upstreams go through it as ordinary
    requests), so it names the proxy's setting, `proxy_setting`, instead.
    """
    text = body.decode("utf-8", "replace").strip()
    detail, payload = body_detail(text, content_type)
    if 300 <= status < 400:
        where = f" to {location}" if location else ""
        detail = f"redirected{where}; check {source} ({detail})"
    # Redact before shortening, so that a cut can never leave a piece of the key behind
    # (redact() catches pieces too, this is belt and braces).
    detail = shorten(redact(detail, secret))
    at = f" for {target}" if target else ""
    message = f"upstream answered HTTP {status}{at}: {detail}"
    if status == 404:
        message += f" (check {source}, or whether the upstream serves this model)"
    if status == 407:
        where = proxy_setting or "the proxy settings"
        message = (
            f"the proxy refused chatrelay's credentials (HTTP 407{at}); "
            f"check the user:password in {where}"
        )
    if request_id and _REQUEST_ID.fullmatch(request_id):
        message += f" [upstream request id {request_id}]"
    message = redact(message, secret)
    if status in (401, 403):
        return UpstreamError(message, code="upstream_auth_failed", upstream_status=status)
    if status == 407:
        return UpstreamError(message, code=_PROXY.code, upstream_status=status)
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


def http_error(
    response: httpx.Response,
    body: bytes,
    secret: Secrets,
    *,
    target: str | None = None,
    source: str = "OPENAI_BASE_URL",
    proxy_setting: str | None = None,
) -> UpstreamError:
    """`error_from_response` for an httpx response whose body (or its start) was read."""
    headers = response.headers
    return error_from_response(
        response.status_code,
        body,
        headers.get("content-type", ""),
        secret=secret,
        retry_after=parse_retry_after(headers),
        request_id=headers.get("x-request-id") or headers.get("request-id"),
        location=headers.get("location"),
        target=target,
        source=source,
        proxy_setting=proxy_setting,
    )


def not_an_event_stream(
    body: bytes, content_type: str, secret: Secrets, *, source: str = "OPENAI_BASE_URL"
) -> UpstreamError:
    """A 2xx HTML page where the event stream should be (a captive portal, a wrong URL)."""
    page, _ = body_detail(body.decode("utf-8", "replace").strip(), content_type)
    return UpstreamProtocolError(
        f"upstream answered {shorten(redact(page, secret))}, not an event stream; check {source}"
    )


# -- httpx exceptions ---------------------------------------------------------------------


class Call(StrEnum):
    """Which of the client's requests failed: the table gives each its own outcome."""

    STREAM = "stream"  # POST chat/completions, streamed
    MODELS = "models"  # GET models


class _Outcome(NamedTuple):
    code: str
    # `{name}` is the exception's class, `{detail}` its text (redacted and shortened).
    # None for a timeout: the phase's own message, naming its limit (`timeouts.py`).
    message: str | None = None


_UNREACHABLE = _Outcome("upstream_unreachable", "could not reach the upstream: {detail}")
_TLS = _Outcome("upstream_tls_error", "TLS verification of the upstream failed: {detail}")
_PROXY = _Outcome("upstream_proxy_error", "{detail}")
_PROXY_UNREACHABLE = _Outcome("upstream_unreachable", "{detail}")
_CONNECT_TIMEOUT = _Outcome("upstream_timeout_connect")
_FIRST_BYTE_TIMEOUT = _Outcome("upstream_timeout_first_byte")

# The one table of httpx failures: the first row whose exceptions match wins, so
# subclasses come before their bases (ConnectTimeout is a TimeoutException).
_TRANSPORT_FAILURES: tuple[tuple[tuple[type[httpx.HTTPError], ...], _Outcome, _Outcome], ...] = (
    # exceptions, then the outcome for Call.STREAM, then for Call.MODELS
    ((httpx.ConnectTimeout,), _CONNECT_TIMEOUT, _CONNECT_TIMEOUT),
    ((UpstreamTLSError,), _TLS, _TLS),  # fails the same way every time: never retried
    ((UpstreamProxyRefused,), _PROXY, _PROXY),  # the proxy said no: the same next time
    ((httpx.ProxyError,), _PROXY_UNREACHABLE, _PROXY_UNREACHABLE),  # it did not answer
    (
        (httpx.ConnectError,),
        _Outcome("upstream_unreachable", "could not connect to the upstream: {detail}"),
        _UNREACHABLE,
    ),
    (
        (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError),
        _Outcome("upstream_connection_lost", "upstream connection broke: {name}"),
        _UNREACHABLE,
    ),
    (
        (httpx.DecodingError,),
        _Outcome(
            "upstream_protocol_error", "upstream body could not be decoded (Content-Encoding)"
        ),
        _UNREACHABLE,
    ),
    (
        # Streaming, only httpx's own write timeout is left (the watchdog owns the reads);
        # listing, the read timeout too.
        (httpx.TimeoutException,),
        _FIRST_BYTE_TIMEOUT,
        _Outcome("upstream_timeout_first_byte", "upstream did not list its models in time"),
    ),
    (
        (httpx.HTTPError,),
        _Outcome("upstream_error", "upstream request failed: {name}"),
        _UNREACHABLE,
    ),
)

_RETRYABLE = frozenset(
    {
        "upstream_unreachable",
        "upstream_connection_lost",
        "upstream_timeout_connect",
        "upstream_timeout_first_byte",
    }
)
_TIMEOUT_PREFIX = "upstream_timeout_"


def transport_error(
    exc: httpx.HTTPError, call: Call, *, secret: Secrets, limits: Mapping[Phase, float]
) -> UpstreamError:
    """The typed error for an httpx failure of `call`; `limits` name a timeout's seconds."""
    outcome = next(
        (stream if call is Call.STREAM else models)
        for types, stream, models in _TRANSPORT_FAILURES
        if isinstance(exc, types)
    )
    code = outcome.code
    if outcome.message is None:  # a timeout, named by its phase
        phase = Phase(code.removeprefix(_TIMEOUT_PREFIX))
        return timeout_error(phase, limits[phase])
    message = outcome.message.format(
        name=type(exc).__name__, detail=shorten(redact(str(exc), secret), 200)
    )
    kind: type[UpstreamError] = UpstreamError
    if code.startswith(_TIMEOUT_PREFIX):
        kind = UpstreamTimeout
    elif code == UpstreamProtocolError.code:
        kind = UpstreamProtocolError
    return kind(message, code=code, retryable=code in _RETRYABLE)
