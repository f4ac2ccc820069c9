"""Each kind of error answers with its status, from the one table in `web.errors`."""

from __future__ import annotations

import pytest

from chatrelay import errors
from chatrelay.web.errors import http_status


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.BadRequest("x", code="invalid_json"), 400),
        (errors.Unauthorized("x"), 401),
        (errors.NotFound("x"), 404),
        (errors.MethodNotAllowed("x"), 405),
        (errors.Conflict("x", code="message_finished"), 409),
        (errors.PayloadTooLarge("x"), 413),
        (errors.UnsupportedMediaType("x"), 415),
        (errors.ValidationFailed("x", code="unknown_field"), 422),
        (
            errors.TooManyRequests(
                "x", code="too_many_generations", limit=errors.LimitKind.GENERATIONS, retry_after=1
            ),
            429,
        ),
        (errors.FieldTooLarge("x", limit=errors.LimitKind.METADATA), 422),
        (errors.StorageError("x"), 503),
        (errors.ShuttingDown("x"), 503),
        (errors.UpstreamError("x", code="upstream_unavailable"), 502),
        (errors.UpstreamProtocolError("x"), 502),
        (errors.UpstreamTruncated("x"), 502),
        (errors.UpstreamTimeout("x", code="upstream_timeout_idle"), 504),
        (errors.ChatRelayError("x"), 500),
        (errors.ConfigError("x"), 500),
    ],
)
def test_status_by_kind(error: errors.ChatRelayError, status: int) -> None:
    assert http_status(error) == status


def test_errors_carry_no_http_status_of_their_own() -> None:
    assert not hasattr(errors.BadRequest("x"), "status")


def test_limit_errors_name_their_limit() -> None:
    """The hook a "rejected by limit" metric reads; other errors name none."""
    rate = errors.TooManyRequests("x", limit=errors.LimitKind.REQUEST_RATE, retry_after=0.2)
    assert errors.limit_kind(rate) is errors.LimitKind.REQUEST_RATE
    assert rate.code == "rate_limited" and rate.retry_after == 0.2
    size = errors.FieldTooLarge("x", code="too_deep", limit=errors.LimitKind.METADATA)
    assert errors.limit_kind(size) is errors.LimitKind.METADATA
    assert errors.limit_kind(errors.ValidationFailed("x", code="too_long")) is None
    # The HTTP limits name theirs by class, or (a timeout) by instance.
    assert errors.limit_kind(errors.PayloadTooLarge("x")) is errors.LimitKind.BODY_SIZE
    assert errors.limit_kind(errors.HeadersTooLarge("x")) is errors.LimitKind.HEADER_SIZE
    assert errors.limit_kind(errors.RequestTimeout("x")) is errors.LimitKind.HEADER_TIMEOUT
    body = errors.RequestTimeout("x", limit=errors.LimitKind.BODY_TIMEOUT)
    assert errors.limit_kind(body) is errors.LimitKind.BODY_TIMEOUT
    assert errors.limit_kind(ValueError()) is None


def test_retry_after_header_rounds_up() -> None:
    from chatrelay.web.errors import error_response

    limited = errors.TooManyRequests("x", limit=errors.LimitKind.REQUEST_RATE, retry_after=0.2)
    assert error_response(limited).headers["retry-after"] == "1"
    limited = errors.TooManyRequests("x", limit=errors.LimitKind.REQUEST_RATE, retry_after=2.01)
    assert error_response(limited).headers["retry-after"] == "3"
