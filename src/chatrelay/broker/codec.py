"""One `LogEvent` as a Redis Stream entry, and back, byte for byte the same event.

An entry holds one field: its name is the event kind, its value the text piece
(`delta`/`reasoning`, raw UTF-8, no JSON to parse on the hot path), for `tool_call` a
small JSON object (`index`, the argument piece `text`, and `call` when it starts one),
or, for `start`, `done` and `error`, the whole `Message` as compact JSON. The entry id is
`<seq>-0`, so a stream id is the SSE cursor and `XREAD` from `<cursor>-0` gives exactly
what follows it.
Text is encoded with `surrogatepass` so even a lone surrogate comes back as it went in.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.json_values import dumps_fast, loads_lenient
from chatrelay.models import Message, PieceKind, Status, ToolCallHead

_KINDS = {kind.value.encode(): kind for kind in EventKind}
_MESSAGE_FIELDS = tuple(f.name for f in dataclasses.fields(Message))


def entry_id(seq: int) -> str:
    return f"{seq}-0"


def seq_of(entry: bytes | str) -> int:
    """The cursor an entry id (`<seq>-0`) names."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    return int(text.partition("-")[0])


def message_record(message: Message) -> dict[str, Any]:
    """Every field of the message (tenant, pieces and params included), JSON-ready."""
    return {name: getattr(message, name) for name in _MESSAGE_FIELDS}


def message_from_record(record: dict[str, Any]) -> Message:
    values = {name: record[name] for name in _MESSAGE_FIELDS if name in record}
    values["status"] = Status(values["status"])
    values["pieces"] = [(PieceKind(kind), int(length)) for kind, length in values["pieces"]]
    return Message(**values)


def encode_event(event: LogEvent) -> tuple[bytes, bytes]:
    """(field, value) of the entry for `event`."""
    name = event.kind.value.encode()
    if event.kind in (EventKind.DELTA, EventKind.REASONING):
        return name, event.text.encode("utf-8", "surrogatepass")
    if event.kind is EventKind.TOOL_CALL:
        call = event.call
        record: dict[str, Any] = {"index": event.index, "text": event.text}
        if call is not None:
            record["call"] = {"id": call.id, "type": call.type, "name": call.name}
        return name, dumps_fast(record).encode("utf-8", "surrogatepass")
    return name, dumps_fast(message_record(event.final)).encode("utf-8", "surrogatepass")


def decode_entries(entries: Any) -> list[LogEvent]:
    """The events of what `XRANGE` (or one stream of `XREAD`) returned: `(id, fields)` pairs."""
    events = []
    for entry, fields in entries:
        if not isinstance(entry, (bytes, str)) or not isinstance(fields, dict):
            raise ValueError(f"stream entry {entry!r} is not an event")
        events.append(decode_entry(entry, fields))
    return events


def stream_entries(reply: Any) -> Any:
    """The entries of the one stream an `XREAD` asked for (RESP2 list or RESP3 map); none
    when it timed out."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return next(iter(reply.values()))[0]
    return reply[0][1]


def decode_entry(entry: bytes | str, fields: dict[bytes, bytes]) -> LogEvent:
    """The event an entry holds (`ValueError` for anything not written by `encode_event`)."""
    if len(fields) != 1:
        raise ValueError(f"stream entry {entry!r} has {len(fields)} fields, expected 1")
    ((name, value),) = fields.items()
    kind = _KINDS.get(name)
    if kind is None:
        raise ValueError(f"stream entry {entry!r} has unknown kind {name[:32]!r}")
    seq = seq_of(entry)
    if kind in (EventKind.DELTA, EventKind.REASONING):
        return LogEvent(seq, kind, value.decode("utf-8", "surrogatepass"))
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:  # written by the standard library (a huge integer)
        record = loads_lenient(value.decode("utf-8", "surrogatepass"))
    if kind is EventKind.TOOL_CALL:
        return _tool_call_event(entry, seq, record)
    return LogEvent(seq, kind, message=message_from_record(record))


def _tool_call_event(entry: bytes | str, seq: int, record: Any) -> LogEvent:
    if not isinstance(record, dict) or not isinstance(record.get("index"), int):
        raise ValueError(f"stream entry {entry!r} is not a tool_call event")
    head = record.get("call")
    call = None
    if isinstance(head, dict):
        call = ToolCallHead(id=head.get("id"), type=str(head["type"]), name=str(head["name"]))
    return LogEvent(
        seq, EventKind.TOOL_CALL, str(record.get("text", "")), index=record["index"], call=call
    )
