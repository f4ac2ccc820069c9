"""`GET /`: the browser chat page, and its scripts and style under `/static/`.

The files are a fixed list read from the package (`web/page/`), never a path taken from
the request, so nothing else on disk can be served. Every answer carries a strict
`Content-Security-Policy` and `nosniff`: the page has no inline script or style and loads
nothing from other hosts, so model text that slipped past escaping still could not run.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chatrelay.errors import NotFound

PAGE_DIR = Path(__file__).resolve().parent.parent / "page"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files that change with each release: revalidate rather than serve a stale script.
    "Cache-Control": "no-cache",
}
STATIC_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "follow.js": "text/javascript; charset=utf-8",
    "markdown.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}


@cache
def _read(name: str) -> bytes:
    return (PAGE_DIR / name).read_bytes()


def _file(name: str, media_type: str) -> Response:
    return Response(_read(name), media_type=media_type, headers=SECURITY_HEADERS)


async def index(request: Request) -> Response:
    return _file("index.html", "text/html; charset=utf-8")


async def static_file(request: Request) -> Response:
    name: str = request.path_params["name"]
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise NotFound(f"no static file {name[:64]}")
    return _file(name, media_type)


routes = [
    Route("/", index, methods=["GET"]),
    Route("/static/{name}", static_file, methods=["GET"]),
]
