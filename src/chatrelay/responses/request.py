"""A `POST /v1/responses` body, checked and translated to a chat completion request.

chatrelay serves the text and function-tool subset of OpenAI's Responses API over any
chat-completions upstream, so every field is either understood (and mapped onto the chat
request), or refused with a 400 naming it: a parameter silently dropped would give an
answer the caller did not ask for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatrelay.completions.request import InvalidRequest

_MODEL_CHARS = 200
_INPUT_ROLES = frozenset({"user", "system", "developer", "assistant"})
_TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
_TOOL_CHOICES = frozenset({"auto", "none", "required"})

# Fields OpenAI knows that chatrelay cannot honour over a chat-completions upstream.
UNSUPPORTED_FIELDS = frozenset(
    {
        "reasoning",
        "include",
        "prompt",
        "conversation",
        "max_tool_calls",
        "top_logprobs",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "context_management",
    }
)
SUPPORTED_FIELDS = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "temperature",
        "top_p",
        "max_output_tokens",
        "metadata",
        "previous_response_id",
        "store",
        "stream",
        "stream_options",
        "background",
        "parallel_tool_calls",
        "user",
        "safety_identifier",
        "truncation",
        "text",
    }
)


def _unsupported(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")


@dataclass(frozen=True)
class ResponsesRequest:
    """A validated request: its input as chat messages, and the settings it echoes back."""

    model: str | None
    input_messages: list[dict[str, Any]]
    instructions: str | None
    tools: list[dict[str, Any]]  # Responses shape, as echoed in the response object
    tool_choice: Any
    temperature: float | None
    top_p: float | None
    max_output_tokens: int | None
    metadata: dict[str, str]
    previous_response_id: str | None
    store: bool
    stream: bool
    background: bool
    parallel_tool_calls: bool
    user: str | None

    def settings(self) -> dict[str, Any]:
        """What the response object reports about the request (kept with the message)."""
        return {
            "instructions": self.instructions,
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_output_tokens": self.max_output_tokens,
            "metadata": self.metadata,
            "previous_response_id": self.previous_response_id,
            "store": self.store,
            "background": self.background,
            "parallel_tool_calls": self.parallel_tool_calls,
            "user": self.user,
        }

    def upstream_fields(self) -> dict[str, Any]:
        """The chat completion fields these settings map to (messages and model aside)."""
        fields: dict[str, Any] = {}
        if self.tools:
            fields["tools"] = [_chat_tool(tool) for tool in self.tools]
            fields["tool_choice"] = _chat_tool_choice(self.tool_choice)
            if not self.parallel_tool_calls:
                fields["parallel_tool_calls"] = False
        if self.temperature is not None:
            fields["temperature"] = self.temperature
        if self.top_p is not None:
            fields["top_p"] = self.top_p
        if self.max_output_tokens is not None:
            fields["max_tokens"] = self.max_output_tokens
        if self.user is not None:
            fields["user"] = self.user
        return fields


def _chat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict):
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def parse_responses_request(body: dict[str, Any]) -> ResponsesRequest:
    """Check every field; a field chatrelay does not serve is a 400 naming it."""
    refused = sorted(k for k in body if k in UNSUPPORTED_FIELDS and body[k] is not None)
    if refused:
        names = ", ".join(f"'{k}'" for k in refused)
        raise _unsupported(
            f"chatrelay does not support {names} on /v1/responses (text and function tools only)",
            refused[0],
        )
    unknown = sorted(k for k in body if k not in SUPPORTED_FIELDS | UNSUPPORTED_FIELDS)
    if unknown:
        raise InvalidRequest(
            f"Unknown parameter: '{unknown[0]}'.", param=unknown[0], code="unknown_parameter"
        )
    _check_text_and_truncation(body)

    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise InvalidRequest("'model' must be a non-empty string", param="model")
    if isinstance(model, str) and len(model) > _MODEL_CHARS:
        raise InvalidRequest(f"'model' is longer than {_MODEL_CHARS} characters", param="model")

    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("'instructions' must be a string", param="instructions")

    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise InvalidRequest(
            "'previous_response_id' must be a response id", param="previous_response_id"
        )

    if "input" not in body or body["input"] is None:
        raise InvalidRequest(
            "Missing required parameter: 'input'.", param="input", code="missing_field"
        )
    input_messages = _input_messages(body["input"])

    tools = _tools(body.get("tools"))
    tool_choice = _tool_choice(body.get("tool_choice"), tools)
    store = _flag(body, "store", default=True)
    background = _flag(body, "background", default=False)
    if background and not store:
        raise InvalidRequest(
            "background responses must be stored: 'store' cannot be false", param="store"
        )
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise InvalidRequest("'stream_options' must be an object", param="stream_options")
    user = body.get("user", body.get("safety_identifier"))
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string", param="user")
    return ResponsesRequest(
        model=model,
        input_messages=input_messages,
        instructions=instructions,
        tools=tools,
        tool_choice=tool_choice,
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        max_output_tokens=_max_output_tokens(body.get("max_output_tokens")),
        metadata=_metadata(body.get("metadata")),
        previous_response_id=previous,
        store=store,
        stream=_flag(body, "stream", default=False),
        background=background,
        parallel_tool_calls=_flag(body, "parallel_tool_calls", default=True),
        user=user,
    )


def _check_text_and_truncation(body: dict[str, Any]) -> None:
    truncation = body.get("truncation")
    if truncation not in (None, "disabled"):
        raise _unsupported("chatrelay supports only 'truncation': 'disabled'", "truncation")
    text = body.get("text")
    if text is None:
        return
    if not isinstance(text, dict):
        raise InvalidRequest("'text' must be an object", param="text")
    extra = sorted(k for k in text if k != "format")
    if extra:
        raise _unsupported(f"chatrelay does not support 'text.{extra[0]}'", f"text.{extra[0]}")
    form = text.get("format")
    if form is not None and (not isinstance(form, dict) or form.get("type") != "text"):
        raise _unsupported(
            "chatrelay supports only plain text output ('text.format.type': 'text')",
            "text.format",
        )


def _flag(body: dict[str, Any], name: str, *, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"'{name}' must be true or false", param=name)
    return value


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be a number from {low} to {high}", param=name)
    return float(value)


def _max_output_tokens(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(
            "'max_output_tokens' must be a positive integer", param="max_output_tokens"
        )
    return value


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 16:
        raise InvalidRequest("'metadata' must be an object of at most 16 pairs", param="metadata")
    for key, item in value.items():
        if len(key) > 64 or not isinstance(item, str) or len(item) > 512:
            raise InvalidRequest(
                "'metadata' keys are strings of at most 64 characters, values of at most 512",
                param=f"metadata.{key[:64]}",
            )
    return dict(value)


def _tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    tools = []
    for position, tool in enumerate(value):
        where = f"tools[{position}]"
        if not isinstance(tool, dict):
            raise InvalidRequest(f"'{where}' must be an object", param=where)
        kind = tool.get("type")
        if kind != "function":
            raise _unsupported(
                f"chatrelay supports only function tools; '{where}.type' is {kind!r}",
                f"{where}.type",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(
                f"'{where}.name' is required", param=f"{where}.name", code="missing_field"
            )
        parameters = tool.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequest(
                f"'{where}.parameters' must be an object", param=f"{where}.parameters"
            )
        tools.append(
            {
                "type": "function",
                "name": name,
                "description": tool.get("description"),
                "parameters": parameters,
                "strict": tool.get("strict", True),
            }
        )
    return tools


def _tool_choice(value: Any, tools: list[dict[str, Any]]) -> Any:
    if value is None:
        return "auto"
    if isinstance(value, str) and value in _TOOL_CHOICES:
        return value
    if isinstance(value, dict) and value.get("type") == "function":
        name = value.get("name")
        if not any(tool["name"] == name for tool in tools):
            raise InvalidRequest(
                f"'tool_choice' names {name!r}, which is not in 'tools'", param="tool_choice"
            )
        return {"type": "function", "name": name}
    raise _unsupported(
        "chatrelay supports 'tool_choice' auto, none, required or a function",
        "tool_choice",
    )


def _input_messages(value: Any) -> list[dict[str, Any]]:
    """`input` as chat messages: a string is one user message; items map one to one,
    consecutive `function_call` items joining into one assistant message."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise InvalidRequest(
            "'input' must be a string or a non-empty array of items", param="input"
        )
    messages: list[dict[str, Any]] = []
    for position, item in enumerate(value):
        where = f"input[{position}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"'{where}' must be an object", param=where)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message_item(item, where))
        elif kind == "function_call":
            _function_call_item(item, where, messages)
        elif kind == "function_call_output":
            messages.append(_function_output_item(item, where))
        else:
            raise _unsupported(
                f"chatrelay does not support input items of type {kind!r}", f"{where}.type"
            )
    return messages


def _message_item(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if not isinstance(role, str) or role not in _INPUT_ROLES:
        raise InvalidRequest(
            f"'{where}.role' must be one of {', '.join(sorted(_INPUT_ROLES))}",
            param=f"{where}.role",
        )
    return {"role": role, "content": _text_content(item.get("content"), f"{where}.content")}


def _text_content(content: Any, where: str) -> str:
    """A message's text: a string, or text parts joined by newlines (others are refused)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}' must be a string or an array of parts", param=where)
    texts = []
    for position, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise _unsupported(
                f"chatrelay supports only text content; '{where}[{position}]' is {kind!r}",
                f"{where}[{position}]",
            )
        texts.append(part["text"])
    return "\n".join(texts)


def _function_call_item(item: dict[str, Any], where: str, messages: list[dict[str, Any]]) -> None:
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
    for field, value in (("call_id", call_id), ("name", name), ("arguments", arguments)):
        if not isinstance(value, str):
            raise InvalidRequest(
                f"'{where}.{field}' is required", param=f"{where}.{field}", code="missing_field"
            )
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant" and "tool_calls" in last:
        last["tool_calls"].append(call)
    elif last is not None and last["role"] == "assistant":
        last["tool_calls"] = [call]
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _function_output_item(item: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = item.get("call_id")
    if not isinstance(call_id, str):
        raise InvalidRequest(
            f"'{where}.call_id' is required", param=f"{where}.call_id", code="missing_field"
        )
    output = _text_content(item.get("output"), f"{where}.output")
    return {"role": "tool", "tool_call_id": call_id, "content": output}
