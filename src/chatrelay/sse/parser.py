"""Incremental Server-Sent Events parser: upstream bytes in, `SSEEvent`s out.

Implements the WHATWG HTML "event stream interpretation" rules for every upstream we
relay (OpenAI, Azure, vLLM, llama.cpp, Ollama, ...), fed with byte chunks split anywhere.

Why it works on bytes: lines are split on the raw bytes at CR, LF and CRLF only, and each
complete line is decoded on its own (`errors="replace"`). A multibyte character split
across chunks is therefore never mangled, and characters that `str.splitlines` also
treats as line breaks stay data (U+2028, U+2029 and U+0085 are legal unescaped inside a
JSON string). Parsers built on httpx's `aiter_lines` split there and corrupt such payloads;
they also hold a trailing CR back until the next chunk, delaying a complete event. Here a
CR ends its line at once and only a LF that immediately follows it is swallowed.

End of stream: `close()` discards an event that never got its terminating blank line, as
the spec requires ("If the file ends in the middle of an event, before the final empty
line, the incomplete event is not dispatched"). That is also what lets the stream
assembler tell a truncated upstream from a finished one. `close()` still returns a list,
so that contract could change without touching callers.

Where the spec leaves room, this parser chooses:

- `SSEEvent.retry` is the valid `retry` value seen in the event's own block (since the
  previous blank line), else None; the `retry` property keeps the stream-wide last value.
- A `retry` value above 2**63 - 1 is ignored, as browsers ignore one that overflows.
- Memory is bounded: a line (without its ending) or an event's data longer than
  `max_line_bytes` raises `SSEEventTooLarge` instead of buffering without end.

Time is linear in the input: each chunk is split once by `bytes.splitlines` (C speed, and
it treats a CRLF inside one chunk as one ending); a partial line is kept as a list of
pieces and joined once, when its ending arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

from chatrelay.errors import UpstreamProtocolError
from chatrelay.sse.event import SSEEvent

__all__ = ["SSEEventTooLarge", "SSEParser"]

_BOM = b"\xef\xbb\xbf"
_LF = 0x0A
_CR = 0x0D
_COLON = 0x3A
_MAX_RETRY = 2**63 - 1
_MAX_ERROR_FIELD = 4096  # bytes of a non-standard `error:` field kept (see `error_field`)


class SSEEventTooLarge(UpstreamProtocolError):
    """A line or an event's data passed the parser's size limit.

    The message names the limit, never the content. `events` holds the events completed
    earlier in the same `feed()` call, so a caller may still deliver them.
    """

    code = "upstream_event_too_large"
    limit: int = 0
    events: tuple[SSEEvent, ...] = ()


class SSEParser:
    """Turns an SSE byte stream into events; one instance per upstream response.

    After `close()`, or after `SSEEventTooLarge`, the parser is spent: `feed()` raises
    RuntimeError, because bytes fed then would belong to no well-defined stream.
    """

    __slots__ = (
        "_at_start",
        "_closed",
        "_data",
        "_data_len",
        "_event_id",
        "_event_retry",
        "_event_type",
        "_head",
        "_id_buffer",
        "_last_event_id",
        "_max_data",
        "_max_line",
        "_pending",
        "_pending_len",
        "_retry",
        "_skip_lf",
        "error_field",
    )

    def __init__(self, *, max_line_bytes: int = 1_048_576) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self._max_line = max_line_bytes
        # The data buffer counts one LF per data line; the dispatched data drops the last.
        self._max_data = max_line_bytes + 1
        self._closed = False
        self._at_start = True  # still deciding whether the stream opens with a BOM
        self._head = b""  # the first bytes, while they could still be a split BOM
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF is its pair
        self._pending: list[bytes] = []  # pieces of the unfinished last line
        self._pending_len = 0
        self._data: list[bytes] = []  # raw data-field values of the current event
        self._data_len = 0
        self._event_type = ""
        self._event_retry: int | None = None
        self._id_buffer = ""  # the spec's last event ID buffer
        self._event_id: str | None = None  # the same, but None until an id field is seen
        self._last_event_id = ""
        self._retry: int | None = None
        # The last non-standard `error:` field seen (old llama.cpp), for the assembler.
        self.error_field: str | None = None

    @property
    def last_event_id(self) -> str:
        """The spec's last event ID string: the id buffer as of the latest blank line.

        This is what a reconnect sends as `Last-Event-ID`; an id inside an event that
        never completed does not count.
        """
        return self._last_event_id

    @property
    def retry(self) -> int | None:
        """The latest valid `retry` value (ms) the stream sent, None if it sent none."""
        return self._retry

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume the next bytes; return the events they completed, in order."""
        if self._closed:
            raise RuntimeError("SSEParser.feed() called after close() or an error")
        if not chunk:
            return []
        if self._at_start:
            chunk = self._strip_bom(chunk)
            if not chunk:
                return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
                if not chunk:
                    return []

        lines = chunk.splitlines()
        last = chunk[-1]
        tail: bytes | None = None
        if last == _CR:
            self._skip_lf = True
        elif last != _LF:
            tail = lines.pop()  # not ended yet: becomes (part of) the pending line

        limit = self._max_line
        pending = self._pending
        if pending:
            if not lines:
                assert tail is not None  # a non-empty chunk without any line ending
                pending.append(tail)
                self._pending_len += len(tail)
                if self._pending_len > limit:
                    self._fail_line(())
                return []
            pending.append(lines[0])
            lines[0] = b"".join(pending)
            pending.clear()
            self._pending_len = 0
            if len(lines[0]) > limit:
                self._fail_line(())

        if len(chunk) > limit:  # only a chunk this long can hold an over-long line
            for i, line in enumerate(lines):
                if len(line) > limit:
                    self._fail_line(self._process(lines[:i]))
            if tail is not None and len(tail) > limit:
                self._fail_line(self._process(lines))

        if tail is not None:
            pending.append(tail)
            self._pending_len = len(tail)
        if not lines:
            return []
        return self._process(lines)

    def close(self) -> list[SSEEvent]:
        """End of stream: drop any unfinished line and event (see the module docstring)."""
        self._closed = True
        self._pending.clear()
        self._pending_len = 0
        self._data.clear()
        self._data_len = 0
        self._head = b""
        return []

    def _strip_bom(self, chunk: bytes) -> bytes:
        """Drop one leading BOM, holding back up to two bytes while it may be split."""
        head = self._head + chunk
        if len(head) < len(_BOM) and _BOM.startswith(head):
            self._head = head
            return b""
        self._at_start = False
        self._head = b""
        return head[len(_BOM) :] if head.startswith(_BOM) else head

    def _process(self, lines: list[bytes]) -> list[SSEEvent]:
        """Interpret complete lines (endings already removed)."""
        events: list[SSEEvent] = []
        data = self._data
        data_len = self._data_len
        max_data = self._max_data
        for line in lines:
            # Hot path first: an LLM upstream sends `data: {...}` lines and blank lines.
            if not line:
                # Blank line: the spec's "dispatch the event".
                self._last_event_id = self._id_buffer
                if data:
                    events.append(
                        SSEEvent(
                            b"\n".join(data).decode("utf-8", "replace"),
                            self._event_type or "message",
                            self._event_id,
                            self._event_retry,
                        )
                    )
                    data.clear()
                    data_len = 0
                self._event_type = ""
                self._event_retry = None
                continue
            if line.startswith(b"data: "):
                value = line[6:]
            elif line.startswith(b"data:"):
                value = line[5:]
            elif line[0] == _COLON:
                continue  # comment
            else:
                colon = line.find(b":")
                if colon < 0:
                    name = line
                    value = b""
                else:
                    name = line[:colon]
                    value = line[colon + 1 :]
                    if value.startswith(b" "):
                        value = value[1:]
                if name != b"data":
                    self._other_field(name, value)
                    continue
            data.append(value)
            data_len += len(value) + 1
            if data_len > max_data:
                self._data_len = data_len
                self._fail(f"an upstream SSE event's data exceeds {self._max_line} bytes", events)
        self._data_len = data_len
        return events

    def _other_field(self, name: bytes, value: bytes) -> None:
        if name == b"event":
            self._event_type = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\x00" not in value:
                self._id_buffer = self._event_id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            # bytes.isdigit() is ASCII-only and False for b"": exactly the spec's test.
            # The length guard keeps int() away from huge digit strings.
            digits = value.lstrip(b"0")
            if len(digits) <= 19:
                retry = int(digits or b"0")
                if retry <= _MAX_RETRY:
                    self._retry = self._event_retry = retry
        elif name == b"error":
            # Not an SSE field: the spec ignores it, and so does dispatch. Old llama.cpp
            # servers report failures in it, so it is kept for the assembler's verdict.
            self.error_field = value[:_MAX_ERROR_FIELD].decode("utf-8", "replace")
        # Any other field name is ignored, as the spec says.

    def _fail_line(self, events: Sequence[SSEEvent]) -> NoReturn:
        self._fail(f"an upstream SSE line exceeds {self._max_line} bytes", events)

    def _fail(self, message: str, events: Sequence[SSEEvent]) -> NoReturn:
        limit = self._max_line
        self.close()
        exc = SSEEventTooLarge(message)
        exc.limit = limit
        exc.events = tuple(events)
        raise exc
