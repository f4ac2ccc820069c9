"""OpenAI's wire shapes as the mock writes them: error bodies, chunks, completions, usage.

`Plan` is everything one request will produce, decided before the first byte goes out, so a
script only chooses *when* to write which frame. Objects come from `chatrelay.completions.chunks`
(the one builder of OpenAI chunks, shared with the relay's own renderer), frames from
`chatrelay.sse.framing`,
the same encoder chatrelay's own streams use (compact JSON, UTF-8 unescaped, LF line ends).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse, Response

import chatrelay.completions.chunks as build
from chatrelay.mock_upstream.answers import MockMode
from chatrelay.mock_upstream.tools import MockToolCall
from chatrelay.sse.framing import data_frame, json_text

DONE_FRAME = data_frame("[DONE]").encode()


def error_body(message: str, type_: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def error_response(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return JSONResponse(error_body(message, type_, code), status_code=status, headers=headers)


def sse_frame(payload: Any) -> bytes:
    """One `data:` frame holding `payload` as JSON."""
    return data_frame(payload).encode()


def json_body(payload: Any) -> bytes:
    """`payload` as the compact JSON bytes of a non-streamed answer."""
    return json_text(payload).encode()


@dataclass
class Plan:
    """Everything one request will produce, decided before the first byte is sent."""

    mode: MockMode
    model: str
    tokens: list[str]
    delay: float
    prompt_words: int
    include_usage: bool
    tool_call: MockToolCall | None = None  # answer with this call instead of `tokens`
    id: str = field(default_factory=lambda: f"chatcmpl-mock{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def finish_reason(self) -> str:
        if self.tool_call is not None:
            return "tool_calls"
        return "length" if self.mode == MockMode.LENGTH else "stop"

    def tool_call_deltas(self) -> list[dict[str, Any]]:
        """The call as OpenAI streams one: named first (empty arguments), then the pieces."""
        call = self.tool_call
        if call is None:
            return []
        first = {
            "index": 0,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        rest = [{"index": 0, "function": {"arguments": p}} for p in call.argument_pieces()]
        return [{"tool_calls": [item]} for item in [first, *rest]]

    def usage(self) -> dict[str, int]:
        completion = len(self.text.split())
        if self.tool_call is not None:
            completion = max(1, len(self.tool_call.arguments) // 4)
        return {
            "prompt_tokens": self.prompt_words,
            "completion_tokens": completion,
            "total_tokens": self.prompt_words + completion,
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return sse_frame(
            build.chunk(
                self.id,
                self.created,
                self.model,
                delta,
                finish_reason,
                include_usage_field=self.include_usage,
                system_fingerprint=None,
            )
        )

    def usage_chunk(self) -> bytes:
        return sse_frame(
            build.usage_chunk(
                self.id, self.created, self.model, self.usage(), system_fingerprint=None
            )
        )

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.text, "refusal": None}
        if self.tool_call is not None:
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": self.tool_call.id,
                    "type": "function",
                    "function": {
                        "name": self.tool_call.name,
                        "arguments": self.tool_call.arguments,
                    },
                }
            ]
        return dict(
            build.completion(
                self.id,
                self.created,
                self.model,
                message,
                self.finish_reason,
                usage=self.usage(),
                system_fingerprint=None,
            )
        )
