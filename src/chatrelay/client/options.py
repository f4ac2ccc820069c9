"""What both clients are configured with: where the service is, the key, timeouts, retries.

The environment is read here once, so `Client()` and `AsyncClient()` (and `chatrelay chat`)
find the service the same way. `CHATRELAY_API_KEY` is one client key; it is not the
service's `CHATRELAY_API_KEYS` list of `tenant:key` pairs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import httpx

from chatrelay.client.follow import ReconnectPolicy

__all__ = ["DEFAULTS", "DEFAULT_URL", "ClientOptions", "ClientSettings"]

DEFAULT_URL = "http://127.0.0.1:8000"
URL_VARIABLE = "CHATRELAY_URL"
KEY_VARIABLE = "CHATRELAY_API_KEY"


class ClientSettings(TypedDict, total=False):
    """The tunable settings of both clients, as keyword arguments (defaults in `DEFAULTS`).

    `timeout`: seconds for an ordinary call (None: no limit). `follow_read_timeout`: the
    longest silence on an event stream before it counts as dropped (the service pings every
    15 s). `max_retries`, `max_retry_wait`: retries of a `429` (or a read's `503`), and the
    longest `Retry-After` waited for. `max_reconnects`, `max_reconnect_delay`: failed
    reconnects in a row that `follow` tries, and the cap on the server's `retry:` delay.
    """

    timeout: float | None
    follow_read_timeout: float | None
    max_retries: int
    max_retry_wait: float
    max_reconnects: int
    max_reconnect_delay: float


DEFAULTS: ClientSettings = {
    "timeout": 30.0,
    "follow_read_timeout": 60.0,
    "max_retries": 2,
    "max_retry_wait": 60.0,
    "max_reconnects": 10,
    "max_reconnect_delay": 30.0,
}


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Resolved settings: `ClientSettings` with their defaults, the URL and the key."""

    base_url: str
    api_key: str | None
    timeout: float | None
    follow_read_timeout: float | None
    max_retries: int
    max_retry_wait: float
    reconnect: ReconnectPolicy

    @classmethod
    def resolve(
        cls, base_url: str | None, api_key: str | None, **settings: Unpack[ClientSettings]
    ) -> ClientOptions:
        """Arguments win over the environment; an empty key means no key."""
        given = DEFAULTS.copy()
        given.update(settings)
        url = base_url or os.environ.get(URL_VARIABLE) or DEFAULT_URL
        key = api_key if api_key is not None else os.environ.get(KEY_VARIABLE)
        if given["max_retries"] < 0 or given["max_reconnects"] < 0:
            raise ValueError("max_retries and max_reconnects must be at least 0")
        return cls(
            base_url=url.rstrip("/"),
            api_key=key or None,
            timeout=given["timeout"],
            follow_read_timeout=given["follow_read_timeout"],
            max_retries=given["max_retries"],
            max_retry_wait=given["max_retry_wait"],
            reconnect=ReconnectPolicy(
                max_reconnects=given["max_reconnects"], max_delay=given["max_reconnect_delay"]
            ),
        )

    def http_arguments(self) -> dict[str, Any]:
        """What the httpx client of either kind is built with."""
        return {"base_url": self.base_url, "headers": self.headers, "timeout": self.http_timeout}

    @property
    def headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "chatrelay-client"}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    @property
    def http_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout)

    @property
    def follow_timeout(self) -> httpx.Timeout:
        """Connect and write as for any call; reads may wait `follow_read_timeout`."""
        return httpx.Timeout(self.timeout, read=self.follow_read_timeout)
