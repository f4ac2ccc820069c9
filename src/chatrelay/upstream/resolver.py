"""The upstream's host name resolved once per few seconds, not once per connection.

A burst of new streams opens a connection per stream (HTTP/1.1 cannot share one between
concurrent streams); resolving `api.openai.com` for each would put thousands of lookups
into the event loop's resolver threads at once. Like aiohttp's connector (10 s), answers
are cached for `ttl` seconds, and lookups of the same name at the same time share one.
An IP address is not looked up at all.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from typing import Any

AddrInfo = tuple[Any, ...]  # one row of `getaddrinfo`: family, type, proto, canonname, sockaddr


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class Resolver:
    def __init__(self, ttl: float = 10.0) -> None:
        self._ttl = ttl
        self._cache: dict[tuple[str, int], tuple[float, list[AddrInfo]]] = {}
        self._pending: dict[tuple[str, int], asyncio.Task[list[AddrInfo]]] = {}

    async def resolve(self, host: str, port: int) -> list[AddrInfo]:
        """The addresses to try for `host:port`, in the resolver's order (raises `OSError`,
        `socket.gaierror` for a name that does not resolve)."""
        key = (host, port)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(self._lookup(host, port))
            self._pending[key] = task
            task.add_done_callback(lambda done: self._done(key, done))
        # A caller that gives up (its connect limit) leaves the lookup to the others.
        return await asyncio.shield(task)

    async def _lookup(self, host: str, port: int) -> list[AddrInfo]:
        if _is_ip(host):
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            infos: list[AddrInfo] = [
                (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))
            ]
        else:
            loop = asyncio.get_running_loop()
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        if not infos:
            raise socket.gaierror(socket.EAI_NONAME, f"no address for {host}")
        self._cache[(host, port)] = (time.monotonic() + self._ttl, infos)
        return infos

    def _done(self, key: tuple[str, int], task: asyncio.Task[list[AddrInfo]]) -> None:
        self._pending.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have given up already
