"""Strict JSON in from clients, lenient and fast JSON in from upstreams, servable JSON out."""

from __future__ import annotations

import pytest

from chatrelay.json_values import (
    InvalidJSON,
    dumps_compact,
    dumps_fast,
    loads_lenient,
    loads_strict,
    loads_upstream,
)


@pytest.mark.parametrize(
    "text", ['{"x": NaN}', '{"x": Infinity}', "[-Infinity]", '{"x": 1e999}', '{"a": 1, "a": 2}']
)
def test_strict_refuses_what_is_not_json_or_is_ambiguous(text: str) -> None:
    with pytest.raises(InvalidJSON):
        loads_strict(text)


def test_strict_keeps_ordinary_values_and_big_integers() -> None:
    assert loads_strict('{"a": [1.5, -0.0, 12345678901234567890123]}') == {
        "a": [1.5, -0.0, 12345678901234567890123]
    }


@pytest.mark.parametrize("loads", [loads_lenient, loads_upstream])
def test_lenient_reads_non_finite_numbers_as_null(loads: object) -> None:
    assert loads('{"a": NaN, "b": [Infinity, -1e400, 2]}') == {  # type: ignore[operator]
        "a": None,
        "b": [None, None, 2],
    }


def test_upstream_json_with_a_lone_surrogate_becomes_encodable_text() -> None:
    value = loads_upstream('{"content": "a\\ud800b", "ok": "\\ud83d\\ude00"}')
    assert value == {"content": "a\ufffdb", "ok": "😀"}
    dumps_fast(value).encode()  # would raise UnicodeEncodeError with the surrogate


def test_upstream_json_that_is_not_json_still_raises_value_error() -> None:
    with pytest.raises(ValueError):
        loads_upstream("{not json")


def test_storage_and_wire_encodings_never_write_non_finite_tokens() -> None:
    value = {"x": float("nan"), "y": [float("inf")], "z": 1}
    assert dumps_compact(value) == '{"x":null,"y":[null],"z":1}'
    assert dumps_fast(value) == '{"x":null,"y":[null],"z":1}'
