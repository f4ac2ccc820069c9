"""The request being served, as far as logs and metrics need it: its id and what it became.

The HTTP edge (`web/instrumentation.py`) sets a fresh `RequestInfo` for each request in a
context variable; code below it fills in what only it knows (the tenant, once
authenticated; the error code, where an error becomes a response) and a generation
started by the request captures it, so the generation's log lines and its outcome carry
the request id, and a streamed answer's time to first token reaches the request's line.
`asyncio` copies the context into tasks created during the request, so lines logged by
the generation task keep the id after the request has ended.
"""

from __future__ import annotations

import re
from contextvars import ContextVar, Token
from dataclasses import dataclass

from chatrelay.ids import new_id

# What an incoming `X-Request-Id` may look like to be kept: short, printable, no spaces,
# nothing a log parser or a header could choke on.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


@dataclass(slots=True)
class RequestInfo:
    request_id: str
    started: float  # time.monotonic() when the request arrived
    tenant: str | None = None
    error_code: str | None = None  # the code of the error response, if it was one
    limit: str | None = None  # the limit that refused it, if one did (`errors.LimitKind`)
    first_token_at: float | None = None  # time.monotonic() of a started generation's first piece


_current: ContextVar[RequestInfo | None] = ContextVar("chatrelay_request", default=None)


def accept_request_id(raw: str | None) -> str:
    """The client's `X-Request-Id` when well-formed (1-128 of `[A-Za-z0-9._:-]`), else a new one."""
    if raw is not None and _REQUEST_ID.fullmatch(raw):
        return raw
    return new_id("req")


def begin(info: RequestInfo) -> Token[RequestInfo | None]:
    """Make `info` the current request for this task (and tasks it creates)."""
    return _current.set(info)


def end(token: Token[RequestInfo | None]) -> None:
    """The request is answered: back to the context before `begin`."""
    _current.reset(token)


def current() -> RequestInfo | None:
    return _current.get()


def current_request_id() -> str | None:
    info = _current.get()
    return info.request_id if info is not None else None


def note_tenant(tenant: str) -> None:
    info = _current.get()
    if info is not None:
        info.tenant = tenant


def note_error(code: str, limit: str | None = None) -> None:
    """The error the request is answered with, and the limit behind it if there is one."""
    info = _current.get()
    if info is not None:
        info.error_code = code
        info.limit = limit
