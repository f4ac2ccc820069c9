"""The request middleware in-process: a failure no handler answered still leaves with the
JSON 500, its request id and a count; route labels come from the matched route."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chatrelay.metrics import Metrics
from chatrelay.web.errors import EXCEPTION_HANDLERS
from chatrelay.web.instrumentation import Instrumentation


async def broken(request: Request) -> Response:
    raise RuntimeError("a bug")


async def fine(request: Request) -> Response:
    return Response("ok")


def _app(metrics: Metrics) -> Starlette:
    return Starlette(
        routes=[Route("/broken/{thing}", broken), Route("/fine", fine)],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[Middleware(Instrumentation, metrics=metrics, log_requests=True)],
    )


def _client(app: Starlette) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_an_unhandled_exception_is_the_json_500_with_a_request_id() -> None:
    metrics = Metrics()
    async with _client(_app(metrics)) as client:
        response = await client.get("/broken/abc123", headers={"X-Request-Id": "trace-me"})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert response.headers["x-request-id"] == "trace-me"
    exposition = metrics.render().decode()
    assert (
        'chatrelay_http_requests_total{method="GET",route="/broken/{thing}",status="500"} 1.0'
        in exposition
    )


async def test_a_request_id_header_of_the_app_is_not_doubled() -> None:
    async def own_id(request: Request) -> Response:
        return Response("ok", headers={"X-Request-Id": "from-the-handler"})

    metrics = Metrics()
    app = Starlette(
        routes=[Route("/own", own_id)],
        middleware=[Middleware(Instrumentation, metrics=metrics, log_requests=False)],
    )
    async with _client(app) as client:
        response = await client.get("/own", headers={"X-Request-Id": "given"})
    assert response.headers.get_list("x-request-id") == ["given"]
