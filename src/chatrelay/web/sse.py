"""SSE framing of a message's events for native clients, with sse-starlette's response.

Each event's frame is encoded once and kept on the event (`LogEvent.wire`), so a message
followed by many subscribers costs one JSON encoding per event, not one per subscriber.
Whatever a subscriber has not yet received goes out in one write: a reader that fell
behind (or a fast upstream) costs one send per batch, not one per token. The bytes are
exactly what `ServerSentEvent` would produce with LF endings.

`retry:` rides in the block of the first event rather than in a block of its own: a block
with nothing but `retry:` is, to parsers such as httpx-sse, an empty `message` event that
naive consumers choke on. (A `: ping` before the first event carries no `retry:` either.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.types import Message, Receive, Scope, Send

from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.slots import Slot
from chatrelay.sse.framing import PING_FRAME, event_frame, retry_field

RETRY_MS = 2000
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
    """sse-starlette's response, without a cancel scope around every send.

    sse-starlette wraps each send in `anyio.move_on_after(send_timeout)`, a cancel scope
    entered and left per event even when the timeout is None, as it is here: a stalled
    reader is bounded below the app, by the protocol's write timeout
    (`web/http_protocol.py`). Those scopes were 3-4 % of the relay's CPU with 2,000 held
    streams (py-spy, docs/performance.md). With a timeout set, sse-starlette's own path
    runs. Checked against sse-starlette 3.7 (`_send_with_timeout`, `_send_interrupted`).
    """

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is not None:
            await super()._send_with_timeout(send, message)
            return
        try:
            await send(message)
        except BaseException:
            self._send_interrupted = True
            raise


class SlottedEventStream(RelayEventStream):
    """An event stream holding a subscriber `Slot` until the response has ended: also when
    the client leaves before the body starts, when the body generator never runs."""

    def __init__(self, *args: Any, slot: Slot, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
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
