"""Sortable ids generated in the application (ULID layout: 48-bit ms time + 80 random bits).

Ids sort by creation time, so "newest first" and cursor pagination are an index scan on
the primary key. Within one millisecond the random part is incremented, so ids made by
one process are strictly increasing.
"""

from __future__ import annotations

import os
import re
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_lock = threading.Lock()
_last_ms = 0
_last_rand = 0
_ID_RE = re.compile(r"^[a-z]{1,4}_[0-9A-HJKMNP-TV-Z]{26}$")


# Two characters per lookup: 26 characters are 13 groups of 10 bits, most significant
# first (a 128-bit value has two leading zero bits in 130). A character at a time was a
# 26-step loop, and several ids are made per request.
_PAIRS = [high + low for high in _ALPHABET for low in _ALPHABET]
_SHIFTS = tuple(range(120, -1, -10))


def _encode(value: int) -> str:
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def new_id(prefix: str) -> str:
    """A new id like `msg_01JD…`; the prefix says what kind of object it names."""
    global _last_ms, _last_rand
    with _lock:
        now = int(time.time() * 1000)
        if now <= _last_ms:
            now = _last_ms
            _last_rand += 1
        else:
            _last_rand = int.from_bytes(os.urandom(10), "big") >> 1  # room to increment
        _last_ms = now
        value = (now << 80) | (_last_rand & ((1 << 80) - 1))
    return f"{prefix}_{_encode(value)}"


def looks_like_id(value: str, prefix: str) -> bool:
    """Whether `value` has the shape of an id of this kind (cheap check before a query)."""
    return bool(_ID_RE.match(value)) and value.startswith(prefix + "_")
