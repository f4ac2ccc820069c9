"""JSON as chatrelay accepts, stores and reads it: finite numbers, unique keys, no surprises.

Python's `json` reads `NaN`, `Infinity` and `1e999` (which overflows to infinity) and
writes them back, but they are not JSON: Starlette's responses, httpx's request bodies and
every strict client refuse them. One such value stored in a row made every later read of
it fail, so client input is parsed strictly here, values from elsewhere (an upstream's
chunk) have non-finite numbers neutralised to `null`, and rows written before this rule
still read. On the hot path (every upstream chunk in, every event out) orjson does the
work; the standard library takes over only for what orjson refuses.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

import orjson


class InvalidJSON(ValueError):
    """The text is not strict JSON; the message says where and why."""


def _refuse_constant(name: str) -> NoReturn:
    raise InvalidJSON(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJSON(f"number {text[:40]} is too large")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidJSON(f"duplicate key {key[:40]!r}")
            seen.add(key)
    return value


def loads_strict(data: str | bytes | bytearray) -> Any:
    """Client input: non-finite numbers and duplicate keys are errors, not values.

    Raises `InvalidJSON` (a `ValueError`, as `json.loads` raises for other faults).
    """
    return json.loads(
        data,
        parse_constant=_refuse_constant,
        parse_float=_finite_float,
        object_pairs_hook=_unique_keys,
    )


def _null_constant(_name: str) -> None:
    return None


def _float_or_null(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def loads_lenient(data: str | bytes | bytearray) -> Any:
    """Input we must not refuse (an upstream chunk, a stored row): non-finite numbers
    become `null`, so whatever is built from it can be stored and served."""
    return json.loads(data, parse_constant=_null_constant, parse_float=_float_or_null)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_lone_surrogates(v) for v in value]
    return value


def loads_upstream(data: str | bytes) -> Any:
    """An upstream's JSON (a chunk, a completion), fast. What orjson refuses but Python's
    `json` reads is read leniently: non-finite numbers become `null` and a lone UTF-16
    surrogate escape becomes U+FFFD, so the text can be encoded, stored and served."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _without_lone_surrogates(loads_lenient(data))


def without_non_finite(value: Any) -> Any:
    """`value` with every NaN or infinity (at any depth) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: without_non_finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_non_finite(v) for v in value]
    return value


def dumps_compact(value: Any) -> str:
    """Compact JSON for storage; a non-finite number anywhere becomes `null` rather than
    a token (`NaN`) that later reads and responses cannot serve."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(
            without_non_finite(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )


def dumps_fast(value: Any) -> str:
    """Compact JSON for the wire (non-ASCII as UTF-8, non-finite numbers as `null`), via
    orjson; the standard library only for what orjson cannot encode (integers beyond 64
    bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return dumps_compact(value)
