"""A scriptable OpenAI-compatible upstream on a real socket, for tests.

Tests enqueue `Reply` scripts and point the service at `base_url`; the service then talks to it
over real HTTP through its ordinary httpx client, so timeouts, partial reads and disconnects are
the real thing. uvicorn runs in a background thread with its own event loop, which lets sync and
async tests share it: the blocking `wait_for_*` helpers are safe in sync tests; from an async test
that serves chatrelay in the same loop, call them via `await asyncio.to_thread(...)`.

Client disconnects are seen by watching `receive()` for `http.disconnect` alongside the
response (uvicorn's `send` silently does nothing once the peer is gone), so a stream the client
abandons, even a stalled one, is counted within milliseconds of the socket closing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from starlette.types import Receive, Scope, Send

from chatrelay.embedded_server import EmbeddedServer, bind_localhost
from chatrelay.sse.framing import data_frame, json_text


@dataclass
class Reply:
    """How the fake answers one POST /v1/chat/completions."""

    tokens: list[str] = field(default_factory=lambda: ["Hello", ",", " world", "!"])
    delay: float = 0.0  # seconds between chunks
    first_delay: float = 0.0  # after the status line, before the first byte of the body
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # for non-2xx (or a raw non-stream 200) answers: the exact body
    raw: bytes | None = None  # replay these exact stream bytes instead of generating chunks
    chunk_size: int | None = None  # with raw: send it in pieces of this size (`delay` between)
    finish_reason: str | None = "stop"
    usage: dict[str, int] | None = None  # final choices:[] chunk if the request asked include_usage
    send_done: bool = True
    stall_after: int | None = (
        None  # after N tokens (raw: pieces): hold open, silent, until client leaves
    )
    drop_after: int | None = None  # after N tokens (raw: pieces): close the connection abruptly
    model: str = "fake-model"


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON body (or raw text if not JSON)
    client: tuple[str, int] | None = None  # the peer address: which connection carried it
    query: str = ""  # the raw query string


class _Stop(Exception):
    """Ends a script early without finishing the response: the connection is cut."""


class _Writer:
    def __init__(self, send: Send, status: int, headers: dict[str, str]) -> None:
        self._send = send
        self._status = status
        self._headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]

    async def start(self) -> None:
        await self._send(
            {"type": "http.response.start", "status": self._status, "headers": self._headers}
        )

    async def write(self, data: bytes) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def end(self, data: bytes = b"") -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": False})


def _dumps(obj: Any) -> bytes:
    return json_text(obj).encode()


def _sse(obj: Any) -> bytes:
    """One `data:` frame; a `str` goes as it is (`[DONE]`)."""
    return data_frame(obj).encode()


def chunk_frame(
    delta: dict[str, Any], finish_reason: str | None = None, *, model: str = "fake-model"
) -> bytes:
    """One `data:` frame holding a chat.completion.chunk, for tests that script raw bytes."""
    return _sse(
        {
            "id": "chatcmpl-raw",
            "object": "chat.completion.chunk",
            "created": 1733310177,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
    )


async def _forever() -> None:
    await asyncio.Event().wait()


async def _client_gone(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class FakeUpstream:
    """Scriptable OpenAI-compatible server on 127.0.0.1:PORT, served from a background thread."""

    def __init__(
        self,
        *,
        api_root: str = "/v1",
        require_query: str | None = None,
        require_api_key: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        """`api_root` is where `/chat/completions` and `/models` live (Azure: a deployment's
        path); `require_query` (e.g. `api-version=2024-10-21`) and `require_api_key` (an
        `api-key` header; a Bearer token is then refused) make it insist as Azure does.
        `certfile`/`keyfile` serve HTTPS; `host` is the name `base_url` uses."""
        self.base_url = ""
        self.api_root = api_root.rstrip("/")
        self.require_query = require_query
        self.require_api_key = require_api_key
        self._certfile, self._keyfile, self._host = certfile, keyfile, host
        self.models: list[str] = ["fake-model"]
        self._cond = threading.Condition()
        self._queue: deque[Reply] = deque()
        self._default = Reply()
        self._requests: list[RecordedRequest] = []
        self._disconnect_times: list[float] = []
        self._disconnects_reported = 0
        self._server: EmbeddedServer | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Event | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("fake upstream already started")
        sock, port = bind_localhost()
        self._server = server = EmbeddedServer(
            self._app, ssl_certfile=self._certfile, ssl_keyfile=self._keyfile
        )
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve(server, sock),), name="fake-upstream", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 5.0
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError("fake upstream did not start")
            time.sleep(0.002)
        scheme = "https" if self._certfile else "http"
        self.base_url = f"{scheme}://{self._host}:{port}{self.api_root}"

    async def _serve(self, server: EmbeddedServer, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._closing = asyncio.Event()
        await server.serve(sockets=[sock])

    def stop(self) -> None:
        """Stop accepting, cut open streams (stalls included) and join the thread."""
        server, thread, loop, closing = self._server, self._thread, self._loop, self._closing
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.should_exit = True
        if loop is not None and closing is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(closing.set)
        thread.join(timeout=10.0)
        if thread.is_alive():
            raise RuntimeError("fake upstream did not stop within 10 s")

    def __enter__(self) -> FakeUpstream:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- scripting and inspection (any thread) ----------------------------------------------

    def enqueue(self, *replies: Reply) -> None:
        """Answer the next chat completion requests with these, in order."""
        with self._cond:
            self._queue.extend(replies)

    def set_default(self, reply: Reply) -> None:
        """The answer once the queue is empty (initially `Reply()`)."""
        with self._cond:
            self._default = reply

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every chat completion request so far, in arrival order."""
        with self._cond:
            return list(self._requests)

    @property
    def client_disconnects(self) -> int:
        """Responses the client abandoned before the server finished (or cut) them."""
        with self._cond:
            return len(self._disconnect_times)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least `n` chat completion requests arrived; raises TimeoutError."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(f"expected {n} upstream requests, got {len(self._requests)}")
            return list(self._requests)

    def wait_for_disconnect(self, timeout: float = 5.0) -> float | None:
        """Block until a client disconnect not reported by an earlier call has happened.

        Returns the `time.monotonic()` at which the latest disconnect was noticed (compare it
        with the moment the client closed), or None on timeout.
        """
        with self._cond:
            if not self._cond.wait_for(
                lambda: len(self._disconnect_times) > self._disconnects_reported, timeout
            ):
                return None
            self._disconnects_reported = len(self._disconnect_times)
            return self._disconnect_times[-1]

    # --- the ASGI app (server thread) -------------------------------------------------------

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        raw = await _read_body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(headers, query)
        if refusal is not None:
            await self._json(send, refusal[0], {"error": {"message": refusal[1]}})
            return
        if method == "GET" and path == f"{self.api_root}/models":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models
            ]
            await self._json(send, 200, {"object": "list", "data": data})
            return
        if method != "POST" or path != f"{self.api_root}/chat/completions":
            error = {"message": f"{method} {path} not found", "type": "invalid_request_error"}
            await self._json(send, 404, {"error": error})
            return

        body: Any
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with self._cond:
            peer = scope.get("client")
            self._requests.append(
                RecordedRequest(method, path, headers, body, tuple(peer) if peer else None, query)
            )
            reply = self._queue.popleft() if self._queue else self._default
            self._cond.notify_all()

        request = body if isinstance(body, dict) else {}
        options = request.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        if reply.status != 200 or reply.body is not None:
            script = self._plain(reply, send)
        elif reply.raw is not None:
            script = self._raw(reply, send)
        elif request.get("stream") is True:
            script = self._stream(reply, send, include_usage)
        else:
            script = self._completion(reply, send)
        await self._race(script, receive)

    def _refusal(self, headers: dict[str, str], query: str) -> tuple[int, str] | None:
        """What an Azure-like deployment says to a request it does not accept."""
        if self.require_query is not None and self.require_query not in query.split("&"):
            return 404, f"Resource not found (the query must hold {self.require_query})"
        if self.require_api_key is not None:
            if "authorization" in headers:
                return 401, "Bearer tokens are not accepted here; send an api-key header"
            if headers.get("api-key") != self.require_api_key:
                return 401, "Access denied due to invalid subscription key"
        return None

    async def _race(self, script: Callable[[], Awaitable[None]], receive: Receive) -> None:
        """Run the script until it ends, the client leaves (counted), or the server stops."""
        assert self._closing is not None
        work = asyncio.ensure_future(self._run_script(script))
        gone = asyncio.ensure_future(_client_gone(receive))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({work, gone, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, gone, closing):
                task.cancel()
            await asyncio.gather(work, gone, closing, return_exceptions=True)
        if gone.done() and not gone.cancelled() and not (work.done() and not work.cancelled()):
            with self._cond:
                self._disconnect_times.append(time.monotonic())
                self._cond.notify_all()
        if not work.cancelled() and (exc := work.exception()) is not None:
            raise exc

    @staticmethod
    async def _run_script(script: Callable[[], Awaitable[None]]) -> None:
        with contextlib.suppress(_Stop):  # an unfinished response makes uvicorn cut the socket
            await script()

    @staticmethod
    async def _checkpoint(reply: Reply, sent: int) -> None:
        if reply.stall_after == sent:
            await _forever()
        if reply.drop_after == sent:
            raise _Stop

    @staticmethod
    async def _json(send: Send, status: int, obj: Any) -> None:
        body = _dumps(obj)
        writer = _Writer(
            send, status, {"content-type": "application/json", "content-length": str(len(body))}
        )
        await writer.start()
        await writer.end(body)

    def _plain(self, reply: Reply, send: Send) -> Callable[[], Awaitable[None]]:
        async def script() -> None:
            body = reply.body
            if body is None:
                error = {"message": f"fake upstream error {reply.status}", "type": "server_error"}
                body = _dumps({"error": error})
            headers = {"content-type": "application/json", "content-length": str(len(body))}
            headers.update({k.lower(): v for k, v in reply.headers.items()})
            writer = _Writer(send, reply.status, headers)
            await writer.start()
            await asyncio.sleep(reply.first_delay)
            await writer.end(body)

        return script

    def _raw(self, reply: Reply, send: Send) -> Callable[[], Awaitable[None]]:
        async def script() -> None:
            raw = reply.raw or b""
            size = reply.chunk_size or max(len(raw), 1)
            pieces = [raw[i : i + size] for i in range(0, len(raw), size)]
            headers = {"content-type": "text/event-stream", "cache-control": "no-cache"}
            headers.update({k.lower(): v for k, v in reply.headers.items()})
            writer = _Writer(send, reply.status, headers)
            await writer.start()
            await asyncio.sleep(reply.first_delay)
            for i, piece in enumerate(pieces):
                await self._checkpoint(reply, i)
                if i:
                    await asyncio.sleep(reply.delay)
                await writer.write(piece)
            await self._checkpoint(reply, len(pieces))
            await writer.end()

        return script

    def _stream(
        self, reply: Reply, send: Send, include_usage: bool
    ) -> Callable[[], Awaitable[None]]:
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            obj: dict[str, Any] = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": reply.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            if include_usage:
                obj["usage"] = None
            return _sse(obj)

        async def script() -> None:
            headers = {"content-type": "text/event-stream", "cache-control": "no-cache"}
            headers.update({k.lower(): v for k, v in reply.headers.items()})
            writer = _Writer(send, reply.status, headers)
            await writer.start()
            await asyncio.sleep(reply.first_delay)
            await writer.write(chunk({"role": "assistant", "content": ""}))
            await self._checkpoint(reply, 0)
            for i, token in enumerate(reply.tokens):
                await asyncio.sleep(reply.delay)
                await writer.write(chunk({"content": token}))
                await self._checkpoint(reply, i + 1)
            if reply.finish_reason is not None:
                await asyncio.sleep(reply.delay)
                await writer.write(chunk({}, reply.finish_reason))
            if include_usage and reply.usage is not None:
                usage = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": reply.model,
                    "choices": [],
                    "usage": reply.usage,
                }
                await writer.write(_sse(usage))
            await writer.end(_sse("[DONE]") if reply.send_done else b"")

        return script

    def _completion(self, reply: Reply, send: Send) -> Callable[[], Awaitable[None]]:
        async def script() -> None:
            message = {"role": "assistant", "content": "".join(reply.tokens)}
            obj: dict[str, Any] = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": reply.model,
                "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
            }
            if reply.usage is not None:
                obj["usage"] = reply.usage
            body = _dumps(obj)
            await asyncio.sleep(reply.first_delay)
            if reply.stall_after is not None:
                await _forever()  # not even a status line
            headers = {"content-type": "application/json"}
            headers.update({k.lower(): v for k, v in reply.headers.items()})
            writer = _Writer(send, 200, headers)
            await writer.start()
            if reply.drop_after is not None:
                await writer.write(body[: len(body) // 2])
                raise _Stop
            await writer.end(body)

        return script
