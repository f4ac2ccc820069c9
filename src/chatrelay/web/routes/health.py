"""Probes for orchestrators: liveness touches nothing, readiness checks dependencies."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chatrelay.errors import StorageError
from chatrelay.web.context import context

_CHECK_TIMEOUT = 2.0


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    ctx = context(request)
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            await ctx.db.ping()
        checks["database"] = "ok"
    except (StorageError, TimeoutError) as exc:
        checks["database"] = "timeout" if isinstance(exc, TimeoutError) else exc.message
    if ctx.settings.redis_url:
        # Redis down makes the instance unready (the contract: database and broker answer),
        # although its generations and their local subscribers go on: see docs/scale-out.md.
        broker_problem = await ctx.engine.broker.check()
        checks["redis"] = "ok" if broker_problem is None else broker_problem
    problem = ctx.persistence.storage_problem
    if checks["database"] == "ok" and problem:
        checks["database"] = f"write trouble: {problem}"
    upstreams = await ctx.upstream.readiness()
    for name, result in (upstreams or {}).items():
        checks["upstream" if name == "default" else f"upstream:{name}"] = result
    if ctx.registry.draining:
        checks["service"] = "draining for shutdown"
    ok = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
    )


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
