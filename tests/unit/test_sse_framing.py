"""The frame encoder's output reads back through the parser as the same events."""

from __future__ import annotations

import math

import pytest

from chatrelay.sse.framing import data_frame, event_frame, json_text, retry_field
from chatrelay.sse.parser import SSEParser


def _parse(text: str) -> list[tuple[str, str, str | None, int | None]]:
    parser = SSEParser()
    return [(e.event, e.data, e.id, e.retry) for e in parser.feed(text.encode()) + parser.close()]


def test_event_frame_round_trips_with_newlines_and_non_ascii() -> None:
    payload = {"content": "line one\nline two — é ✓"}
    frame = event_frame("7", "delta", payload)
    assert _parse(frame) == [("delta", json_text(payload), "7", None)]
    assert "\u00e9" in frame  # not escaped to \\u00e9


def test_data_frame_passes_a_string_through() -> None:
    assert data_frame("[DONE]") == "data: [DONE]\n\n"
    assert _parse(data_frame({"a": 1}) + data_frame("[DONE]")) == [
        ("message", '{"a":1}', None, None),
        ("message", "[DONE]", None, None),
    ]


def test_retry_field_sets_the_reconnection_delay() -> None:
    assert retry_field(2000) == "retry: 2000\n"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_go_as_null(value: float) -> None:
    assert json_text({"x": value, "y": [value]}) == '{"x":null,"y":[null]}'


def test_integers_beyond_64_bits_still_encode() -> None:
    assert json_text({"n": 2**70}) == '{"n":1180591620717411303424}'


def test_same_bytes_as_the_standard_library_for_ordinary_payloads() -> None:
    import json

    payload = {"a": 'é\n"', "b": [1, 2.5, None, True], "c": {"d": 1e16, "e": 0.1}}
    expected = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    assert json_text(payload) == expected
