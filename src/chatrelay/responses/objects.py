"""OpenAI's Responses API objects (the response, its output items, usage) as plain dicts.

Every id is derived from the assistant message that records the response, so the same
message gives the same objects whoever renders them, live or from the database:
`resp_<ulid>` is message `msg_<ulid>`, its output items are numbered by position.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from chatrelay.ids import looks_like_id
from chatrelay.models import Message

RESPONSE_PREFIX = "resp_"
SETTINGS_KEY = "response"  # where the assistant message's params keep the request's settings


def response_id(message_id: str) -> str:
    return RESPONSE_PREFIX + message_id.removeprefix("msg_")


def message_id(response_id: str) -> str | None:
    """The message recording `response_id`, or None if it is not a response id."""
    candidate = "msg_" + response_id.removeprefix(RESPONSE_PREFIX)
    if not response_id.startswith(RESPONSE_PREFIX) or not looks_like_id(candidate, "msg"):
        return None
    return candidate


def is_response(message: Message) -> bool:
    """A message recorded by `/v1/responses` (not a native turn or a chat completion)."""
    return message.role == "assistant" and isinstance(message.params.get(SETTINGS_KEY), dict)


def epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [output_text(text)] if status != "in_progress" else []
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def usage(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chat usage (`prompt_tokens`…) in the Responses names (`input_tokens`…)."""
    if not chat_usage:
        return None

    def count(source: Any, key: str) -> int:
        value = source.get(key) if isinstance(source, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    prompt = count(chat_usage, "prompt_tokens")
    completion = count(chat_usage, "completion_tokens")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": count(chat_usage.get("prompt_tokens_details"), "cached_tokens")
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": count(
                chat_usage.get("completion_tokens_details"), "reasoning_tokens"
            )
        },
        "total_tokens": count(chat_usage, "total_tokens") or prompt + completion,
    }


def response_object(
    message: Message,
    *,
    status: str,
    output: list[dict[str, Any]],
    error: dict[str, Any] | None = None,
    incomplete_reason: str | None = None,
    final: Message | None = None,
) -> dict[str, Any]:
    """The `response` object for the message, as it stands (`final` once it has ended)."""
    settings: dict[str, Any] = message.params.get(SETTINGS_KEY) or {}
    completed_at = epoch(final.completed_at) if final and final.completed_at else None
    return {
        "id": response_id(message.id),
        "object": "response",
        "created_at": epoch(message.created_at),
        "status": status,
        "background": settings.get("background", False),
        "completed_at": completed_at if status == "completed" else None,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": settings.get("instructions"),
        "max_output_tokens": settings.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": message.model or "",
        "output": output,
        "parallel_tool_calls": settings.get("parallel_tool_calls", True),
        "previous_response_id": settings.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": settings.get("store", True),
        "temperature": _or(settings.get("temperature"), 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": settings.get("tool_choice", "auto"),
        "tools": settings.get("tools") or [],
        "top_p": _or(settings.get("top_p"), 1.0),
        "truncation": "disabled",
        "usage": usage(final.usage) if final is not None else None,
        "user": settings.get("user"),
        "metadata": settings.get("metadata") or {},
    }


def _or(value: Any, default: float) -> Any:
    return default if value is None else value
