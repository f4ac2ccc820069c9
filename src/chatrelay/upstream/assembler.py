"""Fold the SSE events of an OpenAI-compatible `/chat/completions` stream into one message.

Every provider that claims OpenAI compatibility bends the chunk grammar somewhere: Azure
opens with a chunk whose `choices` is empty, vLLM and DeepSeek put reasoning in
`reasoning_content` while OpenRouter and Ollama use `reasoning`, OpenRouter sends usage in a
chunk *after* the one carrying `finish_reason`, Gemini drops `tool_calls[].index`, errors
arrive in-band as `{"error": {...}}` with HTTP 200. `ChunkAssembler` absorbs those
differences in one place, so the rest of the service sees a single shape: the accumulated
message, plus a `ChunkDelta` per event saying exactly what that event added (so the caller
can re-emit it token by token and never double-counts).

An answer is judged by what arrived, not by how the stream ended:

- a stream that delivered nothing — no content, tool call, refusal or finish_reason — is a
  failed answer (`upstream_empty_answer`) even when `[DONE]` came: old llama.cpp servers
  report errors in a non-standard `error:` SSE field, which WHATWG parsing ignores, and
  then send `[DONE]` (the parser keeps that field, and its error is what gets reported);
- a stream whose last event carried a finish_reason and that then ended cleanly is a
  completed answer without `[DONE]` (ik_llama.cpp, older TGI never send it);
- chatrelay always asks for one choice, and the one choice present is the answer whatever
  `index` it carries (TGI before 1.4.4 and Foundry Local number every chunk's choice 1, 2,
  3, …). Only a stream that really holds several choices — a chunk with more than one, or
  a new index that opens with a bare `role` delta, as each choice of an `n=2` stream does
  (an upstream defaulting to `n=2`) — is narrowed to the first choice it showed, so
  answers are not mixed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chatrelay.errors import UpstreamError, UpstreamProtocolError, UpstreamTruncated
from chatrelay.json_values import loads_upstream
from chatrelay.sse.event import SSEEvent

__all__ = ["ChunkAssembler", "ChunkDelta", "ToolCall", "ToolCallPart"]

_DONE = "[DONE]"
# How much of an upstream error message we carry: enough to diagnose, short enough that a
# provider echoing a whole prompt back cannot flood our logs or clients.
_MAX_ERROR_MESSAGE = 500
_SNIPPET = 80
_RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
_RETRYABLE_TYPES = frozenset({"server_error", "rate_limit_error", "overloaded_error", "timeout"})


@dataclass(slots=True)
class ToolCall:
    """One tool call, assembled from the deltas that share its index."""

    index: int
    id: str | None = None
    type: str = "function"
    name: str = ""
    arguments: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The call in the shape OpenAI's `message.tool_calls[]` uses (for storage and replay)."""
        return {
            "id": self.id,
            "type": self.type,
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(slots=True)
class ToolCallPart:
    """One event's contribution to one tool call: the call, and the arguments it added."""

    call: ToolCall
    arguments: str


@dataclass(slots=True)
class ChunkDelta:
    """What one event contributed; empty strings mean "nothing of that kind".

    `tool_parts` lists the calls the event touched, in its order, each with the argument
    text it appended (so a caller can stream the arguments as they arrive).
    """

    content: str = ""
    reasoning: str = ""
    refusal: str = ""
    tool_calls: bool = False
    tool_parts: list[ToolCallPart] | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    chunk: dict[str, Any] | None = None


def _snippet(text: str) -> str:
    """A short, printable excerpt of upstream data for an error message."""
    if len(text) > _SNIPPET:
        return repr(text[:_SNIPPET]) + "..."
    return repr(text)


def _opt_str(value: Any, where: str) -> str:
    """A string field of the chunk grammar: null means empty, any other type is a violation."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise UpstreamProtocolError(
        f"upstream chunk field {where} is {type(value).__name__}, expected a string"
    )


def _normalise_usage(value: Any) -> dict[str, Any] | None:
    """A copy of a usage object, `total_tokens` filled in when the provider left it out."""
    if not isinstance(value, dict) or not value:
        return None
    usage = dict(value)
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if "total_tokens" not in usage and isinstance(prompt, int) and isinstance(completion, int):
        usage["total_tokens"] = prompt + completion
    return usage


def _upstream_error(payload: Any, raw: str) -> UpstreamError:
    """Turn an in-band error object into our typed error, keeping the upstream's own words.

    OpenAI and OpenRouter send `{"message", "type"?, "code"?}`; vLLM and SGLang put the HTTP
    status in `code`; llama.cpp (after its SSE fix) sends `{"code", "message", "type"}`. When
    `code` is an HTTP status we keep it as `upstream_status`, which also decides `retryable`.
    """
    message = ""
    parts: list[str] = []
    status: int | None = None
    retryable = False
    if isinstance(payload, dict):
        raw_message = payload.get("message")
        message = raw_message if isinstance(raw_message, str) else ""
        err_type, code = payload.get("type"), payload.get("code")
        if isinstance(err_type, str) and err_type:
            parts.append(f"type={err_type}")
            retryable = err_type in _RETRYABLE_TYPES
        if isinstance(code, bool):  # bool is an int subclass; no provider means a status by it
            code = None
        if isinstance(code, int) and 400 <= code <= 599:
            status = code
            retryable = retryable or code in _RETRYABLE_STATUSES
        if isinstance(code, (str, int)) and code != "":
            parts.append(f"code={code}")
        if not message:
            message = json.dumps(payload, ensure_ascii=False)
    elif isinstance(payload, str):
        message = payload
    if not message:
        message = raw
    message = message.strip()
    if len(message) > _MAX_ERROR_MESSAGE:
        message = message[:_MAX_ERROR_MESSAGE] + "..."
    detail = f" ({', '.join(parts)})" if parts else ""
    return UpstreamError(
        f"upstream reported an error{detail}: {message}",
        code="upstream_error",
        upstream_status=status,
        retryable=retryable,
    )


_ANSWER_FIELDS = ("content", "tool_calls", "function_call", "refusal", "reasoning_content")


def _opens_a_choice(choice: dict[str, Any]) -> bool:
    """A choice's opening chunk: a `role` and nothing of an answer yet (how OpenAI and
    Fireworks start each choice of an `n=2` stream). Servers that renumber their single
    choice send `role` with content in every chunk, so they never look like this."""
    body = choice.get("delta")
    if not isinstance(body, dict) or not body.get("role") or choice.get("finish_reason"):
        return False
    return not any(body.get(field) for field in _ANSWER_FIELDS)


class ChunkAssembler:
    """Accumulates one streamed chat completion; feed it every SSE event, then call `finish`.

    Raises `UpstreamError` (code `upstream_error`) for an in-band error object and
    `UpstreamProtocolError` for data that is not a JSON object or breaks the field types the
    assembler relies on; the caller decides what a partial message is worth.
    """

    def __init__(self) -> None:
        self.done = False
        # Pieces, joined on demand: `+=` on an attribute copies the whole text every time,
        # which made a long answer quadratic.
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._refusal: list[str] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.response_id: str | None = None
        self.created: int | None = None
        self.system_fingerprint: str | None = None
        self._calls: dict[int, ToolCall] = {}
        # Which of our calls an upstream `index` currently designates; see `_tool_call_slot`.
        self._slot_by_upstream_index: dict[int, ToolCall] = {}
        self._last_call: ToolCall | None = None
        # The upstream `index` of the answer's choice (the first one seen), and the indices
        # of other choices a stream with several of them opened.
        self._answer_index: int | None = None
        self._other_indices: set[int] = set()

    @property
    def content(self) -> str:
        return "".join(self._content)

    @property
    def reasoning(self) -> str:
        return "".join(self._reasoning)

    @property
    def refusal(self) -> str:
        return "".join(self._refusal)

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The tool calls so far, ordered by index."""
        return [self._calls[i] for i in sorted(self._calls)]

    def feed(self, event: SSEEvent) -> ChunkDelta | None:
        """Apply one event; None for `[DONE]`, blank data, named non-error events, post-`[DONE]`."""
        if self.done:
            return None
        data = event.data
        if event.event == "error":
            self._raise_error_event(data)
        if event.event != "message":
            # A browser's EventSource hands only "message" events to onmessage; OpenAI-style
            # servers never name their chunks, so a named event is a keep-alive or an
            # extension we do not understand, not part of the message.
            return None
        stripped = data.strip()
        if not stripped:
            return None
        if stripped == _DONE:
            self.done = True
            return None
        chunk = self._decode(data)
        if chunk.get("error"):  # null, false, "" and {} are how some servers say "no error"
            raise _upstream_error(chunk["error"], stripped)
        return self._apply(chunk)

    @property
    def delivered(self) -> bool:
        """Something of an answer arrived: content, a tool call, a refusal or a finish_reason."""
        return bool(self._content or self._calls or self._refusal or self.finish_reason)

    def finish(self, error_field: str | None = None) -> None:
        """Declare the byte stream over, judging what arrived (see the module docstring).

        `error_field` is the value of a non-standard `error:` SSE field the stream carried
        (`SSEParser.error_field`); it explains a stream that ends without an answer.
        """
        if self.delivered and (self.done or self.finish_reason is not None):
            return
        if error_field is not None:
            raise self._error_field_error(error_field)
        if not self.done:
            raise UpstreamTruncated(
                "upstream stream ended without [DONE] and without a finish_reason "
                f"({len(self.content)} content characters received)"
            )
        raise UpstreamError(
            "upstream ended the stream with [DONE] but sent no answer: no content, tool call, "
            "refusal or finish_reason",
            code="upstream_empty_answer",
        )

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _error_field_error(value: str) -> UpstreamError:
        stripped = value.strip()
        try:
            decoded: Any = json.loads(stripped)
        except (ValueError, RecursionError):
            decoded = stripped
        if isinstance(decoded, dict) and isinstance(decoded.get("error"), dict):
            decoded = decoded["error"]
        error = _upstream_error(decoded, stripped or "(empty error field)")
        error.message = error.message.replace(
            "upstream reported an error", "upstream reported an error (in an `error:` SSE field)", 1
        )
        error.args = (error.message,)
        return error

    def _raise_error_event(self, data: str) -> None:
        """`event: error` always means failure, whatever shape its data has."""
        stripped = data.strip()
        try:
            decoded: Any = json.loads(stripped)
        except (ValueError, RecursionError):
            decoded = stripped
        if isinstance(decoded, dict) and decoded.get("error"):
            decoded = decoded["error"]
        raise _upstream_error(decoded, stripped or "(empty error event)")

    @staticmethod
    def _decode(data: str) -> dict[str, Any]:
        try:
            chunk: Any = loads_upstream(data)  # a NaN in logprobs must not fail the answer
        except (ValueError, RecursionError):
            raise UpstreamProtocolError(
                f"upstream sent data that is not JSON: {_snippet(data)}"
            ) from None
        if not isinstance(chunk, dict):
            raise UpstreamProtocolError(
                f"upstream sent JSON that is not an object: {_snippet(data)}"
            )
        return chunk

    def _apply(self, chunk: dict[str, Any]) -> ChunkDelta:
        delta = ChunkDelta(chunk=chunk)
        self._note_metadata(chunk)
        usage = _normalise_usage(chunk.get("usage"))
        if usage is None:
            x_groq = chunk.get("x_groq")  # Groq's own place for usage, on the finishing chunk
            if isinstance(x_groq, dict):
                usage = _normalise_usage(x_groq.get("usage"))
        if usage is not None:
            self.usage = usage
            delta.usage = usage
        choice = self._answer_choice(chunk.get("choices"))
        if choice is not None:
            self._apply_choice(choice, delta)
        return delta

    def _note_metadata(self, chunk: dict[str, Any]) -> None:
        """Keep the first real id/model/created/fingerprint (Azure's filter chunk has blanks)."""
        rid, model, created, fingerprint = (
            chunk.get("id"),
            chunk.get("model"),
            chunk.get("created"),
            chunk.get("system_fingerprint"),
        )
        if self.response_id is None and isinstance(rid, str) and rid:
            self.response_id = rid
        if self.model is None and isinstance(model, str) and model:
            self.model = model
        if self.created is None and type(created) is int and created > 0:
            self.created = created
        if self.system_fingerprint is None and isinstance(fingerprint, str) and fingerprint:
            self.system_fingerprint = fingerprint

    def _answer_choice(self, choices: Any) -> dict[str, Any] | None:
        """The answer's choice in this chunk, if it has one (module docstring: the one choice
        present is the answer); `choices` may be empty, null or absent (usage chunks)."""
        if choices is None:
            return None
        if not isinstance(choices, list):
            raise UpstreamProtocolError("upstream chunk field choices is not a list")
        indexed: list[tuple[int, dict[str, Any]]] = []
        for position, choice in enumerate(choices):
            if not isinstance(choice, dict):
                raise UpstreamProtocolError(f"upstream chunk choices[{position}] is not an object")
            index = choice.get("index", position)
            indexed.append((index if type(index) is int else position, choice))
        if not indexed:
            return None
        if len(indexed) > 1:  # several choices at once: the answer's, or the lowest index
            if self._answer_index is None:
                self._answer_index = min(index for index, _ in indexed)
            self._other_indices.update(i for i, _ in indexed if i != self._answer_index)
            return next((c for i, c in indexed if i == self._answer_index), None)
        index, choice = indexed[0]
        if self._answer_index is None or index == self._answer_index:
            self._answer_index = index
            return choice
        if index in self._other_indices:
            return None
        if _opens_a_choice(choice):
            self._other_indices.add(index)  # a second choice opening: not the answer
            return None
        self._answer_index = index  # a server that renumbers its one choice chunk by chunk
        return choice

    def _apply_choice(self, choice: dict[str, Any], delta: ChunkDelta) -> None:
        body = choice.get("delta")
        if body is None:
            body = {}  # Azure's content-filter annotation chunks carry no delta at all
        if not isinstance(body, dict):
            raise UpstreamProtocolError("upstream chunk field choices[0].delta is not an object")
        delta.content = _opt_str(body.get("content"), "delta.content")
        delta.refusal = _opt_str(body.get("refusal"), "delta.refusal")
        delta.reasoning = self._reasoning_of(body)
        if delta.content:
            self._content.append(delta.content)
        if delta.refusal:
            self._refusal.append(delta.refusal)
        if delta.reasoning:
            self._reasoning.append(delta.reasoning)
        if self._apply_tool_calls(body.get("tool_calls"), delta):
            delta.tool_calls = True
        if self._apply_function_call(body.get("function_call"), delta):
            delta.tool_calls = True
        finish = choice.get("finish_reason")
        if finish is not None and not isinstance(finish, str):
            raise UpstreamProtocolError("upstream chunk field finish_reason is not a string")
        if finish:  # "" is how some servers spell null
            # Never reset by a later null: OpenRouter's usage chunk repeats the choice with
            # finish_reason null after the one that said "stop".
            self.finish_reason = finish
            delta.finish_reason = finish

    @staticmethod
    def _reasoning_of(body: dict[str, Any]) -> str:
        """Reasoning text from `reasoning_content` (DeepSeek, older vLLM) or `reasoning`.

        Servers in transition send both with the same text, so one wins rather than both
        being appended. Non-string values are ignored: these fields are extensions, not
        grammar we can hold a provider to.
        """
        for key in ("reasoning_content", "reasoning"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
        return ""

    @staticmethod
    def _note_part(delta: ChunkDelta, call: ToolCall, arguments: str) -> None:
        if delta.tool_parts is None:
            delta.tool_parts = []
        delta.tool_parts.append(ToolCallPart(call, arguments))

    def _apply_tool_calls(self, value: Any, delta: ChunkDelta) -> bool:
        if value is None:
            return False
        if not isinstance(value, list):
            raise UpstreamProtocolError("upstream chunk field delta.tool_calls is not a list")
        changed = False
        for item in value:
            if not isinstance(item, dict):
                raise UpstreamProtocolError("upstream chunk delta.tool_calls[] is not an object")
            function = item.get("function")
            if function is None:
                function = {}
            if not isinstance(function, dict):
                raise UpstreamProtocolError("upstream tool call field function is not an object")
            call_id = _opt_str(item.get("id"), "tool_calls[].id")
            call, created = self._tool_call_slot(item.get("index"), call_id)
            kind = _opt_str(item.get("type"), "tool_calls[].type")
            merged, arguments = self._merge_call(call, call_id, kind, function)
            if created or merged:
                changed = True
                self._note_part(delta, call, arguments)
        return changed

    def _apply_function_call(self, value: Any, delta: ChunkDelta) -> bool:
        """The pre-`tools` `function_call` delta: one call, which we file as tool call 0."""
        if value is None:
            return False
        if not isinstance(value, dict):
            raise UpstreamProtocolError("upstream chunk field delta.function_call is not an object")
        call = self._calls.get(0)
        created = call is None
        if call is None:
            call = self._new_call(0)
        merged, arguments = self._merge_call(call, "", "", value)
        if created or merged:
            self._note_part(delta, call, arguments)
        return merged or created

    def _tool_call_slot(self, upstream_index: Any, call_id: str) -> tuple[ToolCall, bool]:
        """Find (or open) the call a tool-call delta belongs to; True when it is new.

        With an index (the normal case) the index decides, except that a different non-empty
        id under an index already in use starts a new call: proxies that translate Gemini
        number every call 0. Without an index (Gemini's own endpoint) an unseen id starts a
        new call and an id-less delta continues the last one.
        """
        if isinstance(upstream_index, bool) or (
            upstream_index is not None and not isinstance(upstream_index, int)
        ):
            raise UpstreamProtocolError("upstream tool call field index is not an integer")
        if upstream_index is not None:
            call = self._slot_by_upstream_index.get(upstream_index)
            if call is not None and not (call_id and call.id and call_id != call.id):
                self._last_call = call
                return call, False
            wanted = upstream_index if upstream_index not in self._calls else self._next_index()
            call = self._new_call(wanted)
            self._slot_by_upstream_index[upstream_index] = call
            return call, True
        if call_id:
            for call in self._calls.values():
                if call.id == call_id:
                    self._last_call = call
                    return call, False
        elif self._last_call is not None:
            return self._last_call, False
        return self._new_call(self._next_index()), True

    def _next_index(self) -> int:
        return max(self._calls, default=-1) + 1

    def _new_call(self, index: int) -> ToolCall:
        call = ToolCall(index=index)
        self._calls[index] = call
        self._last_call = call
        return call

    @staticmethod
    def _merge_call(
        call: ToolCall, call_id: str, kind: str, function: dict[str, Any]
    ) -> tuple[bool, str]:
        """Id, type and name come from the first delta that has them; arguments accumulate.

        Returns whether the call changed, and the argument text appended."""
        changed = False
        if call_id and not call.id:
            call.id = call_id
            changed = True
        if kind and kind != call.type:
            call.type = kind
            changed = True
        name = _opt_str(function.get("name"), "function.name")
        if name and not call.name:
            call.name = name
            changed = True
        arguments = function.get("arguments")
        if isinstance(arguments, (dict, list)):
            # A few servers send parsed arguments; the OpenAI shape is a JSON string.
            arguments = json.dumps(arguments, ensure_ascii=False)
        arguments = _opt_str(arguments, "function.arguments")
        if arguments:
            call.arguments += arguments
            changed = True
        return changed, arguments
