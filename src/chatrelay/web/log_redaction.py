"""Keeps credentials in query strings out of the access log.

uvicorn's access log prints each request line, and `GET /v1/messages/{mid}/events?token=…`
carries a bearer credential there (the `stream_url` token, for `EventSource`, which cannot
set headers). `QueryRedactionFilter` on the `uvicorn.access` logger replaces the value of
every sensitive parameter with `[redacted]` in the record's arguments before any handler
formats them. Names are compared as the app reads them: percent-decoded, and here also
case-insensitively, so `?%74oken=` or `?API_KEY=` does not slip through.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote_plus

REDACTED = "[redacted]"
SENSITIVE_PARAMS = frozenset({"token", "api_key", "key", "access_token"})
ACCESS_LOGGER = "uvicorn.access"


def redact_query(target: str) -> str:
    """`target` (a path with an optional query) with sensitive parameter values replaced."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    pairs = []
    for pair in query.split("&"):
        name = pair.partition("=")[0]
        if unquote_plus(name).strip().lower() in SENSITIVE_PARAMS:
            pair = f"{name}={REDACTED}"
        pairs.append(pair)
    return f"{path}?{'&'.join(pairs)}"


def _redact(value: Any) -> Any:
    return redact_query(value) if isinstance(value, str) and "?" in value else value


class QueryRedactionFilter(logging.Filter):
    """Rewrites the record's string arguments (uvicorn passes the path with its query as one
    of them); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_redact(arg) for arg in args)
        elif isinstance(args, dict):
            record.args = {key: _redact(value) for key, value in args.items()}
        if isinstance(record.msg, str) and "?" in record.msg:
            record.msg = redact_query(record.msg)
        return True


def install(logger_name: str = ACCESS_LOGGER) -> None:
    """Adds the filter to the logger once (after uvicorn has configured its logging)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, QueryRedactionFilter) for f in logger.filters):
        logger.addFilter(QueryRedactionFilter())
