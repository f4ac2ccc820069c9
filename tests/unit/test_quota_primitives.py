"""The two quota primitives on their own: the per-tenant token bucket (with a fake clock)
and the per-key concurrency cap with its slots."""

from __future__ import annotations

import pytest

from chatrelay.errors import LimitKind, TooManyRequests
from chatrelay.rate_limit import RateLimiter
from chatrelay.slots import KeyedLimit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(60, 3, clock=clock)  # one a second, bursts of three
    for _ in range(3):
        limiter.charge("acme")
    with pytest.raises(TooManyRequests) as refused:
        limiter.charge("acme")
    assert refused.value.refused_by is LimitKind.REQUEST_RATE
    assert refused.value.code == "rate_limited"
    assert refused.value.retry_after == pytest.approx(1.0)
    limiter.charge("globex")  # a bucket per tenant
    clock.now += 0.5
    with pytest.raises(TooManyRequests) as again:
        limiter.charge("acme")
    assert again.value.retry_after == pytest.approx(0.5), "refusals do not cost a token"
    clock.now += 0.5
    limiter.charge("acme")
    clock.now += 3600
    for _ in range(3):  # refills to the burst, never beyond
        limiter.charge("acme")
    with pytest.raises(TooManyRequests):
        limiter.charge("acme")


def test_zero_per_minute_is_no_limit() -> None:
    limiter = RateLimiter(0, 1, clock=Clock())
    assert not limiter.enabled
    for _ in range(1000):
        limiter.charge("acme")


def _refuse(key: str, limit: int) -> TooManyRequests:
    return TooManyRequests(f"{key} {limit}", limit=LimitKind.SUBSCRIBERS, retry_after=1)


def test_keyed_limit_counts_leases_and_releases_once() -> None:
    limit = KeyedLimit(2, _refuse)
    first, second = limit.acquire("m1"), limit.acquire("m1")
    other = limit.acquire("m2")
    with pytest.raises(TooManyRequests):
        limit.acquire("m1")
    assert limit.count("m1") == 2 and limit.count("m2") == 1
    first.release()
    first.release()  # idempotent: never frees someone else's place
    assert limit.count("m1") == 1
    third = limit.acquire("m1")
    for slot in (second, third, other):
        slot.release()
    assert limit.count("m1") == 0 and limit._held == {}, "no keys left behind"


def test_lease_in_a_with_block_is_released_unless_kept() -> None:
    limit = KeyedLimit(1, _refuse)
    with limit.acquire("t"):
        pass
    assert limit.count("t") == 0
    with pytest.raises(RuntimeError), limit.acquire("t") as slot:
        slot.keep()
        raise RuntimeError("storing the turn failed")
    assert limit.count("t") == 0, "a failure before the hand-over releases"
    with limit.acquire("t") as slot:
        slot.keep()
    assert limit.count("t") == 1 and slot.held
    slot.release()
    assert limit.count("t") == 0


def test_zero_is_no_cap() -> None:
    limit = KeyedLimit(0, _refuse)
    slots = [limit.acquire("t") for _ in range(100)]
    assert limit.count("t") == 100
    for slot in slots:
        slot.release()
