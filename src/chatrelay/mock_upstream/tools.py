"""The mock's tool calling: which function a request with `tools` calls, with what arguments.

So that `make run` can show tool calling without a model: a request with function tools
(and a `tool_choice` that allows them) gets a call to the first function — or the one
`tool_choice` names — with arguments built from its JSON schema, streamed in a few pieces.
When the last message is a tool result, the answer is text quoting it instead, which ends
the tool loop. Everything is deterministic in the request.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

_PIECES = 4  # the arguments stream in this many pieces (fewer when they are short)
_RESULT_QUOTE_CHARS = 120


@dataclass(frozen=True)
class MockToolCall:
    """The call the mock makes: its id, the function's name and the arguments as JSON."""

    id: str
    name: str
    arguments: str

    def argument_pieces(self) -> list[str]:
        """The arguments cut into up to `_PIECES` pieces, as a model would stream them."""
        text = self.arguments
        size = max(1, -(-len(text) // _PIECES))
        return [text[i : i + size] for i in range(0, len(text), size)]


def _example(schema: Any, name: str) -> Any:
    """A value that fits a (simple) JSON schema: enums' first value, typed placeholders."""
    if not isinstance(schema, dict):
        return "example"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("integer", "number"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return [_example(schema.get("items"), name)]
    if kind == "object":
        return _object_example(schema)
    return f"example {name}"


def _object_example(schema: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    return {key: _example(value, key) for key, value in properties.items()}


def _functions(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        return []
    found = []
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type") == "function":
            function = tool.get("function")
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                found.append(function)
    return found


def _chosen(functions: list[dict[str, Any]], tool_choice: Any) -> dict[str, Any] | None:
    """The function to call: none when `tool_choice` is "none", the named one if it names one."""
    if not functions or tool_choice == "none":
        return None
    if isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name")
        for function in functions:
            if function["name"] == wanted:
                return function
    return functions[0]


def mock_tool_call(body: dict[str, Any], messages: list[dict[str, Any]]) -> MockToolCall | None:
    """The call the mock answers `body` with, or None for a text answer."""
    if messages and messages[-1].get("role") == "tool":
        return None  # a tool result came back: answer it in words
    function = _chosen(_functions(body.get("tools")), body.get("tool_choice"))
    if function is None:
        return None
    parameters = function.get("parameters")
    arguments = _object_example(parameters) if isinstance(parameters, dict) else {}
    text = json.dumps(arguments, ensure_ascii=False)
    seed = zlib.crc32(
        json.dumps([function["name"], messages], sort_keys=True, default=str).encode()
    )
    return MockToolCall(id=f"call_mock{seed:08x}", name=function["name"], arguments=text)


def tool_result_answer(messages: list[dict[str, Any]]) -> str | None:
    """The text answering a tool result (the last message), or None when it is not one."""
    if not messages or messages[-1].get("role") != "tool":
        return None
    content = messages[-1].get("content")
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        content = " ".join(p for p in parts if isinstance(p, str))
    result = " ".join(str(content or "").split())
    if len(result) > _RESULT_QUOTE_CHARS:
        result = result[:_RESULT_QUOTE_CHARS] + "…"
    return (
        f'The tool returned: "{result}". '
        "This answer comes from chatrelay's built-in mock upstream, which quotes tool results "
        "instead of reasoning about them."
    )
