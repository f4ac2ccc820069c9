"""Typed errors: raised anywhere in the core, mapped to HTTP and SSE in `web.errors` only.

Each error carries a stable snake_case `code` (what clients branch on), the HTTP `status`
it maps to, and a human message that must never contain a secret.
"""

from __future__ import annotations

from typing import ClassVar

from chatrelay.models import ErrorPayload


class ChatRelayError(Exception):
    """Base of every error the service reports to a client."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500

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
    status = 400


class Unauthorized(ChatRelayError):
    code = "unauthorized"
    status = 401


class NotFound(ChatRelayError):
    code = "not_found"
    status = 404


class MethodNotAllowed(ChatRelayError):
    code = "method_not_allowed"
    status = 405


class Conflict(ChatRelayError):
    code = "conflict"
    status = 409


class PayloadTooLarge(ChatRelayError):
    code = "payload_too_large"
    status = 413


class ValidationFailed(ChatRelayError):
    code = "validation_error"
    status = 422


class ServiceUnavailable(ChatRelayError):
    code = "unavailable"
    status = 503


class StorageError(ServiceUnavailable):
    """The database did not answer or refused a write."""

    code = "database_unavailable"


class ShuttingDown(ServiceUnavailable):
    code = "shutting_down"


class UpstreamError(ChatRelayError):
    """The upstream model server failed; `code` says how (see docs/upstream.md)."""

    code = "upstream_error"
    status = 502

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
    status = 504


class UpstreamProtocolError(UpstreamError):
    """The upstream's bytes broke the SSE or OpenAI chunk grammar."""

    code = "upstream_protocol_error"


class UpstreamTruncated(UpstreamError):
    """The stream ended without `[DONE]` and without a `finish_reason`."""

    code = "upstream_truncated"
