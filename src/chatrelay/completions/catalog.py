"""The upstream's model list in OpenAI's shape, fetched at most once a minute."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from chatrelay.errors import NotFound, UpstreamProtocolError


class ModelSource(Protocol):
    """Where the listing comes from (`upstream.router.UpstreamRouter`)."""

    async def list_models(self) -> dict[str, Any]: ...


def model_list(payload: dict[str, Any]) -> dict[str, Any]:
    """The upstream's `/models` answer in OpenAI's list shape, required fields filled in."""
    data = payload.get("data")
    if not isinstance(data, list):
        raise UpstreamProtocolError("upstream model list has no 'data' array")
    models = []
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        created = entry.get("created")
        owned_by = entry.get("owned_by")
        models.append(
            {
                **entry,
                "object": "model",
                "created": created if type(created) is int else 0,
                "owned_by": owned_by if isinstance(owned_by, str) else "upstream",
            }
        )
    return {"object": "list", "data": models}


class ModelCatalog:
    """The upstream's models, fetched at most once per `ttl` s; callers share one fetch.

    Failures are not cached: the next call asks the upstream again.
    """

    def __init__(
        self,
        upstream: ModelSource,
        *,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._upstream = upstream
        self._ttl = ttl
        self._clock = clock
        self._lock = asyncio.Lock()
        self._listing: dict[str, Any] | None = None
        self._fetched_at = 0.0

    async def listing(self) -> dict[str, Any]:
        async with self._lock:
            if self._listing is None or self._clock() - self._fetched_at >= self._ttl:
                self._listing = model_list(await self._upstream.list_models())
                self._fetched_at = self._clock()
            return self._listing

    async def model(self, model_id: str) -> dict[str, Any]:
        """One model of the listing (`GET /v1/models/{id}`); `NotFound model_not_found`
        when the upstream does not list it."""
        listing = await self.listing()
        for entry in listing["data"]:
            if entry["id"] == model_id:
                found: dict[str, Any] = entry
                return found
        raise NotFound(f"The model '{model_id}' does not exist", code="model_not_found")
