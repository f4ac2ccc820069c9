"""One event of a message's log, as typed values: what it is, its cursor, what it carries.

Events hold the `Message` and text pieces themselves, not an API's JSON, so each surface
(native SSE, OpenAI chunks) renders them its own way. `wire` lets the native edge encode
an event's frame once and share the bytes among every subscriber (an in-memory topic
keeps it on its newest events only: `broker.memory.WIRE_KEPT`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from chatrelay.models import ErrorPayload, Message, ToolCallHead


class EventKind(StrEnum):
    """The event names of the native stream (the SSE `event:` field)."""

    START = "start"
    DELTA = "delta"
    REASONING = "reasoning"
    TOOL_CALL = "tool_call"
    DONE = "done"
    ERROR = "error"

    @property
    def is_terminal(self) -> bool:
        return self in (EventKind.DONE, EventKind.ERROR)


@dataclass(slots=True)
class LogEvent:
    """`seq` is the cursor (1 = `start`), sent as the SSE `id`.

    `text` is the piece of a `delta`/`reasoning` event; `message` is the message as it
    began (`start`) or as it ended (`done`/`error`). A `tool_call` event names its call by
    `index` (its position in `tool_calls`) and either starts it (`call`: id, type, name)
    or carries a piece of its arguments (`text`).
    """

    seq: int
    kind: EventKind
    text: str = ""
    message: Message | None = None
    wire: str | None = field(default=None, repr=False, compare=False)  # native frame, once
    index: int = 0  # tool_call: which call
    call: ToolCallHead | None = None  # tool_call: set on the event that starts the call

    @property
    def id(self) -> str:
        return str(self.seq)

    @property
    def is_terminal(self) -> bool:
        return self.kind.is_terminal

    @property
    def final(self) -> Message:
        """The message a terminal (or `start`) event carries."""
        if self.message is None:
            raise ValueError(f"a {self.kind} event carries no message")
        return self.message

    @property
    def error(self) -> ErrorPayload:
        """Why an `error` event's message ended (its recorded error, or its status)."""
        final = self.final
        if final.error is not None:
            return final.error
        return {"code": str(final.status), "message": "generation ended"}
