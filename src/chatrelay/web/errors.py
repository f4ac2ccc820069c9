"""The one place where errors become HTTP responses and SSE `error` payloads."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from chatrelay.errors import (
    BadRequest,
    ChatRelayError,
    Conflict,
    HeadersTooLarge,
    LimitKind,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
    UpstreamError,
    UpstreamTimeout,
    UriTooLong,
    ValidationFailed,
)
from chatrelay.models import ErrorPayload
from chatrelay.request_context import note_error

log = logging.getLogger("chatrelay.web")

# The routes that speak OpenAI's protocol, and so answer every error in OpenAI's shape.
OPENAI_PATHS = ("/v1/chat/completions", "/v1/models")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    431: "headers_too_large",
    503: "unavailable",
}


# The one table from a kind of error to its HTTP status; the most specific class wins.
# OpenAI's routes refine it per code (`_OPENAI_STATUS` below).
_STATUS: dict[type[ChatRelayError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    NotFound: 404,
    MethodNotAllowed: 405,
    RequestTimeout: 408,
    Conflict: 409,
    PayloadTooLarge: 413,
    UriTooLong: 414,
    UnsupportedMediaType: 415,
    ValidationFailed: 422,
    TooManyRequests: 429,
    HeadersTooLarge: 431,
    ServiceUnavailable: 503,
    UpstreamTimeout: 504,
    UpstreamError: 502,
}


def http_status(exc: ChatRelayError) -> int:
    """The status a raised error answers with (500 for anything unclassified: a bug)."""
    for cls in type(exc).__mro__:
        status = _STATUS.get(cls)
        if status is not None:
            return status
    return 500


def retry_after_header(seconds: float) -> str:
    """`Retry-After` as whole seconds, rounded up (waiting less would be refused again)."""
    return str(max(1, math.ceil(seconds)))


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(exc: ChatRelayError) -> JSONResponse:
    note_error(exc.code, exc.refused_by)  # for the request's log line and the metrics
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = retry_after_header(exc.retry_after)
    return JSONResponse(
        error_body(exc.code, exc.message), status_code=http_status(exc), headers=headers
    )


async def handle_chatrelay_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ChatRelayError)
    status = http_status(exc)
    if status >= 500:
        log.warning("%s %s -> %d %s", request.method, request.url.path, status, exc.code)
    return error_response(exc)


# The native API's own path prefixes; any other `/v1/...` path is one an OpenAI-compatible
# client might call (`/v1/embeddings`, `/v1/files`, ...), so its 404 takes OpenAI's shape.
_NATIVE_PREFIXES = ("/v1/conversations", "/v1/messages")


def is_openai_path(path: str) -> bool:
    return path.startswith("/v1/") and not path.startswith(_NATIVE_PREFIXES)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404 and is_openai_path(request.url.path):
        return openai_error(
            "unknown_url",
            f"Invalid URL ({request.method} {request.url.path}): chatrelay does not offer it",
            status=404,
        )
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    headers = dict(exc.headers or {})
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route for {request.method} {request.url.path}"
    if exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(sorted(allowed))
        if is_openai_path(request.url.path):
            return openai_error(code, message, status=405, headers=headers)
    note_error(code)
    return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=headers)


def _allowed_methods(request: Request) -> set[str]:
    """Every method some route of this path takes. Starlette's own `Allow` names only the
    first route that matched the path (and in set order), so `PUT /v1/conversations` would
    be told `POST` alone, though `GET` works too."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                methods |= route.methods
    return methods


async def handle_client_disconnect(request: Request, exc: Exception) -> Response:
    """The client left (or the server dropped it for a stalled body) while its body was read.

    Nobody will read an answer; without this, Starlette logs a traceback for it twice.
    """
    log.debug("%s %s: client left before its body arrived", request.method, request.url.path)
    return Response(status_code=400)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    note_error("internal_error")
    return JSONResponse(
        error_body("internal_error", "the service failed to handle this request"),
        status_code=500,
    )


EXCEPTION_HANDLERS = {
    ChatRelayError: handle_chatrelay_error,
    HTTPException: handle_http_exception,
    ClientDisconnect: handle_client_disconnect,
    Exception: handle_unexpected,
}


# -- OpenAI's error shape, for /v1/chat/completions and /v1/models ----------------------------

# Where an OpenAI client must see another status than the native API's (or the only status
# a generation's recorded error code has). 422 is always 400, as OpenAI answers validation.
_OPENAI_STATUS = {
    "upstream_auth_failed": 502,  # the relay's upstream key, not the client's: a gateway fault
    "upstream_not_found": 404,
    "unknown_model": 404,  # as OpenAI answers a model it does not have
    "upstream_rate_limited": 429,
    "upstream_bad_request": 400,  # the client's own fields, passed through, were refused
    "upstream_unavailable": 502,
    "upstream_unreachable": 502,
    "upstream_connection_lost": 502,
    "upstream_timeout_connect": 504,
    "upstream_timeout_first_byte": 504,
    "upstream_timeout_idle": 504,
    "upstream_timeout_total": 504,
    "shutting_down": 503,
    "interrupted": 503,
    "database_unavailable": 503,
    "internal_error": 500,
}
_UPSTREAM_AUTH_NOTE = (
    "chatrelay's own upstream credentials were rejected; your client key is fine "
    "(the operator must fix OPENAI_API_KEY, or the route's key in CHATRELAY_UPSTREAMS): "
)
_DEFAULT_RATE_LIMIT_WAIT = 1.0


def _openai_status(code: str, status: int | None) -> int:
    fallback = 502 if code.startswith("upstream_") else 500
    chosen = _OPENAI_STATUS.get(code, status if status is not None else fallback)
    return 400 if chosen == 422 else chosen


def _openai_body(code: str, message: str, status: int, param: str | None) -> dict[str, Any]:
    if status in (401, 403):
        kind = "authentication_error"
    elif status == 429:
        kind = "rate_limit_error"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    if code == "upstream_auth_failed":
        message = _UPSTREAM_AUTH_NOTE + message
    return {"error": {"message": message, "type": kind, "code": code, "param": param}}


def openai_error(
    code: str,
    message: str,
    *,
    status: int | None = None,
    param: str | None = None,
    retry_after: float | None = None,
    headers: dict[str, str] | None = None,
    limit: LimitKind | None = None,
) -> JSONResponse:
    """`{"error": {"message", "type", "code", "param"}}` with the status OpenAI SDKs map to
    their error classes; `status` is the fallback for codes without an OpenAI-specific one.
    `limit` is the quota that refused the request; a 429 without one is the upstream's."""
    chosen = _openai_status(code, status)
    if chosen == 429 and limit is None:
        limit = LimitKind.UPSTREAM
    note_error(code, limit)
    extra = dict(headers or {})
    if chosen == 429 and retry_after is None:
        retry_after = _DEFAULT_RATE_LIMIT_WAIT
    if retry_after is not None and chosen in (429, 503):
        extra["Retry-After"] = retry_after_header(retry_after)
    if chosen >= 500:
        log.warning("openai-compatible request failed: %d %s", chosen, code)
    return JSONResponse(
        _openai_body(code, message, chosen, param), status_code=chosen, headers=extra
    )


def openai_error_response(
    exc: ChatRelayError, *, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A raised error in OpenAI's shape."""
    return openai_error(
        exc.code,
        exc.message,
        status=http_status(exc),
        param=param,
        retry_after=exc.retry_after,
        headers=headers,
        limit=exc.refused_by,
    )


def _recorded(error: ErrorPayload) -> tuple[str, str]:
    code = error.get("code")
    message = error.get("message")
    return (
        code if isinstance(code, str) and code else "internal_error",
        message if isinstance(message, str) and message else "the generation failed",
    )


def openai_recorded_error(
    error: ErrorPayload, *, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A generation's recorded `error` (`{"code", "message", "retry_after"?}`) as a response,
    for a failure that came before any output was sent."""
    code, message = _recorded(error)
    retry_after = error.get("retry_after")
    if isinstance(retry_after, bool) or not isinstance(retry_after, (int, float)):
        retry_after = None
    return openai_error(code, message, retry_after=retry_after, headers=headers)


def openai_stream_error(error: ErrorPayload) -> dict[str, Any]:
    """The in-stream payload OpenAI sends (`data: {"error": {...}}`) once output has begun."""
    code, message = _recorded(error)
    return _openai_body(code, message, _openai_status(code, None), None)


# -- errors the HTTP server layer writes itself (web/http_protocol.py) ------------------------


def server_layer_error(exc: ChatRelayError, *, openai_shape: bool) -> tuple[int, bytes]:
    """The status and encoded JSON body of an error answered below the app (a header limit,
    a slow client, the connection cap), in the route's shape when the path is known."""
    status = http_status(exc)
    if openai_shape:
        status = _openai_status(exc.code, status)
        body = _openai_body(exc.code, exc.message, status, None)
    else:
        body = error_body(exc.code, exc.message)
    return status, json.dumps(body, separators=(",", ":")).encode()
