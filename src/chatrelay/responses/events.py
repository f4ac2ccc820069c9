"""A message's event log as OpenAI's typed Responses stream events, numbered.

`ResponseRenderer` is a pure function of the log: fed the same `LogEvent`s (live from
the topic or rebuilt from the database), it yields the same events with the same
`sequence_number`s. So resuming with `starting_after=N` is rendering the log from its
start and sending what comes after N — exact for a running and a finished response.

The order is OpenAI's: `response.created`, `response.in_progress`; per output item
`response.output_item.added`, then for a message `response.content_part.added`,
`response.output_text.delta`…, `response.output_text.done`, `response.content_part.done`
or for a function call `response.function_call_arguments.delta`…,
`response.function_call_arguments.done`; `response.output_item.done`; at the end
`response.completed`, `response.incomplete` (also for a cancelled response) or `error`
then `response.failed`. Reasoning pieces are not rendered (no reasoning items).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.models import Message, Status
from chatrelay.responses import objects
from chatrelay.sse.framing import json_text

StreamEvent = dict[str, Any]  # one typed event: {"type", "sequence_number", …}

# Finish reasons that make a completed generation an incomplete response.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
# Our error codes that OpenAI names otherwise in `response.error.code`.
_ERROR_CODES = {"upstream_rate_limited": "rate_limit_exceeded"}


def stream_frame(event: StreamEvent) -> str:
    """`event: <type>` and one `data:` line, as OpenAI frames its Responses stream."""
    return f"event: {event['type']}\ndata: {json_text(event)}\n\n"


@dataclass
class _Item:
    output_index: int
    id: str
    call_id: str = ""  # function calls only
    name: str = ""
    pieces: list[str] = field(default_factory=list)
    done: bool = False

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class ResponseRenderer:
    """Renders one response's log, event by event; `snapshot()` is the object so far."""

    def __init__(self, message: Message) -> None:
        self.message = message
        self._base = message.id.removeprefix("msg_")
        self._sequence = 0
        self._items: list[_Item] = []
        self._kinds: list[str] = []  # "message" | "function_call", by output index
        self._text: _Item | None = None  # the open message item
        self._calls: dict[int, _Item] = {}  # tool call index → its item
        self.final: Message | None = None

    # -- the object ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The response object as the events so far describe it."""
        final = self.final
        if final is None:
            return self._object("in_progress")
        status, error, reason = _outcome(final)
        return self._object(status, error=error, incomplete_reason=reason)

    def _object(
        self,
        status: str,
        *,
        error: dict[str, Any] | None = None,
        incomplete_reason: str | None = None,
    ) -> dict[str, Any]:
        item_status = "completed" if status == "completed" else "incomplete"
        output = [self._item_object(i, item_status) for i in range(len(self._items))]
        return objects.response_object(
            self.message,
            status=status,
            output=output,
            error=error,
            incomplete_reason=incomplete_reason,
            final=self.final,
        )

    def _item_object(self, index: int, closed_status: str) -> dict[str, Any]:
        item = self._items[index]
        status = closed_status if item.done else "in_progress"
        if self._kinds[index] == "message":
            return objects.message_item(item.id, item.text, status)
        return objects.function_call_item(item.id, item.call_id, item.name, item.text, status)

    # -- the events ----------------------------------------------------------------------

    def _event(self, type_: str, **fields: Any) -> StreamEvent:
        event: StreamEvent = {"type": type_, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def render(self, event: LogEvent) -> list[StreamEvent]:
        """The stream events one log event stands for (often one, none for reasoning)."""
        kind = event.kind
        if kind is EventKind.DELTA:
            return self._text_delta(event.text)
        if kind is EventKind.TOOL_CALL:
            return self._tool_call(event)
        if kind is EventKind.START:
            return [
                self._event("response.created", response=self._object("in_progress")),
                self._event("response.in_progress", response=self._object("in_progress")),
            ]
        if kind.is_terminal:
            return self._end(event.final)
        return []

    def _text_delta(self, text: str) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        item = self._text
        if item is None:
            item = self._text = self._open("message", f"msg_{self._base}_{len(self._items)}")
            out.append(self._item_added(item))
            out.append(
                self._event(
                    "response.content_part.added",
                    item_id=item.id,
                    output_index=item.output_index,
                    content_index=0,
                    part=objects.output_text(""),
                )
            )
        item.pieces.append(text)
        out.append(
            self._event(
                "response.output_text.delta",
                item_id=item.id,
                output_index=item.output_index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return out

    def _tool_call(self, event: LogEvent) -> list[StreamEvent]:
        head = event.call
        if head is not None:
            out = self._close_text()
            item = self._open("function_call", f"fc_{self._base}_{len(self._items)}")
            item.call_id = head.id or f"call_{self._base}_{event.index}"
            item.name = head.name
            self._calls[event.index] = item
            out.append(self._item_added(item))
            return out
        item = self._calls[event.index]
        item.pieces.append(event.text)
        return [
            self._event(
                "response.function_call_arguments.delta",
                item_id=item.id,
                output_index=item.output_index,
                delta=event.text,
            )
        ]

    def _open(self, kind: str, item_id: str) -> _Item:
        item = _Item(len(self._items), item_id)
        self._items.append(item)
        self._kinds.append(kind)
        return item

    def _item_added(self, item: _Item) -> StreamEvent:
        return self._event(
            "response.output_item.added",
            output_index=item.output_index,
            item=self._item_object(item.output_index, "in_progress"),
        )

    def _item_done(self, item: _Item, status: str) -> StreamEvent:
        item.done = True
        return self._event(
            "response.output_item.done",
            output_index=item.output_index,
            item=self._item_object(item.output_index, status),
        )

    def _close_text(self, status: str = "completed") -> list[StreamEvent]:
        item = self._text
        if item is None:
            return []
        self._text = None
        text = item.text
        where = {"item_id": item.id, "output_index": item.output_index, "content_index": 0}
        return [
            self._event("response.output_text.done", **where, text=text, logprobs=[]),
            self._event("response.content_part.done", **where, part=objects.output_text(text)),
            self._item_done(item, status),
        ]

    def _end(self, final: Message) -> list[StreamEvent]:
        status, error, _reason = _outcome(final)
        item_status = "completed" if status == "completed" else "incomplete"
        out = self._close_text(item_status)
        for item in self._calls.values():
            if item.done:
                continue
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item.id,
                    output_index=item.output_index,
                    name=item.name,
                    arguments=item.text,
                )
            )
            out.append(self._item_done(item, item_status))
        self.final = final
        if error is not None:
            out.append(
                self._event("error", code=error["code"], message=error["message"], param=None)
            )
        terminal = {
            "completed": "response.completed",
            "failed": "response.failed",
        }.get(status, "response.incomplete")
        out.append(self._event(terminal, response=self.snapshot()))
        return out


def _outcome(final: Message) -> tuple[str, dict[str, Any] | None, str | None]:
    """The response status of an ended message, its `error`, its incomplete reason."""
    if final.status is Status.COMPLETED:
        reason = _INCOMPLETE.get(final.finish_reason or "")
        return ("incomplete", None, reason) if reason else ("completed", None, None)
    if final.status is Status.CANCELLED:
        return "cancelled", None, None
    error = final.error or {"code": str(final.status), "message": "generation ended"}
    code = _ERROR_CODES.get(error["code"], "server_error")
    message = f"{error['message']} ({error['code']})"
    return "failed", {"code": code, "message": message}, None
