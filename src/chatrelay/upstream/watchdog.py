"""The timer that enforces the upstream's four limits, cheap enough to re-arm per read.

An idle limit is re-armed on every chunk the upstream sends, and paused while a delta is
with the caller: three timer moves per event. `asyncio.Timeout.reschedule` pays a heap
push (and leaves a cancelled handle behind) for each, which profiled as a tenth of the
relay's CPU under load. Here arming only records when the limit expires; one loop timer
wakes at the earliest expiry it might have to enforce, and on waking either fires the
real timeout or goes back to sleep until the expiry recorded since. Moving a limit later,
the common case, costs a clock read.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx

from chatrelay.upstream.timeouts import Phase


@dataclass
class Watchdog:
    """One per attempt, over the attempt's `asyncio.timeout(None)` scope.

    `phase` is the phase whose limit was armed last (`seconds`); `kind` is the limit that
    expires first now (that phase's, or the total deadline when it comes first), so a
    timeout is named without comparing clocks after the fact.
    """

    timer: asyncio.Timeout
    deadline: float | None  # loop time; None = no total limit
    phase: Phase = Phase.CONNECT
    seconds: float = 0.0
    kind: Phase = Phase.CONNECT
    error_response: httpx.Response | None = None
    error_body: bytearray = field(default_factory=bytearray)
    _expires: float | None = None  # when the armed limit runs out; None while paused
    _wakeup: asyncio.TimerHandle | None = None
    _wakeup_at: float = 0.0
    _fired: bool = False

    def arm(self, phase: Phase, seconds: float) -> None:
        """Enforce `seconds` from now for `phase`, or the total deadline when that is nearer.

        Raises TimeoutError at once when the total deadline has already passed."""
        self.phase, self.seconds = phase, seconds
        loop = asyncio.get_running_loop()
        now = loop.time()
        when = now + seconds if seconds > 0 else None
        if self.deadline is not None and (when is None or when >= self.deadline):
            when, self.kind = self.deadline, Phase.TOTAL
        else:
            self.kind = phase
        self._expires = when
        if when is None:
            return
        if when <= now:
            # The total deadline passed while paused. Raised here rather than by cancelling
            # the task: a read of bytes already buffered would not wait, so a cancel would
            # arrive only after the next delta, and pausing for it would withdraw it.
            raise TimeoutError
        if self._wakeup is None or self._wakeup_at > when:
            self._sleep_until(loop, when)

    def pause(self) -> None:
        """No timeout while a delta is with the caller: firing would cancel the caller's
        awaits. A timeout already on its way (expired, not yet delivered) is withdrawn."""
        self._expires = None
        if self._fired:
            self._fired = False
            self.timer.reschedule(None)

    def resume(self) -> None:
        """The phase limit starts again (the caller's time is not the upstream's silence);
        the total deadline stays put, and fires at once if it passed meanwhile."""
        self.arm(self.phase, self.seconds)

    def close(self) -> None:
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None

    def _sleep_until(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._wakeup is not None:
            self._wakeup.cancel()
        self._wakeup, self._wakeup_at = loop.call_at(when, self._check), when

    def _check(self) -> None:
        self._wakeup = None
        expires = self._expires
        if expires is None:
            return  # paused; `resume` arms again
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= expires:
            self._fire(now)
        else:
            self._sleep_until(loop, expires)

    def _fire(self, now: float) -> None:
        self._fired = True
        self.timer.reschedule(now)  # the scope cancels the attempt at once
