"""The cyclic garbage collector, tuned for a process that holds thousands of streams.

CPython's default (a young collection every 700 net container allocations, older ones
every 10 of those) is sized for small scripts. A relay holding 2,000 streams keeps a
large, long-lived heap — connections, tasks, generations — and allocates a few dozen
containers per event, so at the default a collection runs every few dozen events and
the older ones walk the whole held heap again and again. Measured under the harness's
concurrency scenario (2,000 streams arriving over 2 s), the collector was about a fifth
of the relay's CPU: disabling it entirely cut CPU by 23 % and time to first token p50
by a third; a young threshold of 50,000 got nearly all of that back while cycles are
still collected (docs/performance.md).

`tune` also freezes what exists once the app has started (modules, routes, settings,
the pools): those objects live for the whole process, and frozen ones are never walked
by a collection again.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("chatrelay")

DEFAULT_YOUNG_THRESHOLD = 50_000


def tune(young_threshold: int) -> None:
    """Raise the young generation's threshold (0 leaves CPython's own) and freeze the
    start-up heap. Older generations keep CPython's ratios (10 and 10)."""
    if young_threshold > 0:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(young_threshold, middle, old)
    gc.collect()
    gc.freeze()
    log.debug("gc thresholds %s, %d objects frozen", gc.get_threshold(), gc.get_freeze_count())
