"""A response that can misbehave on purpose: late status lines, silence, cut connections.

A script gets a `Body` and writes it piece by piece; the status line goes out with the first
write, so a script that never writes sends nothing at all, and one that returns without
`end()` has uvicorn cut the connection. `ScriptedResponse` runs the script against the
client's disconnect and the server's shutdown, so a stalled script never outlives either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class Body:
    """Body writer for a script; the status line goes out with the first write, not before."""

    def __init__(self, send: Send, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._send = send
        self._status = status
        self._headers = headers
        self.started = False

    async def write(self, data: bytes, *, more: bool = True) -> None:
        if not self.started:
            self.started = True
            start = {
                "type": "http.response.start",
                "status": self._status,
                "headers": self._headers,
            }
            await self._send(start)
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def end(self, data: bytes = b"") -> None:
        await self.write(data, more=False)


Script = Callable[[Body], Awaitable[None]]


async def _client_gone(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _race(work: Awaitable[None], receive: Receive, closing: asyncio.Event) -> None:
    """Run `work` until it ends, the client disconnects, or the server stops, whichever is first.

    uvicorn's `send` silently does nothing once the peer is gone, so watching `receive()` for
    `http.disconnect` is the only prompt way to notice a client leaving a quiet stream.
    """
    tasks = [
        asyncio.ensure_future(work),
        asyncio.ensure_future(_client_gone(receive)),
        asyncio.ensure_future(closing.wait()),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if not tasks[0].cancelled() and (exc := tasks[0].exception()) is not None:
        raise exc


class ScriptedResponse(Response):
    """Runs a script that writes the body. Returning without `end()` closes the connection
    abruptly (uvicorn closes a response the app left unfinished), which is how drops are made."""

    def __init__(
        self,
        script: Script,
        closing: asyncio.Event,
        *,
        media_type: str,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.script = script
        self.closing = closing
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = Body(send, self.status_code, self.raw_headers)
        await _race(self.script(body), receive, self.closing)


async def forever() -> None:
    """Wait until cancelled: a stall, ended by the client leaving or the server stopping."""
    await asyncio.Event().wait()
