"""Concurrency caps per key: at most N holders at once (a tenant's generations, a message's
subscribers), counted in this process.

A `Slot` is taken before the work it guards starts and released exactly once when that work
ends, whichever way it ends; a refused `acquire` raises the caller's 429 and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from chatrelay.errors import TooManyRequests


class Slot:
    """One holder's place under a `KeyedLimit`; `release()` may be called any number of times.

    As a context manager it releases on exit unless `keep()` handed it to something that
    outlives the block (a generation task, a response being streamed).
    """

    __slots__ = ("_held", "_kept", "_key", "_limit")

    def __init__(self, limit: KeyedLimit, key: str) -> None:
        self._limit = limit
        self._key = key
        self._held = True
        self._kept = False

    @property
    def held(self) -> bool:
        return self._held

    def keep(self) -> Slot:
        """The slot outlives the `with` block; its new owner releases it."""
        self._kept = True
        return self

    def release(self) -> None:
        if self._held:
            self._held = False
            self._limit._release(self._key)

    def __enter__(self) -> Slot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._kept or exc is not None:
            self.release()


class KeyedLimit:
    """At most `limit` slots per key at once; `limit` 0 means no cap (still counted)."""

    def __init__(self, limit: int, refuse: Callable[[str, int], TooManyRequests]) -> None:
        self.limit = limit
        self._refuse = refuse  # (key, limit) -> the error to raise
        self._held: dict[str, int] = {}

    def count(self, key: str) -> int:
        return self._held.get(key, 0)

    def acquire(self, key: str) -> Slot:
        """A slot for `key`, or the `refuse` error when `limit` are already held."""
        held = self._held.get(key, 0)
        if self.limit and held >= self.limit:
            raise self._refuse(key, self.limit)
        self._held[key] = held + 1
        return Slot(self, key)

    def _release(self, key: str) -> None:
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)  # keys come and go (messages): keep the dict small
