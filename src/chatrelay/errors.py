"""Typed errors: raised anywhere in the core, mapped to HTTP and SSE in `web.errors` only.

Each error carries a stable snake_case `code` (what clients branch on) and a human message
that must never contain a secret. Its class says what kind of failure it is; which HTTP
status that means is decided by the one table in `web.errors`, not here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from chatrelay.models import ErrorPayload


class LimitKind(StrEnum):
    """Which configured limit refused a request: the `limit` label of
    `chatrelay_rejected_requests_total`, one value per limit in docs/security.md."""

    REQUEST_RATE = "request_rate"  # CHATRELAY_RATE_LIMIT_PER_MINUTE / _BURST
    GENERATIONS = "generations"  # CHATRELAY_MAX_GENERATIONS_PER_TENANT
    SUBSCRIBERS = "subscribers"  # CHATRELAY_MAX_SUBSCRIBERS_PER_MESSAGE
    METADATA = "metadata"  # CHATRELAY_MAX_METADATA_BYTES / _DEPTH
    TITLE = "title"  # CHATRELAY_MAX_TITLE_CHARS
    PARAMS = "params"  # CHATRELAY_MAX_PARAMS_BYTES
    CONTENT = "content"  # CHATRELAY_MAX_CONTENT_CHARS
    BODY_SIZE = "body_size"  # CHATRELAY_MAX_BODY_BYTES
    MEDIA_TYPE = "media_type"  # a body not sent as JSON (415): no setting, counted all the same
    HEADER_SIZE = "header_size"  # CHATRELAY_MAX_HEADER_BYTES
    URL_LENGTH = "url_length"  # CHATRELAY_MAX_URL_BYTES
    HEADER_TIMEOUT = "header_timeout"  # CHATRELAY_HEADER_TIMEOUT
    BODY_TIMEOUT = "body_timeout"  # CHATRELAY_BODY_TIMEOUT
    CONNECTIONS = "connections"  # CHATRELAY_MAX_CONNECTIONS
    UPSTREAM = "upstream"  # the upstream's own 429, passed on by an OpenAI route


class ChatRelayError(Exception):
    """Base of every error the service reports to a client."""

    code: ClassVar[str] = "internal_error"
    # The limit that refused the request, when it was one (an instance may name its own).
    refused_by: LimitKind | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        limit: LimitKind | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]  # an instance may refine its class's code
        self.retry_after = retry_after
        if limit is not None:
            self.refused_by = limit

    def to_payload(self) -> ErrorPayload:
        """As recorded in a failed message's `error` and sent in its `error` event."""
        payload: ErrorPayload = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            payload["retry_after"] = self.retry_after
        return payload


class ConfigError(ChatRelayError):
    """Bad configuration: start-up stops with one clear line."""

    code = "config_error"


class BadRequest(ChatRelayError):
    code = "bad_request"


class UnknownModel(BadRequest):
    """With a routes file, no upstream serves the requested model."""

    code = "unknown_model"


class Unauthorized(ChatRelayError):
    code = "unauthorized"


class NotFound(ChatRelayError):
    code = "not_found"


class MethodNotAllowed(ChatRelayError):
    code = "method_not_allowed"


class Conflict(ChatRelayError):
    code = "conflict"


class PayloadTooLarge(ChatRelayError):
    code = "payload_too_large"
    refused_by = LimitKind.BODY_SIZE


class UnsupportedMediaType(ChatRelayError):
    """A request body that is not declared `application/json`."""

    code = "unsupported_media_type"
    refused_by = LimitKind.MEDIA_TYPE


class ValidationFailed(ChatRelayError):
    code = "validation_error"


class RequestTimeout(ChatRelayError):
    """The client was too slow sending its request head or body (`web/http_protocol.py`)."""

    code = "request_timeout"
    refused_by = LimitKind.HEADER_TIMEOUT  # or BODY_TIMEOUT, named by the instance


class UriTooLong(ChatRelayError):
    """A request target longer than `CHATRELAY_MAX_URL_BYTES`."""

    code = "uri_too_long"
    refused_by = LimitKind.URL_LENGTH


class HeadersTooLarge(ChatRelayError):
    """A request head (request line and headers) larger than `CHATRELAY_MAX_HEADER_BYTES`."""

    code = "headers_too_large"
    refused_by = LimitKind.HEADER_SIZE


class TooManyRequests(ChatRelayError):
    """A per-tenant quota or rate limit said no (429); `retry_after` is when to try again.

    Raised before anything is stored, so a refused request leaves no trace.
    """

    code = "rate_limited"

    def __init__(
        self, message: str, *, limit: LimitKind, retry_after: float, code: str | None = None
    ) -> None:
        super().__init__(message, code=code, retry_after=retry_after, limit=limit)


class FieldTooLarge(ValidationFailed):
    """A field over its size cap (422 `too_large`, or `too_deep` for nesting)."""

    code = "too_large"

    def __init__(self, message: str, *, limit: LimitKind, code: str | None = None) -> None:
        super().__init__(message, code=code, limit=limit)


def limit_kind(exc: BaseException) -> LimitKind | None:
    """The limit an error reports hitting, if any: what the metric of rejected requests
    counts under (`chatrelay_rejected_requests_total{limit=…}`)."""
    if isinstance(exc, ChatRelayError):
        return exc.refused_by
    return None


class ServiceUnavailable(ChatRelayError):
    code = "unavailable"


class StorageError(ServiceUnavailable):
    """The database did not answer or refused a write."""

    code = "database_unavailable"


class ShuttingDown(ServiceUnavailable):
    code = "shutting_down"


class UpstreamError(ChatRelayError):
    """The upstream model server failed; `code` says how (see docs/upstream.md)."""

    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        upstream_status: int | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, code=code, retry_after=retry_after)
        self.upstream_status = upstream_status
        self.retryable = retryable


class UpstreamTimeout(UpstreamError):
    code = "upstream_timeout"


class UpstreamProtocolError(UpstreamError):
    """The upstream's bytes broke the SSE or OpenAI chunk grammar."""

    code = "upstream_protocol_error"


class UpstreamTruncated(UpstreamError):
    """The stream ended without `[DONE]` and without a `finish_reason`."""

    code = "upstream_truncated"
