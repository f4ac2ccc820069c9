"""CORS for front-ends served from other origins (`CHATRELAY_CORS_ORIGINS`).

Off unless configured: with no origins, no response carries a CORS header and a
preflight is an ordinary `405`. Credentials (cookies) are never allowed: the API is
authenticated with `Authorization: Bearer`, which a cross-origin `fetch` sends without
them, and `*` with credentials is something browsers refuse anyway.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

ALLOWED_METHODS = ("GET", "POST", "DELETE")
# `Last-Event-ID` is what a resuming `fetch`-based reader sends; `EventSource` sends it too.
ALLOWED_HEADERS = ("Authorization", "Content-Type", "Accept", "Last-Event-ID", "X-Request-Id")
# Where a response says which objects it made or why to wait; unreadable cross-origin
# unless exposed.
EXPOSED_HEADERS = (
    "X-Message-Id",
    "X-User-Message-Id",
    "X-Chatrelay-Conversation-Id",
    "X-Chatrelay-Message-Id",
    "Location",
    "Retry-After",
    "X-Request-Id",
)
PREFLIGHT_MAX_AGE = 600


def cors_middleware(origins: tuple[str, ...]) -> list[Middleware]:
    """Starlette's `CORSMiddleware` for these origins, or nothing when there are none."""
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(origins),
            allow_methods=list(ALLOWED_METHODS),
            allow_headers=list(ALLOWED_HEADERS),
            expose_headers=list(EXPOSED_HEADERS),
            allow_credentials=False,
            max_age=PREFLIGHT_MAX_AGE,
        )
    ]
