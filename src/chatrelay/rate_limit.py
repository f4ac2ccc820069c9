"""Requests per minute per tenant: a token bucket in this process.

Each tenant's bucket holds up to `burst` requests and refills at `per_minute / 60` per
second, so a client may send a burst and then a steady rate. With several instances each
enforces its own bucket (a tenant spread over N instances gets up to N times the rate); the
reverse proxy or a shared limiter is the place for a global one. Tenants are bounded by the
configured keys, so the table of buckets is too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from chatrelay.errors import LimitKind, TooManyRequests


class RateLimiter:
    """`charge(tenant)` takes one request from the tenant's bucket or raises a 429."""

    def __init__(
        self, per_minute: int, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self.burst = max(1, burst)
        self._rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # tenant -> (tokens, at)

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    def charge(self, tenant: str) -> None:
        if not self.enabled:
            return
        now = self._clock()
        tokens, at = self._buckets.get(tenant, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self._rate)
        if tokens < 1.0:
            self._buckets[tenant] = (tokens, now)
            raise TooManyRequests(
                f"too many requests: at most {self.per_minute} per minute "
                f"(bursts of {self.burst}) for this client key",
                limit=LimitKind.REQUEST_RATE,
                retry_after=(1.0 - tokens) / self._rate,
            )
        self._buckets[tenant] = (tokens - 1.0, now)
