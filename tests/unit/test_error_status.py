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
