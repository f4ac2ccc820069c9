"""Typed exceptions of the client: one per status family, each carrying the contract's code.

A caller catches `NotFoundError` or checks `.code == "message_finished"`; it never looks
at an HTTP status or parses an error body itself.
"""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime

__all__ = [
    "APIConnectionError",
    "AuthenticationError",
    "BadRequestError",
    "ChatRelayAPIError",
    "ChatRelayClientError",
    "ConflictError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProtocolError",
    "RateLimitedError",
    "ServerError",
    "StreamInterruptedError",
    "UnavailableError",
    "ValidationError",
    "error_from_response",
    "parse_retry_after",
]


class ChatRelayClientError(Exception):
    """Everything this client raises."""


class APIConnectionError(ChatRelayClientError):
    """The service could not be reached, or the connection broke (no HTTP answer)."""


class ProtocolError(ChatRelayClientError):
    """The service answered something the contract does not allow (a bug on one side)."""


class StreamInterruptedError(ChatRelayClientError):
    """`follow` gave up reconnecting; `last_event_id` is where a later follow can resume."""

    def __init__(self, message: str, *, last_event_id: int | None) -> None:
        super().__init__(message)
        self.last_event_id = last_event_id


class ChatRelayAPIError(ChatRelayClientError):
    """An HTTP error answer: `{"error": {"code", "message"}}` with its status.

    `retry_after` is the `Retry-After` header in seconds, when the service sent one.
    """

    def __init__(
        self, code: str, message: str, *, status: int, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after


class BadRequestError(ChatRelayAPIError):
    """400: malformed JSON, a bad cursor or query."""


class AuthenticationError(ChatRelayAPIError):
    """401: a missing or unknown key (`CHATRELAY_API_KEY`)."""


class NotFoundError(ChatRelayAPIError):
    """404: unknown id, or another tenant's."""


class ConflictError(ChatRelayAPIError):
    """409: e.g. `message_finished` on a cancel after the end."""


class PayloadTooLargeError(ChatRelayAPIError):
    """413: the body is over the service's limit."""


class ValidationError(ChatRelayAPIError):
    """422: a field is missing, unknown, empty or too long."""


class RateLimitedError(ChatRelayAPIError):
    """429: wait `retry_after` seconds before trying again."""


class UnavailableError(ChatRelayAPIError):
    """503: the database is down or the service is shutting down."""


class ServerError(ChatRelayAPIError):
    """Any other 5xx (a 500 is a bug of the service)."""


_BY_STATUS: dict[int, type[ChatRelayAPIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitedError,
    503: UnavailableError,
}


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` in seconds: a number of seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> ChatRelayAPIError:
    """The typed error of a non-2xx answer; a body not in the contract's shape still maps."""
    code, message = f"http_{status}", body.decode("utf-8", "replace")[:200] or "no body"
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
    family = _BY_STATUS.get(status, ServerError if status >= 500 else ChatRelayAPIError)
    retry_after = parse_retry_after(headers.get("retry-after"))
    return family(code, message, status=status, retry_after=retry_after)
