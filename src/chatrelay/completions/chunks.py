"""OpenAI's `chat.completion.chunk` and `chat.completion` objects, as plain dicts.

The one place those shapes are built, for chatrelay's renderer and for any server that
speaks OpenAI's chunk grammar (the mock upstream): the caller chooses `id`, `created` and
`model`. Pure functions, stdlib only, importing nothing else from chatrelay. Keys come in
OpenAI's order, so the JSON of a chunk is the same bytes whoever builds it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict, cast


class Omitted(enum.Enum):
    """A field left out of the object altogether (as opposed to sent as `null`)."""

    OMITTED = "omitted"


OMITTED = Omitted.OMITTED


class ChunkChoice(TypedDict):
    index: int
    delta: dict[str, Any]
    logprobs: None
    finish_reason: str | None


class ChatCompletionChunk(TypedDict):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: NotRequired[str | None]
    choices: list[ChunkChoice]
    # OpenAI sends `usage` on every chunk (null until the last) once a client asks for it.
    usage: NotRequired[dict[str, Any] | None]


class CompletionChoice(TypedDict):
    index: int
    message: dict[str, Any]
    logprobs: None
    finish_reason: str


class ChatCompletion(TypedDict):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: NotRequired[str | None]
    choices: list[CompletionChoice]
    usage: dict[str, Any] | None


def _head(
    kind: str, id: str, created: int, model: str, system_fingerprint: str | Omitted | None
) -> dict[str, Any]:
    head: dict[str, Any] = {"id": id, "object": kind, "created": created, "model": model}
    if system_fingerprint is not OMITTED:
        head["system_fingerprint"] = system_fingerprint
    return head


def _usage(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if usage is None else dict(usage)


def chunk(
    id: str,
    created: int,
    model: str,
    delta: Mapping[str, Any],
    finish_reason: str | None = None,
    *,
    usage: Mapping[str, Any] | None = None,
    include_usage_field: bool = False,
    system_fingerprint: str | Omitted | None = OMITTED,
) -> ChatCompletionChunk:
    """One chunk of choice 0. `usage` is sent when given, or as `null` when
    `include_usage_field` (a client that asked for usage sees the key on every chunk)."""
    built = _head("chat.completion.chunk", id, created, model, system_fingerprint)
    built["choices"] = [
        {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish_reason}
    ]
    if usage is not None or include_usage_field:
        built["usage"] = _usage(usage)
    return cast(ChatCompletionChunk, built)


def usage_chunk(
    id: str,
    created: int,
    model: str,
    usage: Mapping[str, Any] | None,
    *,
    system_fingerprint: str | Omitted | None = OMITTED,
) -> ChatCompletionChunk:
    """The last chunk of a stream that asked for usage: no choices, the usage."""
    built = _head("chat.completion.chunk", id, created, model, system_fingerprint)
    built["choices"] = []
    built["usage"] = _usage(usage)
    return cast(ChatCompletionChunk, built)


def completion(
    id: str,
    created: int,
    model: str,
    message: Mapping[str, Any],
    finish_reason: str,
    *,
    usage: Mapping[str, Any] | None,
    system_fingerprint: str | Omitted | None = OMITTED,
) -> ChatCompletion:
    """A whole non-streaming answer: choice 0 holding `message`, and the usage."""
    built = _head("chat.completion", id, created, model, system_fingerprint)
    built["choices"] = [
        {"index": 0, "message": dict(message), "logprobs": None, "finish_reason": finish_reason}
    ]
    built["usage"] = _usage(usage)
    return cast(ChatCompletion, built)
