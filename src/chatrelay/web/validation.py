"""Request bodies: size-capped reading, JSON decoding and field checks with clear errors.

Unknown fields are rejected (422 `unknown_field`): a misspelt `cancel_on_disconect`
silently ignored would be worse than an error.

A body must be declared `Content-Type: application/json` (parameters such as `charset`
allowed), else 415 `unsupported_media_type`. A web page on another origin can post
`text/plain`, form-encoded or multipart bodies without a CORS preflight; refusing them keeps
such a page from creating conversations or starting generations. `application/*+json` is
not accepted either: no client of this API sends it, and one accepted type keeps the rule
obvious.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import orjson
from starlette.requests import Request

from chatrelay.errors import (
    BadRequest,
    FieldTooLarge,
    LimitKind,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)
from chatrelay.json_values import dumps_compact, loads_strict
from chatrelay.models import scrub_nul
from chatrelay.service import TurnOptions


def is_json_media_type(content_type: str | None) -> bool:
    """`application/json`, in any case, with or without parameters."""
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def _check_media_type(request: Request) -> None:
    content_type = request.headers.get("content-type")
    if not is_json_media_type(content_type):
        got = "no Content-Type" if content_type is None else f"Content-Type {content_type[:80]!r}"
        raise UnsupportedMediaType(
            f"request body must be sent as Content-Type: application/json, not with {got}"
        )


async def read_json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}`, with any Content-Type or none."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise BadRequest("invalid Content-Length header") from None
        if length > max_bytes:
            raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
        if length > 0:
            _check_media_type(request)  # before reading a body that would be refused
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
    if body:
        _check_media_type(request)  # a chunked body declares no length
    if not body.strip():
        return {}
    try:
        value = loads_strict(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise BadRequest("request body nests too deeply", code="invalid_json") from None
    if not isinstance(value, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    # A \ud800-style escape decodes to a lone surrogate, which no UTF-8 store accepts.
    try:
        orjson.dumps(value)  # fast; refuses lone surrogates (and integers beyond 64 bits)
    except TypeError:
        try:
            json.dumps(value, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise BadRequest(
                "request body contains an unpaired UTF-16 surrogate escape", code="invalid_json"
            ) from None
    return value


def reject_unknown(body: dict[str, Any], allowed: Iterable[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ValidationFailed(
            f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            code="unknown_field",
        )


def optional_str(
    body: dict[str, Any], name: str, *, max_len: int, limit: LimitKind | None = None
) -> str | None:
    """A string field, if given; longer than `max_len` is 422 `too_long` (a `FieldTooLarge`
    when `limit` names the setting that caps it)."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationFailed(f"'{name}' must be a string", code="invalid_field")
    if len(value) > max_len:
        message = f"'{name}' is longer than {max_len} characters"
        if limit is not None:
            raise FieldTooLarge(message, code="too_long", limit=limit)
        raise ValidationFailed(message, code="too_long")
    return scrub_nul(value)  # as it will be stored, so every answer shows the same text


def optional_model(body: dict[str, Any]) -> str | None:
    """A model name, if given: a string that is not blank (blank would reach the upstream)."""
    model = optional_str(body, "model", max_len=200)
    if model is not None and not model.strip():
        raise ValidationFailed(
            "'model' must not be empty; leave it out for the default", code="invalid_field"
        )
    return model


def required_text(
    body: dict[str, Any], name: str, *, max_len: int, limit: LimitKind | None = None
) -> str:
    if name not in body:
        raise ValidationFailed(f"'{name}' is required", code="missing_field")
    value = optional_str(body, name, max_len=max_len, limit=limit)
    if value is None or not value.strip():
        raise ValidationFailed(f"'{name}' must not be empty", code="empty_content")
    return value


def optional_bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValidationFailed(f"'{name}' must be true or false", code="invalid_field")
    return value


def optional_object(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationFailed(f"'{name}' must be a JSON object", code="invalid_field")
    return value


def json_depth(value: Any) -> int:
    """How deeply objects and arrays nest: `1` for a scalar, `{}` or `{"a": 1}`, `2` for
    `{"a": {"b": 1}}` (iterative: a deep value costs no recursion)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return deepest


def check_json_size(
    value: Any, name: str, *, max_bytes: int, limit: LimitKind, max_depth: int = 0
) -> None:
    """422 `too_large` when `value` stored (compact UTF-8 JSON) exceeds `max_bytes`, and
    `too_deep` when it nests deeper than `max_depth`; 0 turns either check off."""
    if max_depth and json_depth(value) > max_depth:
        raise FieldTooLarge(
            f"'{name}' nests deeper than {max_depth} levels", code="too_deep", limit=limit
        )
    if max_bytes and len(dumps_compact(value).encode()) > max_bytes:
        raise FieldTooLarge(
            f"'{name}' is larger than {max_bytes} bytes as JSON", code="too_large", limit=limit
        )


def metadata_object(body: dict[str, Any], *, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """A conversation's `metadata`: any JSON object within the size and depth caps."""
    metadata = optional_object(body, "metadata")
    check_json_size(
        metadata, "metadata", max_bytes=max_bytes, max_depth=max_depth, limit=LimitKind.METADATA
    )
    return metadata


# Upstream request fields a client may not set through `params`: the service owns them.
RESERVED_PARAMS = frozenset({"model", "messages", "stream", "stream_options", "n"})


def upstream_params(body: dict[str, Any], *, max_bytes: int = 0) -> dict[str, Any]:
    params = optional_object(body, "params")
    check_json_size(params, "params", max_bytes=max_bytes, limit=LimitKind.PARAMS)
    reserved = sorted(RESERVED_PARAMS & set(params))
    if reserved:
        raise ValidationFailed(
            f"'params' may not set {', '.join(reserved)}: the service sets them",
            code="invalid_field",
        )
    return params


def query_int(request: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10:
        # `int()` would also take " 5", "1_0" and other scripts' digits.
        raise BadRequest(f"'{name}' must be a whole number", code="invalid_query")
    value = int(raw)
    if not low <= value <= high:
        raise BadRequest(f"'{name}' must be between {low} and {high}", code="invalid_query")
    return value


def event_cursor(raw: str | None) -> int | None:
    """A client's `Last-Event-ID` as a log position; malformed ones are a 400, not a restart."""
    if raw is None:
        return None
    raw = raw.strip()
    if raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10:  # not "²" or "①"
        raise BadRequest(f"malformed event id {raw[:40]!r}", code="invalid_cursor")
    return int(raw)


TURN_FIELDS = ("model", "params", "cancel_on_disconnect")


def turn_options(body: dict[str, Any], *, max_params_bytes: int = 0) -> TurnOptions:
    """The generation options any turn-starting request may carry (see TURN_FIELDS);
    `params` is capped at `max_params_bytes` as stored (0: only the body limit)."""
    return TurnOptions(
        model=optional_model(body),
        params=upstream_params(body, max_bytes=max_params_bytes) if "params" in body else None,
        cancel_on_disconnect=optional_bool(body, "cancel_on_disconnect"),
    )
