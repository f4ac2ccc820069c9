"""A loopback TCP proxy in front of the service that can cut every connection on demand.

Browser tests put it between Chromium and chatrelay to break a stream mid-answer the way
a network does (the sockets are reset, the service keeps running), and can make it refuse
new connections for a while, to see what a client does when reconnecting keeps failing.
It runs its own event loop in a background thread, so sync tests can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any


class DroppingProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target_port`, byte for byte."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.attempts = 0  # connections that reached the proxy, refused ones included
        self.accepted = 0  # connections forwarded to the service
        self.refusing = False
        self._transports: set[asyncio.WriteTransport] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)

    def start(self) -> DroppingProxy:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("tcp proxy did not start")
        return self

    def drop(self) -> int:
        """Reset every open connection (both sides); returns how many pairs were cut."""
        return self._call(self._drop_all).result(5)

    def refuse(self, on: bool = True) -> None:
        """While on, new connections are reset as soon as they are accepted."""
        self.refusing = on

    def stop(self) -> None:
        if self._loop is None:
            return
        self._call(self._shutdown).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    # --- the proxy's own thread ----------------------------------------------------------

    def _call(self, fn: Callable[[], Coroutine[Any, Any, int]]) -> Future[int]:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(fn(), self._loop)

    def _run(self) -> None:
        self._loop = loop = asyncio.new_event_loop()
        self._server = loop.run_until_complete(asyncio.start_server(self._handle, sock=self._sock))
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts += 1
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        pair = (writer.transport, up_writer.transport)
        self._transports.update(pair)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for transport in pair:
                self._transports.discard(transport)
                transport.abort()

    async def _drop_all(self) -> int:
        transports = list(self._transports)
        for transport in transports:
            transport.abort()  # RST, as a broken network or a killed proxy looks
        return len(transports) // 2

    async def _shutdown(self) -> int:
        assert self._server is not None
        self._server.close()
        dropped = await self._drop_all()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self._server.wait_closed()
        return dropped


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        if writer.can_write_eof():
            writer.write_eof()
