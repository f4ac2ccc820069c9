"""A `/v1/chat/completions` body, checked: what the relay relies on, the rest passed through.

A body OpenAI would refuse is an `InvalidRequest` (400, with the offending `param`);
anything the relay does not read itself is the upstream's to judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatrelay.errors import BadRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_MODEL_CHARS = 200


class InvalidRequest(BadRequest):
    """A request body OpenAI would refuse with 400; `param` names the offending field."""

    def __init__(self, message: str, *, param: str | None, code: str = "invalid_field") -> None:
        super().__init__(message, code=code)
        self.param = param


@dataclass(frozen=True)
class CompletionRequest:
    """A validated `/v1/chat/completions` body; `passthrough` is every other field, untouched."""

    messages: list[dict[str, Any]]
    model: str | None
    stream: bool
    include_usage: bool
    passthrough: dict[str, Any]

    def upstream_body(self, model: str) -> dict[str, Any]:
        """What goes upstream: the client's body as sent; `stream` and usage are the relay's.

        The upstream client asks for usage by default (the record needs it); with
        CHATRELAY_INCLUDE_USAGE=false it does not, but a client that asks for usage
        itself still gets it asked for.
        """
        body = {**self.passthrough, "model": model, "messages": self.messages}
        if self.include_usage:
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            body["stream_options"] = options
        return body


def parse_completion_request(body: dict[str, Any]) -> CompletionRequest:
    """Check what the relay relies on; anything else is the upstream's to judge."""
    if "messages" not in body:
        raise InvalidRequest(
            "Missing required parameter: 'messages'.", param="messages", code="missing_field"
        )
    raw_messages = body["messages"]
    if not isinstance(raw_messages, list) or not raw_messages:
        raise InvalidRequest("'messages' must be a non-empty array of messages", param="messages")
    messages = [_checked_message(m, i) for i, m in enumerate(raw_messages)]

    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise InvalidRequest("'model' must be a non-empty string", param="model")
    if isinstance(model, str) and len(model) > _MODEL_CHARS:
        raise InvalidRequest(f"'model' is longer than {_MODEL_CHARS} characters", param="model")

    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be true or false", param="stream")

    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object", param="stream_options")
    include_usage = (options or {}).get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise InvalidRequest(
            "'stream_options.include_usage' must be true or false",
            param="stream_options.include_usage",
        )

    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise InvalidRequest(
            "chatrelay relays a single choice: 'n' must be 1", param="n", code="unsupported_value"
        )

    passthrough = {
        k: v for k, v in body.items() if k not in ("messages", "model", "stream", "stream_options")
    }
    other_options = {k: v for k, v in (options or {}).items() if k != "include_usage"}
    if other_options:
        passthrough["stream_options"] = other_options
    return CompletionRequest(
        messages=messages,
        model=model,
        stream=bool(stream),
        include_usage=bool(stream) and include_usage is True,
        passthrough=passthrough,
    )


def _checked_message(message: Any, position: int) -> dict[str, Any]:
    where = f"messages[{position}]"
    if not isinstance(message, dict):
        raise InvalidRequest(f"'{where}' must be an object", param=where)
    role = message.get("role")
    # An object or array role is unhashable: checked as a string first, so it is a 400.
    if not isinstance(role, str) or role not in ROLES:
        raise InvalidRequest(
            f"'{where}.role' must be one of {', '.join(sorted(ROLES))}", param=f"{where}.role"
        )
    content = message.get("content")
    if content is None and role != "assistant":
        raise InvalidRequest(
            f"'{where}.content' is required for a {role} message",
            param=f"{where}.content",
            code="missing_field",
        )
    if content is not None and not isinstance(content, (str, list)):
        raise InvalidRequest(
            f"'{where}.content' must be a string or an array of content parts",
            param=f"{where}.content",
        )
    if isinstance(content, list) and not all(
        isinstance(part, dict) and isinstance(part.get("type"), str) for part in content
    ):
        raise InvalidRequest(
            f"'{where}.content' parts must be objects with a 'type'", param=f"{where}.content"
        )
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise InvalidRequest(
            f"'{where}.tool_call_id' is required for a tool message",
            param=f"{where}.tool_call_id",
            code="missing_field",
        )
    tool_calls = message.get("tool_calls")
    if tool_calls is not None and not (
        isinstance(tool_calls, list) and all(isinstance(call, dict) for call in tool_calls)
    ):
        raise InvalidRequest(
            f"'{where}.tool_calls' must be an array of objects", param=f"{where}.tool_calls"
        )
    return message


def content_text(content: Any) -> str:
    """The text of an OpenAI `content`: the string, or the text parts joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        ]
        return "\n".join(texts)
    return ""
