"""A forwarding HTTP proxy on loopback, for tests that must see traffic go through one.

It does what corporate proxies do for an HTTP client: `CONNECT host:port` opens a tunnel
(HTTPS upstreams), and an absolute-form request (`POST http://host:port/path HTTP/1.1`) is
forwarded to its origin (plain-HTTP upstreams), one request per connection. With
`credentials`, a request without the matching `Proxy-Authorization: Basic …` gets 407.
Every request line it accepted is recorded, with the credentials it carried.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    target: str  # `host:port` for CONNECT, the absolute URL otherwise
    proxy_authorization: str | None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class HttpProxy:
    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.port = 0
        self._requests: list[ProxiedRequest] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[ProxiedRequest]:
        with self._lock:
            return list(self._requests)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="http-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("proxy did not start")

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._server.serve_forever()

        asyncio.run(main())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = [line for line in lines[1:] if line]
        auth = next(
            (
                h.split(":", 1)[1].strip()
                for h in headers
                if h.lower().startswith("proxy-authorization:")
            ),
            None,
        )
        with self._lock:
            self._requests.append(ProxiedRequest(method, target, auth))
        if self.credentials is not None:
            user, password = self.credentials
            expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            if auth != expected:
                writer.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n'
                )
                await writer.drain()
                writer.close()
                return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
        else:
            parts = urlsplit(target)
            up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            # One request per connection: what follows on a kept-alive connection would be
            # piped to the origin still in absolute form, so both sides are told to close.
            kept = [h for h in headers if not h.lower().startswith(("proxy-", "connection:"))] + [
                "Connection: close"
            ]
            up_writer.write(
                f"{method} {path} {version}\r\n".encode("latin-1")
                + "".join(f"{h}\r\n" for h in kept).encode("latin-1")
                + b"\r\n"
            )
            await up_writer.drain()
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
