"""Request ids, per-request metrics and the per-request log line, as pure ASGI middleware.

Outermost of the app's middleware, so every response it produces carries `x-request-id`:
errors, 404s, CORS preflights, event streams and the OpenAI routes alike. An incoming
`X-Request-Id` is kept when well-formed (`request_context.accept_request_id`), else a new
id replaces it. Pure ASGI rather than `BaseHTTPMiddleware`, which buffers responses and
breaks streaming: the `send` wrapper only touches the response start, then hands body
messages straight on, so an event stream costs one comparison per write.

An exception no handler answered would otherwise be turned into a 500 by Starlette's
`ServerErrorMiddleware`, outside this one and without the id; it is answered here
instead, through the same `web.errors.handle_unexpected`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatrelay import request_context
from chatrelay.errors import StorageError
from chatrelay.logs import FIELDS
from chatrelay.metrics import Metrics
from chatrelay.observe import StorageOperation
from chatrelay.request_context import RequestInfo
from chatrelay.web.errors import handle_unexpected

log = logging.getLogger("chatrelay.request")

REQUEST_ID_HEADER = b"x-request-id"
UNMATCHED_ROUTE = "unmatched"  # the route label of a request no route matched (a 404)
# Statuses that mean "refused by a limit": counted in chatrelay_rejected_requests, by error
# code and by the limit the error names (`other` when it names none). Any other status counts
# there too when its error names a limit: a field over its size cap is a 422.
LIMIT_STATUSES = frozenset({408, 413, 414, 415, 429, 431})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_EVENT_STREAM = b"text/event-stream"
_MAX_LOGGED_PATH = 512


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _route(scope: Scope) -> str:
    """The matched route's template (`/v1/messages/{mid}`), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class Instrumentation:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, log_requests: bool) -> None:
        self.app = app
        self._metrics = metrics
        self._log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        info = RequestInfo(
            request_context.accept_request_id(_header(scope, REQUEST_ID_HEADER)),
            time.monotonic(),
        )
        request_id = (REQUEST_ID_HEADER, info.request_id.encode("ascii"))
        status = 0
        streamed = False
        metrics = self._metrics

        def send_with_id(message: Message) -> Awaitable[None]:
            # A plain function: a body write returns `send`'s own awaitable, so a stream's
            # writes cost no extra coroutine here, only this comparison.
            if message["type"] != "http.response.start":
                return send(message)
            nonlocal status, streamed
            status = message["status"]
            headers = [
                (key, value)
                for key, value in message.get("headers", ())
                if key.lower() != REQUEST_ID_HEADER
            ]
            headers.append(request_id)
            streamed = any(
                key.lower() == b"content-type" and value.startswith(_EVENT_STREAM)
                for key, value in headers
            )
            if streamed:
                metrics.subscriber_opened()
            return send({**message, "headers": headers})

        token = request_context.begin(info)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if status:
                raise  # the response has begun: nothing better to send than a cut connection
            response = await handle_unexpected(Request(scope), exc)
            await response(scope, receive, send_with_id)
        finally:
            if streamed:
                metrics.subscriber_closed()
            self._finish(scope, info, status, streamed)
            request_context.end(token)

    def _finish(self, scope: Scope, info: RequestInfo, status: int, streamed: bool) -> None:
        seconds = time.monotonic() - info.started
        route = _route(scope)
        method = scope["method"] if scope["method"] in _METHODS else "other"
        metrics = self._metrics
        metrics.request_finished(route, method, status, seconds, streamed=streamed)
        code = info.error_code
        if info.limit is not None or status in LIMIT_STATUSES:
            metrics.request_rejected(code or f"http_{status}", info.limit)
        if code == StorageError.code:
            metrics.storage_error(StorageOperation.REQUEST)
        if self._log_requests:
            ttft = None if info.first_token_at is None else info.first_token_at - info.started
            log.log(
                logging.WARNING if status >= 500 or status == 0 else logging.INFO,
                "%s %s %d",
                method,
                route,
                status,
                extra={
                    FIELDS: {
                        "event": "request",
                        "request_id": info.request_id,
                        "tenant": info.tenant,
                        "method": scope["method"][:16],
                        "route": route,
                        "path": scope["path"][:_MAX_LOGGED_PATH],
                        "status": status,
                        "error_code": code,
                        "duration_ms": round(seconds * 1000, 1),
                        "ttft_ms": None if ttft is None else round(ttft * 1000, 1),
                        "stream": streamed,
                    }
                },
            )
