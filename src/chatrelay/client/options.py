"""What both clients are configured with: where the service is, the key, timeouts, retries.

The environment is read here once, so `Client()` and `AsyncClient()` (and `chatrelay chat`)
find the service the same way. `CHATRELAY_API_KEY` is one client key; it is not the
service's `CHATRELAY_API_KEYS` list of `tenant:key` pairs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import httpx

from chatrelay.client.follow import ReconnectPolicy

__all__ = ["DEFAULT_URL", "ClientOptions"]

DEFAULT_URL = "http://127.0.0.1:8000"
URL_VARIABLE = "CHATRELAY_URL"
KEY_VARIABLE = "CHATRELAY_API_KEY"


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Resolved settings; `timeout` is for ordinary calls, `follow_read_timeout` the longest
    silence on an event stream before it counts as dropped (the service pings every 15 s)."""

    base_url: str
    api_key: str | None
    timeout: float | None
    follow_read_timeout: float | None
    max_retries: int
    max_retry_wait: float
    reconnect: ReconnectPolicy

    @classmethod
    def resolve(
        cls,
        base_url: str | None,
        api_key: str | None,
        *,
        timeout: float | None,
        follow_read_timeout: float | None,
        max_retries: int,
        max_retry_wait: float,
        max_reconnects: int,
        max_reconnect_delay: float,
    ) -> ClientOptions:
        """Arguments win over the environment; an empty key means no key."""
        url = base_url or os.environ.get(URL_VARIABLE) or DEFAULT_URL
        key = api_key if api_key is not None else os.environ.get(KEY_VARIABLE)
        if max_retries < 0 or max_reconnects < 0:
            raise ValueError("max_retries and max_reconnects must be at least 0")
        return cls(
            base_url=url.rstrip("/"),
            api_key=key or None,
            timeout=timeout,
            follow_read_timeout=follow_read_timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            reconnect=ReconnectPolicy(max_reconnects=max_reconnects, max_delay=max_reconnect_delay),
        )

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
