"""The OpenAI-compatible surface in plain data: requests in, chunk and completion objects out.

A `/v1/chat/completions` request becomes a recorded conversation (its messages, then a
`streaming` assistant message) and a generation launched through the same registry as a
native post, so it outlives the HTTP connection. The answer is rendered from the message's
event log: `delta` → `delta.content`, `reasoning` → `delta.reasoning_content`, and from the
final message of `done` the tool calls, refusal, finish reason and usage. Knows nothing of
HTTP; the edge (`web/routes/openai.py`) frames and maps errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.clock import now_iso
from chatrelay.errors import BadRequest, UpstreamProtocolError
from chatrelay.generation.registry import GenerationRegistry
from chatrelay.ids import new_id
from chatrelay.models import Conversation, Message, Status
from chatrelay.storage.repository import Repository
from chatrelay.upstream.client import UpstreamClient

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
# The fields of an OpenAI message kept in columns; every other field is kept in `params`.
_MESSAGE_COLUMNS = frozenset({"role", "content", "tool_calls"})
_TITLE_CHARS = 80
_MODEL_CHARS = 200
# Assistant messages a client was never handed as an answer: it cannot be echoing them back.
_UNANSWERED = frozenset({Status.STREAMING, Status.FAILED, Status.INTERRUPTED})


class InvalidRequest(BadRequest):
    """A request body OpenAI would refuse with 400; `param` names the offending field."""

    def __init__(self, message: str, *, param: str | None, code: str = "invalid_field") -> None:
        super().__init__(message, code=code)
        self.param = param


# -- the request -----------------------------------------------------------------------------


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
    if role not in ROLES:
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


# -- recording ---------------------------------------------------------------------------------

_Fingerprint = tuple[str, str, tuple[tuple[Any, Any, Any], ...], Any]


def _calls_key(tool_calls: Any) -> tuple[tuple[Any, Any, Any], ...]:
    """Tool calls as compared: id, function name, arguments."""
    key = []
    for call in tool_calls if isinstance(tool_calls, list) else []:
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        key.append((call.get("id"), function.get("name"), function.get("arguments")))
    return tuple(key)


def _request_fingerprint(message: dict[str, Any]) -> _Fingerprint:
    role = message["role"]
    tool_call_id = message.get("tool_call_id") if role == "tool" else None
    return (
        role,
        content_text(message.get("content")),
        _calls_key(message.get("tool_calls")),
        tool_call_id,
    )


def _recorded_fingerprint(message: Message) -> _Fingerprint:
    tool_call_id = message.params.get("tool_call_id") if message.role == "tool" else None
    return message.role, message.content, _calls_key(message.tool_calls), tool_call_id


def unrecorded(
    requested: Sequence[dict[str, Any]], recorded: Sequence[Message]
) -> list[dict[str, Any]]:
    """The requested messages not yet in the conversation: all after the longest common prefix.

    The prefix is compared by role, text, tool calls and `tool_call_id`. Messages taken out
    of the context (superseded) and assistant messages the client never received as an answer
    (failed, interrupted, still streaming) are left out of the comparison.
    """
    history = [
        m
        for m in recorded
        if m.superseded_by is None and not (m.role == "assistant" and m.status in _UNANSWERED)
    ]
    matched = 0
    while (
        matched < len(requested)
        and matched < len(history)
        and _request_fingerprint(requested[matched]) == _recorded_fingerprint(history[matched])
    ):
        matched += 1
    return list(requested[matched:])


def _title(messages: Sequence[dict[str, Any]]) -> str | None:
    for message in messages:
        if message["role"] == "user":
            text = content_text(message.get("content")).strip()
            if text:
                first_line = text.splitlines()[0]
                return first_line[:_TITLE_CHARS]
    return None


@dataclass(frozen=True)
class StartedCompletion:
    conversation_id: str
    assistant: Message


class ChatCompletions:
    """Records a chat completion request as a conversation turn and launches its generation."""

    def __init__(self, repo: Repository, registry: GenerationRegistry, default_model: str) -> None:
        self.repo = repo
        self.registry = registry
        self.default_model = default_model

    async def start(
        self, tenant: str, request: CompletionRequest, *, conversation_id: str | None
    ) -> StartedCompletion:
        """Store the new messages and the `streaming` assistant message, then launch.

        Without `conversation_id` a new conversation holds every message of the request;
        with it, only those `unrecorded` says are new are appended (404 if it is unknown).
        """
        self.registry.ensure_accepting()  # before anything is stored: a refusal leaves no trace
        conversation: Conversation
        if conversation_id is None:
            conversation = await self.repo.create_conversation(
                tenant=tenant,
                title=_title(request.messages),
                system_prompt=None,
                model=request.model or self.default_model,
                metadata={"source": "chat.completions"},
            )
            new = request.messages
        else:
            conversation = await self.repo.get_conversation(tenant, conversation_id)
            new = unrecorded(request.messages, await self.repo.list_messages(conversation.id))
        model = request.model or conversation.model or self.default_model
        now = now_iso()
        drafts = [self._draft(tenant, conversation.id, m, now) for m in new]
        drafts.append(
            Message(
                id=new_id("msg"),
                conversation_id=conversation.id,
                tenant=tenant,
                seq=0,  # assigned by the repository
                role="assistant",
                content="",
                status=Status.STREAMING,
                model=model,
                created_at=now,
                params=dict(request.passthrough),
            )
        )
        stored = await self.repo.append_messages(tenant, conversation.id, drafts)
        assistant = stored[-1]
        self.registry.launch(assistant, request.upstream_body(model))
        return StartedCompletion(conversation.id, assistant)

    @staticmethod
    def _draft(tenant: str, conversation_id: str, message: dict[str, Any], now: str) -> Message:
        """A request message as stored: text in `content`, the rest of it in `params`."""
        params = {k: v for k, v in message.items() if k not in _MESSAGE_COLUMNS}
        content = message.get("content")
        if isinstance(content, list):
            params["content"] = content  # the parts (images, files…) the text cannot hold
        tool_calls = message.get("tool_calls")
        return Message(
            id=new_id("msg"),
            conversation_id=conversation_id,
            tenant=tenant,
            seq=0,  # assigned by the repository
            role=message["role"],
            content=content_text(content),
            status=Status.COMPLETED,
            model=None,
            created_at=now,
            completed_at=now,
            tool_calls=tool_calls if tool_calls else None,
            params=params,
        )


# -- rendering ---------------------------------------------------------------------------------


def completion_id(message_id: str) -> str:
    """`chatcmpl-…` from the assistant message's id: stable across the stream and replays."""
    return "chatcmpl-" + message_id.removeprefix("msg_")


def _epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def finish_reason(final: dict[str, Any]) -> str:
    """The upstream's finish reason; a stream that gave none (a cancel) ends as `stop`."""
    reason = final.get("finish_reason")
    if isinstance(reason, str) and reason:
        return reason
    return "tool_calls" if final.get("tool_calls") else "stop"


def _indexed_calls(tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"index": i, **call} for i, call in enumerate(tool_calls)]


class CompletionRenderer:
    """Turns one assistant message's events into `chat.completion(.chunk)` objects."""

    def __init__(self, assistant: Message, *, include_usage: bool) -> None:
        self.id = completion_id(assistant.id)
        self.created = _epoch(assistant.created_at)
        self.model = assistant.model or ""
        self.include_usage = include_usage

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def opening(self) -> dict[str, Any]:
        """The first chunk, naming the role, as OpenAI sends it."""
        return self._chunk({"role": "assistant", "content": "", "refusal": None})

    def chunks(self, event: LogEvent) -> list[dict[str, Any]]:
        """The chunks for one `start`/`delta`/`reasoning`/`done` event (`error` is the edge's)."""
        if event.kind is EventKind.DELTA:
            return [self._chunk({"content": event.text})]
        if event.kind is EventKind.REASONING:
            return [self._chunk({"reasoning_content": event.text})]
        if event.kind is EventKind.DONE:
            return self.closing(event.final.to_api())
        return []

    def closing(self, final: dict[str, Any]) -> list[dict[str, Any]]:
        """Tool calls (complete, one chunk), refusal, the finish chunk, then usage if asked."""
        chunks = []
        if final.get("tool_calls"):
            chunks.append(self._chunk({"tool_calls": _indexed_calls(final["tool_calls"])}))
        if final.get("refusal"):
            chunks.append(self._chunk({"refusal": final["refusal"]}))
        chunks.append(self._chunk({}, finish_reason(final)))
        if self.include_usage:
            chunks.append(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": final.get("usage"),
                }
            )
        return chunks

    def completion(self, final: dict[str, Any]) -> dict[str, Any]:
        """The non-streaming `chat.completion` for a finished message."""
        tool_calls = final.get("tool_calls") or None
        refusal = final.get("refusal") or None
        content = final.get("content") or ""
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if not content and (tool_calls or refusal) else content,
            "refusal": refusal,
        }
        if tool_calls:
            message["tool_calls"] = tool_calls
        if final.get("reasoning"):
            message["reasoning_content"] = final["reasoning"]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason(final),
                }
            ],
            "usage": final.get("usage"),
        }


# -- models ------------------------------------------------------------------------------------


def model_list(payload: dict[str, Any]) -> dict[str, Any]:
    """The upstream's `/models` answer in OpenAI's list shape, required fields filled in."""
    data = payload.get("data")
    if not isinstance(data, list):
        raise UpstreamProtocolError("upstream model list has no 'data' array")
    models = []
    for entry in data:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        created = entry.get("created")
        owned_by = entry.get("owned_by")
        models.append(
            {
                **entry,
                "object": "model",
                "created": created if type(created) is int else 0,
                "owned_by": owned_by if isinstance(owned_by, str) else "upstream",
            }
        )
    return {"object": "list", "data": models}


class ModelCatalog:
    """The upstream's models, fetched at most once per `ttl` s; callers share one fetch.

    Failures are not cached: the next call asks the upstream again.
    """

    def __init__(
        self,
        upstream: UpstreamClient,
        *,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._upstream = upstream
        self._ttl = ttl
        self._clock = clock
        self._lock = asyncio.Lock()
        self._listing: dict[str, Any] | None = None
        self._fetched_at = 0.0

    async def listing(self) -> dict[str, Any]:
        async with self._lock:
            if self._listing is None or self._clock() - self._fetched_at >= self._ttl:
                self._listing = model_list(await self._upstream.list_models())
                self._fetched_at = self._clock()
            return self._listing
