"""SSE framing of the event log for clients, with sse-starlette's `EventSourceResponse`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

from sse_starlette import EventSourceResponse, ServerSentEvent

from chatrelay.generation.log import LogEvent

RETRY_MS = 2000
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _encode(event: LogEvent) -> ServerSentEvent:
    data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"))
    return ServerSentEvent(data=data, event=event.kind, id=event.id, sep="\n")


def event_stream(
    events: AsyncIterator[LogEvent | None],
    *,
    on_abandoned: Callable[[], None] | None = None,
    headers: dict[str, str] | None = None,
    status_code: int = 200,
) -> EventSourceResponse:
    """`retry:` first, then every event with its cursor as `id`; `: ping` when quiet.

    `on_abandoned` runs if the client leaves before the terminal event.
    """

    async def frames() -> AsyncIterator[ServerSentEvent]:
        finished = False
        try:
            yield ServerSentEvent(retry=RETRY_MS, sep="\n")
            async for event in events:
                if event is None:
                    yield ServerSentEvent(comment="ping", sep="\n")
                    continue
                yield _encode(event)
                if event.is_terminal:
                    finished = True
        finally:
            if not finished and on_abandoned is not None:
                on_abandoned()

    return EventSourceResponse(
        frames(),
        status_code=status_code,
        headers={**SSE_HEADERS, **(headers or {})},
        ping=0,
        sep="\n",
    )
