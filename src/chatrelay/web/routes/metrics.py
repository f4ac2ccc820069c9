"""`GET /metrics`: the Prometheus text exposition (docs/operations.md).

Open by default, like most exporters: it names no tenant, message or request and holds
no secret, and it is meant for a scraper on the internal network. `CHATRELAY_METRICS=off`
removes the route (a JSON 404), and `CHATRELAY_METRICS_TOKEN` makes it require
`Authorization: Bearer <token>` (Prometheus' `authorization` scrape setting), a token of
its own so that a scraper never holds a tenant's client key.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from chatrelay.config import Settings
from chatrelay.errors import Unauthorized
from chatrelay.metrics import CONTENT_TYPE, Metrics


def routes(settings: Settings, metrics: Metrics) -> list[BaseRoute]:
    if not settings.metrics_enabled:
        return []
    expected = f"Bearer {settings.metrics_token}".encode() if settings.metrics_token else None

    async def scrape(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization", "").encode("latin-1")
            if not hmac.compare_digest(given, expected):
                raise Unauthorized("/metrics needs Authorization: Bearer <CHATRELAY_METRICS_TOKEN>")
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return [Route("/metrics", scrape, methods=["GET"])]
