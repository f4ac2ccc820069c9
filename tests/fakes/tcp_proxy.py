"""A TCP proxy in front of chatrelay that drops its connections when a test says so.

A client or browser test needs the connection to break under a stream at a moment it
chooses, as a load balancer or a flaky network would break it: `drop()` aborts every open
connection (both sides, with an RST, no graceful end), `refuse()` resets new connections
as soon as they arrive (reconnecting keeps failing), `retarget()` points new connections at another
service process (a restart on a new port, seen by the client at one address), and `pace`
holds the service-to-client bytes to `pace[0]` bytes per `pace[1]` seconds so a stream of a
finished message is still on the wire when the test acts. It runs its own event loop in a
thread, like `FakeUpstream`, so sync and async tests can both use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["TcpProxy"]


class TcpProxy:
    def __init__(self, target_port: int, *, pace: tuple[int, float] | None = None) -> None:
        self.target_port = target_port
        self.pace = pace
        self.port = 0
        self.attempts = 0  # connections that reached the proxy, refused ones included
        self.accepted = 0  # connections forwarded to the service
        self.drops = 0
        self.refusing = False
        self._loop = asyncio.new_event_loop()
        self._open: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    url = base_url

    def start(self) -> TcpProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            self._abort_all()
            for task in self._handlers:
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

        self._call(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def drop(self) -> int:
        """Abort every open connection; returns how many client connections were cut."""

        async def drop() -> int:
            return self._abort_all()

        cut = self._call(drop())
        self.drops += 1
        return cut

    def refuse(self, on: bool = True) -> None:
        """While on, new connections are reset as soon as they are accepted."""
        self.refusing = on

    def retarget(self, port: int) -> None:
        self.target_port = port

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def _abort_all(self) -> int:
        writers = list(self._open)
        self._open.clear()
        for writer in writers:
            writer.transport.abort()
        return len(writers) // 2

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts += 1
        if self.refusing:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()  # nothing listens there (a restart in progress)
            return
        self.accepted += 1
        self._open.update((writer, up_writer))
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, None), self._pump(up_reader, writer, self.pace)
            )
        finally:
            for side in (writer, up_writer):
                self._open.discard(side)
                side.transport.abort()

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pace: tuple[int, float] | None,
    ) -> None:
        size = pace[0] if pace else 65536
        with contextlib.suppress(OSError, ConnectionError, asyncio.IncompleteReadError):
            while data := await source.read(size):
                sink.write(data)
                await sink.drain()
                if pace:
                    await asyncio.sleep(pace[1])
        # One side finished or broke: end the other, as a proxy does.
        with contextlib.suppress(OSError, RuntimeError):
            if sink.can_write_eof():
                sink.write_eof()
