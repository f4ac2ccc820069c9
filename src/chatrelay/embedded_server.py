"""Running uvicorn inside someone else's process: a server task that leaves the host alone.

The built-in mock upstream (`chatrelay.mock_upstream`) and the tests' fake upstream both
serve an ASGI app on a loopback port from inside a process that already has its own server,
signal handlers and logging. `EmbeddedServer` keeps its hands off all three, and
`bind_localhost` hands out a bound socket so the port is known before uvicorn starts. It is
its own module, not part of the mock, because it serves any app: the fake upstream imports
it without loading the mock.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

__all__ = ["EmbeddedServer", "bind_localhost"]

_EMBEDDED = contextvars.ContextVar("chatrelay_embedded_uvicorn", default=False)
_HTTP_LOGGER = logging.getLogger("chatrelay.embedded_server.http")


class _HideEmbeddedServerRecords(logging.Filter):
    """Drops uvicorn's server records ("Started server process", "Shutting down") that an
    embedded server logs from its own task, so the host's log doesn't seem to restart."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _EMBEDDED.get()


class _HideDeliberateEndings(logging.Filter):
    """The mock and fakes end responses unfinished on purpose; uvicorn calls that an error."""

    _MESSAGES = frozenset(
        {
            "ASGI callable returned without completing response.",
            "ASGI callable returned without starting response.",
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self._MESSAGES


_HTTP_LOGGER.addFilter(_HideDeliberateEndings())


class _EmbeddedH11Protocol(H11Protocol):
    """h11 (pure Python, always present) with its own logger and no access log, so the embedded
    server never writes to the host's `uvicorn.error` / `uvicorn.access` loggers."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.logger = _HTTP_LOGGER
        self.access_log = False


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server meant to run as a task inside another server's process (or a thread).

    Plain `uvicorn.Server.serve` would, in the main thread, replace the process's SIGINT/SIGTERM
    handlers with its own for as long as it runs (so the host's Ctrl+C only stopped this server),
    and `uvicorn.Config(log_level=...)` would set the global `uvicorn.error` / `uvicorn.access`
    levels under the host. This class does neither; run `serve()` as its own task.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        graceful_timeout: int = 1,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
    ) -> None:
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level=None,
            lifespan="off",
            interface="asgi3",  # "auto" mistakes a bound-method app for ASGI2
            http=_EmbeddedH11Protocol,
            ws="none",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=graceful_timeout,
            ssl_certfile=ssl_certfile,  # the tests' HTTPS upstreams
            ssl_keyfile=ssl_keyfile,
        )
        super().__init__(config)
        host_logger = logging.getLogger("uvicorn.error")
        if not any(isinstance(f, _HideEmbeddedServerRecords) for f in host_logger.filters):
            host_logger.addFilter(_HideEmbeddedServerRecords())

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the host owns the process's signals

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        _EMBEDDED.set(True)  # only this task's context: it must run as its own task
        await super().serve(sockets=sockets)


def bind_localhost() -> tuple[socket.socket, int]:
    """A listening-ready socket on 127.0.0.1 with a free port, bound before uvicorn starts so
    the port is known without racing anyone for it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    port: int = sock.getsockname()[1]
    return sock, port
