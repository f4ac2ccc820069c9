"""`/metrics` read with prometheus_client's own parser, for tests that check metrics move."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


@dataclass(frozen=True)
class Scrape:
    families: dict[str, str]  # family name -> type
    samples: list[Sample]

    def value(self, name: str, **labels: str) -> float:
        """The sum of `name`'s samples whose labels include `labels` (0 when none match)."""
        return sum(
            sample.value
            for sample in self.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def label_values(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if s.name == name and label in s.labels}


async def scrape(client: httpx.AsyncClient, **headers: str) -> Scrape:
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    families: dict[str, str] = {}
    samples: list[Sample] = []
    for family in text_string_to_metric_families(response.text):
        families[family.name] = family.type
        samples.extend(family.samples)
    return Scrape(families, samples)


async def scrape_until(
    client: httpx.AsyncClient, check: Callable[[Scrape], bool], *, within: float = 5.0
) -> Scrape:
    """Scrape until `check` holds: what a generation reports after its terminal event was
    sent, or a stream's close, lands a moment after the client has seen it."""
    deadline = time.monotonic() + within
    while True:
        got = await scrape(client)
        if check(got) or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)
