"""SSE framing of a message's events for native clients, with sse-starlette's response.

Each event's frame is encoded once and kept on the event (`LogEvent.wire`), so a message
followed by many subscribers costs one JSON encoding per event, not one per subscriber
(an in-memory topic keeps the frames of its newest events only, `broker.memory.WIRE_KEPT`:
a reader far behind encodes the older ones again).
Whatever a subscriber has not yet received goes out in one write: a reader that fell
behind (or a fast upstream) costs one send per batch, not one per token. The bytes are
exactly what `ServerSentEvent` would produce with LF endings.

`retry:` rides in the block of the first event rather than in a block of its own: a block
with nothing but `retry:` is, to parsers such as httpx-sse, an empty `message` event that
naive consumers choke on. (A `: ping` before the first event carries no `retry:` either.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

from sse_starlette import EventSourceResponse
from sse_starlette.event import ensure_bytes
from sse_starlette.sse import AppStatus
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.slots import Slot
from chatrelay.sse.framing import PING_FRAME, event_frame, retry_field

RETRY_MS = 2000
# The scope key under which `RelayApp` (web/app.py) leaves the server's own `send`.
SERVER_SEND = "chatrelay.server_send"
# The scope key under which `StreamHolder` takes the rest of an event stream's response
# (`RelayEventStream._hold`) to await itself, once the framework's frames have returned.
DETACHED = "chatrelay.detached_stream"
Hold = Callable[[Receive], Awaitable[None]]


class StreamHolder:
    """Middleware holding event streams until they end, so the frames inside it need not.

    Once a stream's sender task runs, the route, Starlette's exception middleware, CORS and
    the request object have nothing left to do, yet in ASGI each would wait out the stream
    — a chain of a dozen coroutines, their closures and the request, per held stream. The
    stream leaves the rest of its response here instead (`RelayEventStream._hold`) and
    those frames return: about 4 KB less per held stream (docs/performance.md). Whatever
    sits outside this middleware (Instrumentation) still sees the stream's whole life.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        held: list[Hold] = []
        scope[DETACHED] = held
        try:
            await self.app(scope, receive, send)
        finally:
            for hold in held:
                await hold(receive)


SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
RETRY_FIELD = retry_field(RETRY_MS)


def native_payload(event: LogEvent) -> dict[str, Any]:
    """The `data:` of a native event (README, "Event stream")."""
    if event.kind in (EventKind.DELTA, EventKind.REASONING):
        return {"content": event.text}
    if event.kind is EventKind.TOOL_CALL:
        call = event.call
        if call is None:
            return {"index": event.index, "arguments": event.text}
        return {"index": event.index, "id": call.id, "type": call.type, "name": call.name}
    if event.kind is EventKind.ERROR:
        return {"error": event.error, "message": event.final.to_api()}
    return {"message": event.final.to_api()}


def encode_frame(event: LogEvent) -> str:
    frame = event.wire
    if frame is None:
        frame = event.wire = event_frame(event.id, event.kind, native_payload(event))
    return frame


class RelayEventStream(EventSourceResponse):
    """sse-starlette's response, with one task per stream instead of a task group.

    sse-starlette runs every response as an anyio task group of three tasks — the sender,
    a disconnect listener, and a listener for the server's exit signal, each under a
    supervisor coroutine — and wraps each send in a cancel scope and a method of its own.
    For a relay holding thousands of streams that set-up and those per-event hops were a
    few per cent of the CPU (docs/performance.md). Here, for the responses chatrelay makes
    (no ping task, no send timeout, no shutdown grace: a stalled reader is bounded below
    the app, by the protocol's write timeout in `web/http_protocol.py`, and draining is
    ours), one task sends the events, and the request's own task listens for the client
    leaving: it wakes once, at the end, while the sender — woken per event — runs on a
    stack of its own rather than under the request's dozen framework frames. The client
    leaving cancels the sender; `end_open_streams` does at shutdown. What a client sees is
    the same: the same headers and bytes, the closing chunk when the server ends the
    stream, nothing more once the client has gone. Under `StreamHolder` the rest of the
    response (`_hold`: listening, the closing chunk, the background task, a subclass's
    `_ended`) is left to it, so the framework's frames return meanwhile. Any other
    configuration runs sse-starlette's own path. Checked against sse-starlette 3.7 (`__call__`,
    `_stream_response`, `_listen_for_disconnect`).
    """

    _sender: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._relayed(scope):
            try:
                await super().__call__(scope, receive, send)
            finally:
                self._ended()
            return
        if AppStatus.should_exit:
            self.active = False  # the server is stopping: no new stream
        sender = None
        if self.active:
            sender = asyncio.get_running_loop().create_task(self._send_events(scope, send))
            self._sender = sender
            _OPEN.add(self)
        held: list[Hold] | None = scope.get(DETACHED)
        if held is not None:
            # `StreamHolder` waits for the stream's end, above the framework's frames.
            held.append(partial(self._hold, sender, send))
            return
        await self._hold(sender, send, receive)

    async def _hold(self, sender: asyncio.Task[None] | None, send: Send, receive: Receive) -> None:
        """Until the stream has ended: listen for the client leaving while `sender` sends,
        end the body if the server ended the stream, then the background task."""
        try:
            if sender is not None:
                try:
                    await self._until_sent_or_gone(receive, sender)
                finally:
                    _OPEN.discard(self)
                    self._sender = None
                    sender.cancel()  # the client left (or this task is being cancelled)
                    with contextlib.suppress(asyncio.CancelledError):
                        # Its cleanup (the body's `finally`) runs first; a failure while
                        # sending is raised here, as the response's failure.
                        await sender
            if not (self._response_complete or self._client_disconnected or self._send_interrupted):
                # Ended by the server: a clean end of the chunked body, with the start
                # message first if not a single event went out.
                with contextlib.suppress(OSError):
                    if not self._response_started:
                        await send(self._start_message())
                        self._response_started = True
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    self._response_complete = True
            if self.background is not None:
                await self.background()
        finally:
            self._ended()

    def _ended(self) -> None:
        """The response has ended, however it ended, on every path (for subclasses)."""

    async def _until_sent_or_gone(self, receive: Receive, sender: asyncio.Task[None]) -> None:
        """Listen for the disconnect until the sender is done, whichever comes first."""
        loop = asyncio.get_running_loop()
        wake = asyncio.timeout(None)
        listening = True

        def sent(_: asyncio.Task[None]) -> None:
            if listening:
                wake.reschedule(loop.time())

        sender.add_done_callback(sent)
        try:
            async with wake:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        self._client_disconnected = True
                        self.active = False
                        if self.client_close_handler_callable is not None:
                            await self.client_close_handler_callable(message)
                        return
        except TimeoutError:
            if not wake.expired():
                raise  # not ours
        finally:
            listening = False
            sender.remove_done_callback(sent)

    def _relayed(self, scope: Scope) -> bool:
        """Whether this response can take the lean path (the class docstring)."""
        return (
            scope["type"] == "http"
            and scope["method"] != "HEAD"
            and self.send_timeout is None
            and self.ping_interval == 0
            and self.data_sender_callable is None
            and self._shutdown_event is None
            and self._shutdown_grace_period == 0
        )

    def _start_message(self) -> Message:
        return {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self.raw_headers,
        }

    async def _send_events(self, scope: Scope, send: Send) -> None:
        """sse-starlette's `_stream_response` without its per-event hops; a name of its
        own, so that sse-starlette's path (HEAD, pings, send timeouts) runs its own.

        The start goes through every middleware; the events go to the server's own `send`
        when `RelayApp` left it in the scope. Each middleware here acts on the start only
        (the request id, CORS headers, Starlette's note that the response has begun),
        and passing every event down through their four wrappers — three of them
        coroutines — was a few per cent of the CPU of a held stream (docs/performance.md).
        `tests/unit/test_architecture.py` keeps the middleware list to such middleware.
        """
        await send(self._start_message())
        self._response_started = True
        write = scope.get(SERVER_SEND, send)
        sep = self.sep
        async for data in self.body_iterator:
            chunk = data if type(data) is bytes else ensure_bytes(data, sep)
            try:
                await write({"type": "http.response.body", "body": chunk, "more_body": True})
            except BaseException:
                self._send_interrupted = True
                raise
        try:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except BaseException:
            self._send_interrupted = True
            raise
        self._response_complete = True
        self.active = False

    def _end(self) -> None:
        """Stop sending: the server is stopping."""
        self.active = False
        if self._sender is not None:
            self._sender.cancel()


_OPEN: set[RelayEventStream] = set()  # streams being sent now, for `end_open_streams`


def end_open_streams() -> None:
    """The server is stopping: end every open event stream now, with its closing chunk
    (and sse-starlette's own, for responses on its path). Call on the event loop."""
    AppStatus.should_exit = True
    for stream in list(_OPEN):
        stream._end()


class SlottedEventStream(RelayEventStream):
    """An event stream holding a subscriber `Slot` until the response has ended: also when
    the client leaves before the body starts, when the body generator never runs."""

    def __init__(self, *args: Any, slot: Slot, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slot = slot

    def _ended(self) -> None:
        self._slot.release()


def event_stream(
    batches: AsyncIterator[list[LogEvent]],
    *,
    on_open: Callable[[], None] | None = None,
    on_close: Callable[[bool], None] | None = None,
    headers: dict[str, str] | None = None,
    status_code: int = 200,
    slot: Slot | None = None,
) -> EventSourceResponse:
    """Every event with its cursor as `id`, `retry:` in the first one; `: ping` when quiet.

    `on_open` runs when the stream starts; `on_close(finished)` when it ends, with
    `finished` False if the client left before the terminal event. `slot` (a place under
    the subscriber cap) is released when the response ends, however it ends.
    """

    async def frames() -> AsyncIterator[bytes]:
        finished = False
        if on_open is not None:
            on_open()
        prefix = RETRY_FIELD
        try:
            async for batch in batches:
                if not batch:
                    yield PING_FRAME
                    continue
                yield (prefix + "".join(encode_frame(event) for event in batch)).encode()
                prefix = ""
                finished = batch[-1].is_terminal
        finally:
            if on_close is not None:
                on_close(finished)

    options: dict[str, Any] = {
        "status_code": status_code,
        "headers": {**SSE_HEADERS, **(headers or {})},
        "ping": 0,
        "sep": "\n",
    }
    if slot is None:
        return RelayEventStream(frames(), **options)
    return SlottedEventStream(frames(), slot=slot, **options)
