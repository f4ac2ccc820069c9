"""`GET /openapi.json`: the machine-readable description of this API (`web/openapi/`)."""

from __future__ import annotations

from functools import cache

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chatrelay.web.context import context
from chatrelay.web.openapi.document import document_bytes


@cache
def _document(max_content_chars: int) -> bytes:
    return document_bytes(max_content_chars=max_content_chars)


async def openapi_json(request: Request) -> Response:
    body = _document(context(request).settings.max_content_chars)
    return Response(body, media_type="application/json")


routes = [Route("/openapi.json", openapi_json, methods=["GET"])]
