"""SSE output: the one encoder of frames chatrelay (and its mock upstream) writes.

Frames use LF line ends and compact JSON without ASCII escaping; JSON escapes newlines,
so a payload always fits on one `data:` line. A NaN or infinity (not JSON) goes as `null`.
The parser in `parser.py` reads them back.
"""

from __future__ import annotations

from typing import Any

from chatrelay.json_values import dumps_fast

PING_FRAME = b": ping\n\n"


def json_text(payload: Any) -> str:
    """Compact JSON as chatrelay sends it."""
    return dumps_fast(payload)


def data_frame(payload: Any) -> str:
    """`data: <payload>` and the blank line; a `str` payload goes as it is (`[DONE]`)."""
    text = payload if isinstance(payload, str) else json_text(payload)
    return f"data: {text}\n\n"


def event_frame(event_id: str, event: str, payload: Any) -> str:
    """`id:`, `event:` and one `data:` line holding `payload` as JSON."""
    return f"id: {event_id}\nevent: {event}\ndata: {json_text(payload)}\n\n"


def retry_field(milliseconds: int) -> str:
    """The reconnection delay a client's `EventSource` should use: a `retry:` line that
    leads the block of an event (see `web.sse` for why not a block of its own)."""
    return f"retry: {milliseconds}\n"
