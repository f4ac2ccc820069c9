"""Several upstreams behind one seam: each model goes to the upstream that serves it.

With a single upstream (the `OPENAI_*` variables) every model goes to it, as before. With a
routes file, a model goes to the upstream listing it exactly, else to the one with the
longest matching prefix, else to the default one; a model nobody serves is refused before
anything is stored (`UnknownModel`, naming what is known). The model list is every
upstream's list merged; one upstream failing to list leaves the others' models listed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from chatrelay.config_upstreams import UpstreamRoute
from chatrelay.errors import UnknownModel, UpstreamError
from chatrelay.upstream.client import UpstreamClient, UpstreamStream

log = logging.getLogger("chatrelay.upstream")


class UpstreamRouter:
    def __init__(self, routes: list[tuple[UpstreamRoute, UpstreamClient]], *, routed: bool) -> None:
        if not routes:
            raise ValueError("at least one upstream is needed")
        self._routes = routes
        self._routed = routed
        self._exact = {model: client for route, client in routes for model in route.models}
        self._prefixes = sorted(
            ((prefix, client) for route, client in routes for prefix in route.prefixes),
            key=lambda item: len(item[0]),
            reverse=True,
        )
        self._default = next((client for route, client in routes if route.is_default), None)
        self._checked: dict[str, str] | None = None  # the last probe, when checks are on
        self._checked_at = 0.0

    @property
    def clients(self) -> list[UpstreamClient]:
        return [client for _, client in self._routes]

    def client_for(self, model: str | None) -> UpstreamClient:
        if not self._routed:
            return self._routes[0][1]
        if model:
            exact = self._exact.get(model)
            if exact is not None:
                return exact
            for prefix, client in self._prefixes:
                if model.startswith(prefix):
                    return client
        if self._default is not None:
            return self._default
        raise UnknownModel(self._unknown_message(model))

    def check_model(self, model: str) -> None:
        """Raise `UnknownModel` for a model no upstream serves (before anything is stored)."""
        self.client_for(model)

    def _unknown_message(self, model: str | None) -> str:
        known = [f"{prefix}*" for prefix, _ in sorted(self._prefixes)]
        known += sorted(self._exact)
        return f"no upstream serves model {model!r}; known models and prefixes: " + (
            ", ".join(known) or "none"
        )

    def stream_chat(self, body: dict[str, Any]) -> UpstreamStream:
        model = body.get("model")
        return self.client_for(model if isinstance(model, str) else None).stream_chat(body)

    async def list_models(self) -> dict[str, Any]:
        """Every upstream's models; the first upstream listing an id wins it."""
        if not self._routed:
            return await self._routes[0][1].list_models()
        results = await asyncio.gather(
            *(client.list_models() for client in self.clients), return_exceptions=True
        )
        data: list[Any] = []
        seen: set[str] = set()
        failures: list[UpstreamError] = []
        for (route, _), result in zip(self._routes, results, strict=True):
            if isinstance(result, UpstreamError):
                log.warning("upstream %s did not list its models: %s", route.name, result.message)
                failures.append(result)
                continue
            if isinstance(result, BaseException):
                raise result
            entries = result.get("data")
            for entry in entries if isinstance(entries, list) else []:
                model_id = entry.get("id") if isinstance(entry, dict) else None
                if isinstance(model_id, str) and model_id not in seen:
                    seen.add(model_id)
                    data.append(entry)
        if failures and len(failures) == len(self._routes):
            raise failures[0]
        return {"object": "list", "data": data}

    async def probe(self) -> dict[str, str]:
        """`GET /models` on each upstream: "ok", or what is wrong (for the log and /readyz)."""

        async def one(client: UpstreamClient) -> str:
            try:
                await client.list_models()
            except UpstreamError as exc:
                return f"{exc.code}: {exc.message}"
            return "ok"

        results = await asyncio.gather(*(one(client) for client in self.clients))
        return {
            route.name: result for (route, _), result in zip(self._routes, results, strict=True)
        }

    async def check(self) -> dict[str, str]:
        """Probe now, log what is wrong, and remember it for `/readyz`."""
        self._checked = await self.probe()
        self._checked_at = asyncio.get_running_loop().time()
        for name, result in self._checked.items():
            if result == "ok":
                log.info("upstream %s answered its model list", name)
            else:
                log.warning("upstream %s check failed: %s", name, result)
        return self._checked

    async def readiness(self, *, recheck_after: float = 10.0) -> dict[str, str] | None:
        """The start-up check's results for `/readyz` (None when checks are off); a failed
        one is probed again after `recheck_after` s, so readiness comes back by itself."""
        if self._checked is None:
            return None
        failing = any(result != "ok" for result in self._checked.values())
        age = asyncio.get_running_loop().time() - self._checked_at
        if failing and age >= recheck_after:
            await self.check()
        return self._checked

    def describe(self) -> list[str]:
        lines = [client.describe() for client in self.clients]
        if self._routed:
            for route, _ in self._routes:
                served = [*route.models, *(f"{p}*" for p in route.prefixes)]
                if route.is_default:
                    served.append("(default)")
                lines.append(f"upstream {route.name} serves: {', '.join(served)}")
        return lines

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
