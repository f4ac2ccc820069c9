"""Built-in mock of the OpenAI chat completions API, served over real HTTP on 127.0.0.1.

Without an OPENAI_API_KEY chatrelay points its ordinary httpx upstream client at this server, so
the whole upstream path (sockets, SSE parsing, timeouts, error mapping) runs exactly as it would
against OpenAI. The model name, or a `[[fault:NAME]]` marker in the *last* user message (so a chat
UI can pick one; `stall` and `mock-stall` both work), selects a mode, so every upstream failure
can be seen by hand with `make run`:

    mock         a normal answer, `token_delay` between tokens (unknown models behave like it)
    mock-slow    0.3 s between tokens
    mock-stall   a few tokens, then silence with the connection held open until the client leaves
    mock-drop    a few tokens, then the connection closes without finish_reason or [DONE]
    mock-error   a few tokens, then an in-band `data: {"error": {...}}` event
    mock-500     HTTP 500 with an OpenAI error body, before any streaming
    mock-429     HTTP 429 with `Retry-After: 1`
    mock-length  a truncated answer with finish_reason "length"

The answer is deterministic for a given last user message, quotes its first words and is 3-5
sentences long. Usage numbers are mock estimates: whitespace-separated words of the prompt (all
messages) and of the answer, not real tokenizer counts. Authorization is ignored.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from chatrelay.embedded_server import EmbeddedServer, bind_localhost

__all__ = [
    "MOCK_MODELS",
    "MockUpstreamServer",
    "create_mock_app",
    "mock_answer",
]

MOCK_MODELS: list[str] = [
    "mock",
    "mock-slow",
    "mock-stall",
    "mock-drop",
    "mock-error",
    "mock-500",
    "mock-429",
    "mock-length",
]

SLOW_TOKEN_DELAY = 0.3
FAULT_AFTER_TOKENS = 3  # tokens sent before mock-stall / mock-drop / mock-error misbehave
LENGTH_LIMIT_TOKENS = 12  # mock-length stops here with finish_reason "length"
_MODELS_CREATED = 1_700_000_000  # fixed, so /v1/models is byte-stable

_FAULT_MARKER = re.compile(r"\[\[fault:([A-Za-z0-9_-]+)\]\]")
_TOKEN = re.compile(r"\s*\S+")

_OPENERS = (
    'You asked: "{quote}".',
    'Your message starts with "{quote}".',
    'Thanks for writing "{quote}".',
)
_SENTENCES = (
    "This reply comes from chatrelay's built-in mock upstream, so no real model was consulted.",
    "Set OPENAI_API_KEY to talk to a real model instead.",
    "Each word arrives as its own chunk, which makes the streaming easy to watch.",
    "Pick a model such as mock-stall or mock-drop to see how upstream failures look.",
    "The text is deterministic, so the same question always gets the same answer.",
    "Nothing here was written by a language model; it is assembled from a few fixed sentences.",
)


# --- answer text --------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    """Message text, for both plain string content and OpenAI content-part lists."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def mock_answer(last_user_message: str) -> str:
    """The mock's reply: deterministic in the message, quoting its first words, 3-5 sentences."""
    cleaned = " ".join(_FAULT_MARKER.sub(" ", last_user_message).split())
    words = cleaned.split()
    seed = zlib.crc32(cleaned.encode())
    if words:
        quote = " ".join(words[:6]) + ("…" if len(words) > 6 else "")
        opener = _OPENERS[seed % len(_OPENERS)].format(quote=quote)
    else:
        opener = "Your message was empty, so there is nothing to quote."
    count = 2 + (seed >> 4) % 3
    start = (seed >> 8) % len(_SENTENCES)
    rest = [_SENTENCES[(start + i) % len(_SENTENCES)] for i in range(count)]
    return " ".join([opener, *rest])


def _select_mode(model: str, last_user_message: str) -> str:
    """A `[[fault:NAME]]` marker beats the model name; anything unknown means plain `mock`."""
    marker = _FAULT_MARKER.search(last_user_message)
    if marker:
        name = marker.group(1).lower()
        name = name if name.startswith("mock") else f"mock-{name}"
        if name in MOCK_MODELS:
            return name
    return model if model in MOCK_MODELS else "mock"


# --- OpenAI wire shapes ---------------------------------------------------------------------


def _error_body(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _error(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return JSONResponse(_error_body(message, type_, code), status_code=status, headers=headers)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _sse(obj: Any) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else _dumps(obj)) + b"\n\n"


@dataclass
class _Plan:
    """Everything one request will produce, decided before the first byte is sent."""

    mode: str
    model: str
    tokens: list[str]
    delay: float
    prompt_words: int
    include_usage: bool
    id: str = field(default_factory=lambda: f"chatcmpl-mock{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def finish_reason(self) -> str:
        return "length" if self.mode == "mock-length" else "stop"

    def usage(self) -> dict[str, int]:
        completion = len(self.text.split())
        return {
            "prompt_tokens": self.prompt_words,
            "completion_tokens": completion,
            "total_tokens": self.prompt_words + completion,
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self.include_usage:
            body["usage"] = None
        return _sse(body)

    def usage_chunk(self) -> bytes:
        return _sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": None,
                "choices": [],
                "usage": self.usage(),
            }
        )

    def completion(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": self.usage(),
        }


# --- a response that can misbehave on purpose ----------------------------------------------


class _Body:
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


Script = Callable[[_Body], Awaitable[None]]


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


class _Scripted(Response):
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
        body = _Body(send, self.status_code, self.raw_headers)
        await _race(self.script(body), receive, self.closing)


async def _forever() -> None:
    await asyncio.Event().wait()


# --- the app ---------------------------------------------------------------------------------


@dataclass
class _MockState:
    token_delay: float
    closing: asyncio.Event = field(default_factory=asyncio.Event)


def _stream_script(plan: _Plan) -> Script:
    async def script(body: _Body) -> None:
        await body.write(plan.chunk({"role": "assistant", "content": ""}))
        faulty = plan.mode in ("mock-stall", "mock-drop", "mock-error")
        for token in plan.tokens[:FAULT_AFTER_TOKENS] if faulty else plan.tokens:
            await asyncio.sleep(plan.delay)
            await body.write(plan.chunk({"content": token}))
        if plan.mode == "mock-stall":
            await _forever()
        if plan.mode == "mock-drop":
            return  # unfinished response: uvicorn closes the socket, no terminating chunk
        if plan.mode == "mock-error":
            message = "The mock upstream failed mid-stream on purpose (mock-error)."
            await body.write(_sse({"error": {"message": message, "type": "server_error"}}))
            await body.end()
            return
        await asyncio.sleep(plan.delay)
        await body.write(plan.chunk({}, plan.finish_reason))
        if plan.include_usage:
            await body.write(plan.usage_chunk())
        await body.end(_sse(b"[DONE]"))

    return script


def _non_stream_script(plan: _Plan) -> Script:
    async def script(body: _Body) -> None:
        if plan.mode == "mock-stall":
            await _forever()  # no status line at all: the client waits until it gives up
        await asyncio.sleep(plan.delay * len(plan.tokens))  # as long as the stream would take
        payload = _dumps(plan.completion())
        if plan.mode == "mock-drop":
            await body.write(payload[: len(payload) // 2])
            return  # unfinished response: uvicorn closes the socket
        await body.end(payload)

    return script


def create_mock_app(*, token_delay: float = 0.02) -> Starlette:
    """The mock as a Starlette app; `MockUpstreamServer` serves it over a real socket."""
    state = _MockState(token_delay=token_delay)

    async def chat_completions(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return _error(
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
            )
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "'messages' is a required property", "invalid_request_error")
        messages = [m for m in body["messages"] if isinstance(m, dict)]
        user_texts = [_text_of(m.get("content")) for m in messages if m.get("role") == "user"]
        last_user = user_texts[-1] if user_texts else ""
        model = body.get("model")
        model = model if isinstance(model, str) and model else "mock"
        mode = _select_mode(model, last_user)

        if mode == "mock-500":
            return _error(500, "The mock upstream failed on purpose (mock-500).", "server_error")
        if mode == "mock-429":
            return _error(
                429,
                "Rate limit reached on purpose (mock-429). Please try again in 1s.",
                "requests",
                "rate_limit_exceeded",
                headers={"Retry-After": "1"},
            )

        tokens = _TOKEN.findall(mock_answer(last_user))
        if mode == "mock-length":
            tokens = tokens[:LENGTH_LIMIT_TOKENS]
        options = body.get("stream_options")
        plan = _Plan(
            mode=mode,
            model=model,
            tokens=tokens,
            delay=SLOW_TOKEN_DELAY if mode == "mock-slow" else state.token_delay,
            prompt_words=sum(len(_text_of(m.get("content")).split()) for m in messages),
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        )
        headers = {"x-request-id": plan.id}
        if body.get("stream") is True:
            headers["cache-control"] = "no-cache"
            return _Scripted(
                _stream_script(plan), state.closing, media_type="text/event-stream", headers=headers
            )
        if mode == "mock-error":
            return _error(500, "The mock upstream failed on purpose (mock-error).", "server_error")
        return _Scripted(
            _non_stream_script(plan), state.closing, media_type="application/json", headers=headers
        )

    async def models(request: Request) -> Response:
        data = [
            {
                "id": name,
                "object": "model",
                "created": _MODELS_CREATED,
                "owned_by": "chatrelay-mock",
            }
            for name in MOCK_MODELS
        ]
        return JSONResponse({"object": "list", "data": data})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return _error(
            status, f"{request.method} {request.url.path}: {exc}", "invalid_request_error"
        )

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
    )
    app.state.mock = state
    return app


# --- serving it -----------------------------------------------------------------------------


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
        state: _MockState = self.app.state.mock
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
