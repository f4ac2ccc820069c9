"""Typed errors: raised anywhere in the core, mapped to HTTP and SSE in `web.errors` only.

Each error carries a stable snake_case `code` (what clients branch on) and a human message
that must never contain a secret. Its class says what kind of failure it is; which HTTP
status that means is decided by the one table in `web.errors`, not here.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

from chatrelay.models import ErrorPayload


class ChatRelayError(Exception):
    """Base of every error the service reports to a client."""

    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]  # an instance may refine its class's code
        self.retry_after = retry_after

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


class UnsupportedMediaType(ChatRelayError):
    """A request body that is not declared `application/json`."""

    code = "unsupported_media_type"


class ValidationFailed(ChatRelayError):
    code = "validation_error"


class RequestTimeout(ChatRelayError):
    """The client was too slow sending its request head or body (`web/http_protocol.py`)."""

    code = "request_timeout"


class UriTooLong(ChatRelayError):
    """A request target longer than `CHATRELAY_MAX_URL_BYTES`."""

    code = "uri_too_long"


class HeadersTooLarge(ChatRelayError):
    """A request head (request line and headers) larger than `CHATRELAY_MAX_HEADER_BYTES`."""

    code = "headers_too_large"


class LimitKind(StrEnum):
    """Which configured limit refused a request: the label a "rejected by limit" metric
    counts under (`limit_kind`), one value per setting in docs/security.md."""

    REQUEST_RATE = "request_rate"  # CHATRELAY_RATE_LIMIT_PER_MINUTE / _BURST
    GENERATIONS = "generations"  # CHATRELAY_MAX_GENERATIONS_PER_TENANT
    SUBSCRIBERS = "subscribers"  # CHATRELAY_MAX_SUBSCRIBERS_PER_MESSAGE
    METADATA = "metadata"  # CHATRELAY_MAX_METADATA_BYTES / _DEPTH
    TITLE = "title"  # CHATRELAY_MAX_TITLE_CHARS
    PARAMS = "params"  # CHATRELAY_MAX_PARAMS_BYTES


class TooManyRequests(ChatRelayError):
    """A per-tenant quota or rate limit said no (429); `retry_after` is when to try again.

    Raised before anything is stored, so a refused request leaves no trace.
    """

    code = "rate_limited"

    def __init__(
        self, message: str, *, limit: LimitKind, retry_after: float, code: str | None = None
    ) -> None:
        super().__init__(message, code=code, retry_after=retry_after)
        self.limit = limit


class FieldTooLarge(ValidationFailed):
    """A field over its size cap (422 `too_large`, or `too_deep` for nesting)."""

    code = "too_large"

    def __init__(self, message: str, *, limit: LimitKind, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.limit = limit


def limit_kind(exc: BaseException) -> LimitKind | None:
    """The limit an error reports hitting, if any: the one hook a metric of rejected
    requests needs (`chatrelay_…_rejected_total{limit=…}`)."""
    if isinstance(exc, (TooManyRequests, FieldTooLarge)):
        return exc.limit
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
