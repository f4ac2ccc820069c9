"""The resume loop of `follow`, as a state machine that does no I/O.

Both clients drive it the same way: open the stream with `request_headers()`, hand it a
refused answer (`refused`), the bytes of an accepted one (`feed`), or the end of a
connection before the terminal event (`interrupted`), and sleep as long as it says. The
cursor is the last event id seen, sent back as `Last-Event-ID`, so after a dropped
connection or a restarted service the caller still sees each event exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from chatrelay.client.errors import (
    ProtocolError,
    StreamInterruptedError,
    error_from_response,
)
from chatrelay.client.events import Event, decode_event, event_id
from chatrelay.sse.parser import SSEEventTooLarge, SSEParser

__all__ = ["FollowLoop", "ReconnectPolicy"]

# A `done` event carries the whole message; the service bounds content, not frames.
MAX_EVENT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """`max_reconnects` failed attempts in a row (the count restarts whenever events
    arrive); each waits the server's `retry:` (2 s until it sent one), at most `max_delay`."""

    max_reconnects: int = 10
    default_delay: float = 2.0
    max_delay: float = 30.0


class FollowLoop:
    """One `follow` of one message: its cursor, the parser of the current connection, and
    the count of reconnects since events last arrived."""

    def __init__(
        self, path: str, last_event_id: int | None, policy: ReconnectPolicy | None = None
    ) -> None:
        if last_event_id is not None and last_event_id < 0:
            raise ValueError("last_event_id must be at least 0")
        self.path = path
        self.last_event_id = last_event_id
        self.finished = False
        self.connections = 0
        self._policy = policy or ReconnectPolicy()
        self._delay = self._policy.default_delay
        self._failures = 0
        self._parser = SSEParser(max_line_bytes=MAX_EVENT_BYTES)

    def request_headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = str(self.last_event_id)
        return headers

    def refused(self, status: int, headers: Mapping[str, str], body: bytes) -> float | None:
        """A non-200 answer. `204` (resumed from the terminal event) ends the follow: None.
        `429` and `5xx` are waited out (their `Retry-After` first); other errors raise."""
        if status == 204:
            self.finished = True
            return None
        error = error_from_response(status, headers, body)
        if status == 429 or status >= 500:
            return self._next_attempt(error, error.retry_after)
        raise error

    def opened(self, content_type: str | None) -> None:
        """A `200`: a fresh parser for the new connection (a half-read frame is discarded)."""
        if not (content_type or "").lower().startswith("text/event-stream"):
            raise ProtocolError(f"{self.path} answered {content_type!r}, not an event stream")
        self.connections += 1
        self._parser = SSEParser(max_line_bytes=MAX_EVENT_BYTES)

    def feed(self, chunk: bytes) -> list[Event]:
        """The new events in `chunk`: never one at or before the cursor, none after the end."""
        try:
            frames = self._parser.feed(chunk)
        except SSEEventTooLarge as exc:
            raise ProtocolError(f"an event of {self.path} is over {exc.limit} bytes") from exc
        if self._parser.retry is not None:
            self._delay = self._parser.retry / 1000
        events: list[Event] = []
        for frame in frames:
            if self.finished:
                break
            event = decode_event(frame)
            position = event.id if event is not None else event_id(frame)
            if position is None or (
                self.last_event_id is not None and position <= self.last_event_id
            ):
                continue  # defensive: a server that honours Last-Event-ID never sends these
            self.last_event_id = position
            self._failures = 0
            if event is not None:
                events.append(event)
                self.finished = event.is_terminal
        return events

    def interrupted(self, cause: BaseException | None) -> float:
        """The connection failed or ended before the terminal event: the wait before the next
        attempt. Raises `StreamInterruptedError` once the attempts are used up."""
        return self._next_attempt(cause, None)

    def _next_attempt(self, cause: BaseException | None, hint: float | None) -> float:
        self._failures += 1
        if self._failures > self._policy.max_reconnects:
            raise StreamInterruptedError(
                f"gave up following {self.path} after {self._policy.max_reconnects} reconnects"
                f" (last event id {self.last_event_id}): {cause or 'the stream ended early'}",
                last_event_id=self.last_event_id,
            ) from cause
        return min(hint if hint is not None else self._delay, self._policy.max_delay)
