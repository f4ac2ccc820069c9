"""The four limits of an upstream attempt, and the timeout error each one raises.

An attempt moves through phases (connecting, waiting for the first byte, reading the body),
each with its own limit, under a total deadline; the watchdog in `client.py` always knows
which `Phase` its timer stands for, and that phase names the error code
(`upstream_timeout_<phase>`), so a timeout is never reported as the wrong one.
"""

from __future__ import annotations

from enum import StrEnum

from chatrelay.errors import UpstreamTimeout


class Phase(StrEnum):
    """Which limit the watchdog timer currently enforces; also the timeout's code suffix."""

    CONNECT = "connect"
    FIRST_BYTE = "first_byte"
    IDLE = "idle"
    TOTAL = "total"


def timeout_error(phase: Phase, limit: float) -> UpstreamTimeout:
    """The error for `phase`'s limit (`limit` seconds) running out."""
    messages = {
        Phase.CONNECT: f"could not connect to the upstream within {limit:g}s",
        Phase.FIRST_BYTE: f"upstream sent no data within {limit:g}s",
        Phase.IDLE: f"upstream went quiet for {limit:g}s mid-stream",
        Phase.TOTAL: f"upstream stream exceeded the total limit of {limit:g}s",
    }
    # Nothing but the total limit rules out a retry; whether output was already handed on
    # (which does) is the retry loop's business.
    return UpstreamTimeout(
        messages[phase], code=f"upstream_timeout_{phase}", retryable=phase != Phase.TOTAL
    )
