"""uvicorn, taught to drain: SIGTERM first lets generations finish, then stops serving.

On the first SIGTERM/SIGINT the service turns unready and refuses new generations, while
running ones keep streaming to their subscribers for the grace period; what is left is
stored `interrupted` and its subscribers get a terminal `error` event. Only then does
uvicorn stop, and the process exits 0. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from types import FrameType
from typing import Any

import uvicorn
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette
from uvicorn.config import LOGGING_CONFIG

from chatrelay.config import LogFormat, Settings
from chatrelay.web.http_protocol import HttpLimits, protocol_for
from chatrelay.web.sse import end_open_streams

log = logging.getLogger("chatrelay")

_FORCED_EXIT_AFTER = 5.0  # seconds a second signal waits for final writes before exiting


def server_config(
    app: Starlette,
    settings: Settings,
    *,
    host: str,
    port: int,
    log_level: str,
    log_config: dict[str, Any] | None = None,
) -> uvicorn.Config:
    """The one uvicorn configuration, for a single process and for each worker of a pool.

    uvicorn's own graceful timeout is longer than the drain, so the drain decides.
    """
    json_logs = settings.log_format is LogFormat.JSON
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        # JSON: uvicorn's loggers go through the root handler (one JSON line each), and the
        # access log gives way to the service's own request line, which has the request id,
        # the route template and no query string.
        log_config=None if json_logs else (LOGGING_CONFIG if log_config is None else log_config),
        access_log=not json_logs,
        lifespan="on",
        proxy_headers=False,
        # Header, body and write limits and the connection cap (docs/security.md).
        # Refusals there are counted in the app's metrics (`create_app` puts them on its state).
        http=protocol_for(HttpLimits.from_settings(settings), getattr(app.state, "metrics", None)),
        timeout_keep_alive=settings.keep_alive_timeout,
        timeout_graceful_shutdown=int(settings.shutdown_grace) + 5,
    )


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette, grace: float) -> None:
        super().__init__(config)
        self._app = app
        self._grace = grace
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._interrupting: asyncio.Task[None] | None = None  # held: the loop keeps weak refs
        # We end SSE streams ourselves, with a terminal event, after draining.
        AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is not None or self._loop is None:
            self.exit_now()
            return
        self._loop.call_soon_threadsafe(self._start_drain)

    def exit_now(self) -> None:
        """The second signal: interrupt what still runs (stored `interrupted`) and stop."""
        log.warning("second signal: interrupting generations and exiting now")
        self.should_exit = True
        self.force_exit = True
        AppStatus.should_exit = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._interrupt_all)
        # Whatever still holds the process after this is not worth waiting for:
        # messages left `streaming` are recovered as `interrupted` at the next start.
        watchdog = threading.Timer(_FORCED_EXIT_AFTER, os._exit, args=(1,))
        watchdog.daemon = True
        watchdog.start()

    def _interrupt_all(self) -> None:
        context = getattr(self._app.state, "chatrelay", None)
        tasks: list[asyncio.Task[None]] = []
        if context is not None:
            tasks = [g.task for g in context.registry.running() if g.task is not None]
            context.registry.interrupt_all()
        self._interrupting = asyncio.create_task(self._end_streams_after(tasks))

    @staticmethod
    async def _end_streams_after(tasks: list[asyncio.Task[None]]) -> None:
        """Open streams end once the interrupted generations have published their ends
        (each records its end, then publishes it): their clients get the `error` event
        first, then the closing chunk. Bounded: the process exits soon anyway."""
        if tasks:
            await asyncio.wait(tasks, timeout=_FORCED_EXIT_AFTER / 2)
        end_open_streams()

    def _start_drain(self) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.create_task(self._drain(), name="drain")

    async def _drain(self) -> None:
        try:
            context = getattr(self._app.state, "chatrelay", None)
            if context is not None:
                log.warning(
                    "shutting down: draining %d running generation(s) for up to %gs",
                    context.registry.running_count,
                    self._grace,
                )
                await context.registry.drain(self._grace)
        except Exception:
            log.exception("draining failed")
        finally:
            end_open_streams()
            self.should_exit = True
