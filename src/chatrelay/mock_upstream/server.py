"""`MockUpstreamServer`: the mock app on a free loopback port, as a task in the current loop.

It is what `web/app.py`'s lifespan starts when no OPENAI_API_KEY is set: the socket is bound
before uvicorn starts (so the base URL is known at once), and stopping ends open streams,
stalls included, and waits for every task uvicorn leaves behind.
"""

from __future__ import annotations

import asyncio

from chatrelay.embedded_server import EmbeddedServer, bind_localhost
from chatrelay.mock_upstream.app import MockState, create_mock_app


class MockUpstreamServer:
    """Runs the mock app under uvicorn on 127.0.0.1 (free port) inside the current event loop."""

    def __init__(self, *, token_delay: float = 0.02) -> None:
        self.app = create_mock_app(token_delay=token_delay)
        self.base_url = ""
        self._server: EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        """Serve on a free port; returns the base URL once connections are accepted."""
        if self._task is not None:
            raise RuntimeError("mock upstream already started")
        state: MockState = self.app.state.mock
        state.closing.clear()
        sock, port = bind_localhost()
        self._server = server = EmbeddedServer(self.app)
        self._task = task = asyncio.create_task(
            server.serve(sockets=[sock]), name="chatrelay-mock-upstream"
        )
        while not server.started:
            if task.done():
                sock.close()
                self._server = self._task = None
                task.result()  # raises the start-up error
                raise RuntimeError("mock upstream exited during start-up")
            await asyncio.sleep(0.005)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def stop(self) -> None:
        """Stop accepting, end open streams (stalls included), and wait for every task."""
        server, task = self._server, self._task
        if server is None or task is None:
            return
        self._server = self._task = None
        server.should_exit = True
        self.app.state.mock.closing.set()
        try:
            await task
        finally:
            # uvicorn cancels tasks that outlive timeout_graceful_shutdown but doesn't await them.
            leftovers = list(server.server_state.tasks)
            for leftover in leftovers:
                leftover.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)

    async def __aenter__(self) -> MockUpstreamServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
