"""`web.log_redaction`: query credentials leave uvicorn's access-log records as `[redacted]`."""

from __future__ import annotations

import logging

import pytest

from chatrelay.web.log_redaction import REDACTED, QueryRedactionFilter, install, redact_query

SECRET = "MTc5NjE4MjMxMi5hY21lLjY2MGVh"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (f"/v1/messages/m/events?token={SECRET}", f"/v1/messages/m/events?token={REDACTED}"),
        (
            f"/e?last_event_id=3&token={SECRET}&x=1",
            f"/e?last_event_id=3&token={REDACTED}&x=1",
        ),
        (f"/e?api_key={SECRET}&key={SECRET}", f"/e?api_key={REDACTED}&key={REDACTED}"),
        (f"/e?TOKEN={SECRET}", f"/e?TOKEN={REDACTED}"),
        (f"/e?%74oken={SECRET}", f"/e?%74oken={REDACTED}"),  # the app decodes the name
        (f"/e?token={SECRET}#frag", f"/e?token={REDACTED}"),
        (f"/e?token={SECRET}&token={SECRET}", f"/e?token={REDACTED}&token={REDACTED}"),
        ("/e?token", f"/e?token={REDACTED}"),
        ("/v1/conversations?limit=5&cursor=conv_1", "/v1/conversations?limit=5&cursor=conv_1"),
        ("/healthz", "/healthz"),
        ("/e?monkey=1&tokens=2", "/e?monkey=1&tokens=2"),
    ],
)
def test_redact_query(target: str, expected: str) -> None:
    assert redact_query(target) == expected


def test_the_filter_rewrites_uvicorns_access_record() -> None:
    # uvicorn.protocols: access_logger.info('%s - "%s %s HTTP/%s" %d', client, method, path, ...)
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/v1/messages/m/events?token={SECRET}", "1.1", 200),
        None,
    )
    assert QueryRedactionFilter().filter(record) is True
    line = record.getMessage()
    assert SECRET not in line
    assert line == f'127.0.0.1:5000 - "GET /v1/messages/m/events?token={REDACTED} HTTP/1.1" 200'


def test_install_adds_one_filter() -> None:
    name = "chatrelay.test.redaction"
    install(name)
    install(name)
    filters = logging.getLogger(name).filters
    assert sum(isinstance(f, QueryRedactionFilter) for f in filters) == 1
