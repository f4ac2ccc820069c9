"""The API's calls as data: what to send and how to read the answer, for both clients.

`Client` and `AsyncClient` differ only in how they wait for the network; each call is
built and each answer parsed here, once, so the two can never disagree about the API.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from chatrelay.client.errors import (
    APIConnectionError,
    ChatRelayAPIError,
    ProtocolError,
    RateLimitedError,
    UnavailableError,
    error_from_response,
)

__all__ = ["Call", "ConversationPage", "PostedMessage", "retry_delay"]

T = TypeVar("T")
JSONObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class PostedMessage:
    """The `202` answer to a post: both messages, and the browser's `stream_url`.

    The `stream_url` carries a token for `EventSource`, which cannot send headers; this
    client follows with its `Authorization` header instead (`follow(message_id)`).
    """

    user_message: JSONObject | None
    assistant_message: JSONObject
    stream_url: str

    @property
    def message_id(self) -> str:
        """The assistant message's id, the one to `follow` and `cancel`."""
        return str(self.assistant_message["id"])


@dataclass(frozen=True, slots=True)
class ConversationPage:
    """One page of conversations, newest first; pass `next_cursor` for the next one."""

    data: list[JSONObject]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request and the parser of its success body.

    `idempotent` calls may be retried after a `503` (the service may have done part of a
    write it then failed); any call may be retried after a `429`, which does nothing.
    """

    method: str
    path: str
    parse: Callable[[Any], T]
    json: JSONObject | None = None
    params: dict[str, str] = field(default_factory=dict)
    idempotent: bool = False

    def result(self, status: int, headers: Mapping[str, str], body: bytes) -> T:
        """The parsed answer, or the typed error of a non-2xx status."""
        if not 200 <= status < 300:
            raise error_from_response(status, headers, body)
        if not body:
            return self.parse(None)
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise ProtocolError(f"{self.method} {self.path}: the answer is not JSON") from exc
        return self.parse(payload)

    def unreachable(self, base_url: str, cause: Exception) -> APIConnectionError:
        """No HTTP answer at all, said in words a terminal user can act on."""
        why = str(cause) or type(cause).__name__
        return APIConnectionError(f"cannot reach {base_url} ({self.method} {self.path}): {why}")


def retry_delay(call: Call[Any], error: ChatRelayAPIError, attempt: int, max_wait: float) -> float:
    """How long to wait before retrying `call` after `error`; raises it when not to retry.

    `attempt` counts the retries already made; the caller stops at its `max_retries`.
    Without a `Retry-After`, waits 1, 2, 4… seconds; never longer than `max_wait`.
    """
    retryable = isinstance(error, RateLimitedError) or (
        isinstance(error, UnavailableError) and call.idempotent
    )
    if not retryable:
        raise error
    wait = error.retry_after if error.retry_after is not None else float(2**attempt)
    if wait > max_wait:
        raise error
    return wait


def _segment(value: str) -> str:
    return quote(value, safe="")


def _object(payload: Any) -> JSONObject:
    if not isinstance(payload, dict):
        raise ProtocolError("expected a JSON object")
    return payload


def _nothing(_: Any) -> None:
    return None


def _posted(payload: Any) -> PostedMessage:
    body = _object(payload)
    user = body.get("user_message")
    return PostedMessage(
        user_message=user if isinstance(user, dict) else None,
        assistant_message=_object(body.get("assistant_message")),
        stream_url=str(body.get("stream_url", "")),
    )


def _page(payload: Any) -> ConversationPage:
    body = _object(payload)
    data = body.get("data")
    if not isinstance(data, list):
        raise ProtocolError("expected a list of conversations")
    cursor = body.get("next_cursor")
    return ConversationPage(
        data=[_object(item) for item in data], next_cursor=None if cursor is None else str(cursor)
    )


def _given(**fields: Any) -> JSONObject:
    """The body fields the caller set (None means "not sent", so the service's default)."""
    return {name: value for name, value in fields.items() if value is not None}


def create_conversation(
    title: str | None = None,
    system_prompt: str | None = None,
    model: str | None = None,
    metadata: JSONObject | None = None,
) -> Call[JSONObject]:
    body = _given(title=title, system_prompt=system_prompt, model=model, metadata=metadata)
    return Call("POST", "/v1/conversations", _object, json=body)


def list_conversations(
    limit: int | None = None, cursor: str | None = None
) -> Call[ConversationPage]:
    params = {k: str(v) for k, v in _given(limit=limit, cursor=cursor).items()}
    return Call("GET", "/v1/conversations", _page, params=params, idempotent=True)


def get_conversation(conversation_id: str) -> Call[JSONObject]:
    path = f"/v1/conversations/{_segment(conversation_id)}"
    return Call("GET", path, _object, idempotent=True)


def delete_conversation(conversation_id: str) -> Call[None]:
    path = f"/v1/conversations/{_segment(conversation_id)}"
    return Call("DELETE", path, _nothing, idempotent=True)


def post_message(
    conversation_id: str,
    content: str,
    model: str | None = None,
    params: JSONObject | None = None,
    cancel_on_disconnect: bool | None = None,
) -> Call[PostedMessage]:
    body = _given(
        content=content, model=model, params=params, cancel_on_disconnect=cancel_on_disconnect
    )
    path = f"/v1/conversations/{_segment(conversation_id)}/messages"
    return Call("POST", path, _posted, json=body)


def get_message(message_id: str) -> Call[JSONObject]:
    return Call("GET", f"/v1/messages/{_segment(message_id)}", _object, idempotent=True)


def cancel(message_id: str) -> Call[JSONObject]:
    return Call("POST", f"/v1/messages/{_segment(message_id)}/cancel", _object)


def events_path(message_id: str) -> str:
    return f"/v1/messages/{_segment(message_id)}/events"
