"""Bounded reads: a list page (or a conversation read) stops once its encoded size would pass
`CHATRELAY_MAX_PAGE_BYTES`, so no single response can grow with what clients stored.

Items are encoded one by one, exactly as `JSONResponse` would encode them, and the envelope
is assembled from those bytes: nothing is encoded twice. The first item always goes, so a page
makes progress whatever the sizes; the caller then sets `next_cursor` from the last item sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from starlette.responses import Response


def encode_json(value: Any) -> bytes:
    """As Starlette's `JSONResponse` renders a value."""
    return json.dumps(
        value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def encode_bounded(items: Iterable[Mapping[str, Any]], max_bytes: int) -> list[bytes]:
    """The items' encodings, in order, while their total stays within `max_bytes` (0: no
    bound); always at least the first."""
    encoded: list[bytes] = []
    total = 0
    for item in items:
        data = encode_json(item)
        total += len(data) + 1
        if encoded and max_bytes and total > max_bytes:
            break
        encoded.append(data)
    return encoded


def json_array(parts: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(parts) + b"]"


def object_response(head: Mapping[str, Any], raw: Mapping[str, bytes]) -> Response:
    """A JSON object: the fields of `head`, then those of `raw`, already encoded."""
    fields = [encode_json(key) + b":" + encode_json(value) for key, value in head.items()]
    fields += [encode_json(key) + b":" + value for key, value in raw.items()]
    return Response(b"{" + b",".join(fields) + b"}", media_type="application/json")


def page_response(parts: Sequence[bytes], next_cursor: str | None) -> Response:
    """`{"data": [...], "next_cursor": "…" | null}`, the shape of every list."""
    return object_response({}, {"data": json_array(parts), "next_cursor": encode_json(next_cursor)})
