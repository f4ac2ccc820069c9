"""Recording a chat completion request as a conversation turn, then launching it.

A request becomes a recorded conversation (its messages, then a `streaming` assistant
message) and a generation launched through the same registry as a native post, so it
outlives the HTTP connection. A client resending its history with
`X-Chatrelay-Conversation-Id` appends only what `unrecorded` finds new.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chatrelay.clock import now_iso
from chatrelay.completions.render import CompletionEvents
from chatrelay.completions.request import CompletionRequest, content_text
from chatrelay.generation.registry import GenerationRegistry
from chatrelay.generation.subscription import Subscriptions
from chatrelay.ids import new_id
from chatrelay.models import Message, Status
from chatrelay.slots import Slot
from chatrelay.storage.repository import Repository

# The fields of an OpenAI message kept in columns; every other field is kept in `params`.
_MESSAGE_COLUMNS = frozenset({"role", "content", "tool_calls"})
_TITLE_CHARS = 80
_PREFIX_PAGE = 100  # recorded messages per read when comparing a request with its conversation
# Assistant messages a client was never handed as an answer: it cannot be echoing them back.
_UNANSWERED = frozenset({Status.STREAMING, Status.FAILED, Status.INTERRUPTED})

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


def _comparable(message: Message) -> bool:
    """Whether a recorded message takes part in the prefix comparison of `unrecorded`."""
    return message.superseded_by is None and not (
        message.role == "assistant" and message.status in _UNANSWERED
    )


def unrecorded(
    requested: Sequence[dict[str, Any]], recorded: Sequence[Message]
) -> list[dict[str, Any]]:
    """The requested messages not yet in the conversation: all after the longest common prefix.

    The prefix is compared by role, text, tool calls and `tool_call_id`. Messages taken out
    of the context (superseded) and assistant messages the client never received as an answer
    (failed, interrupted, still streaming) are left out of the comparison.
    """
    history = [m for m in recorded if _comparable(m)]
    matched = 0
    while (
        matched < len(requested)
        and matched < len(history)
        and _request_fingerprint(requested[matched]) == _recorded_fingerprint(history[matched])
    ):
        matched += 1
    return list(requested[matched:])


def title_of(messages: Sequence[dict[str, Any]]) -> str | None:
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

    def __init__(
        self,
        repo: Repository,
        registry: GenerationRegistry,
        subscriptions: Subscriptions,
        default_model: str,
        *,
        check_model: Callable[[str], None] = lambda _model: None,
    ) -> None:
        self.repo = repo
        self.registry = registry
        self.subscriptions = subscriptions
        self.default_model = default_model
        # Raises `UnknownModel` for a model no upstream serves (with a routes file).
        self.check_model = check_model

    async def start(
        self, tenant: str, request: CompletionRequest, *, conversation_id: str | None
    ) -> StartedCompletion:
        """Store the new messages and the `streaming` assistant message, then launch.

        Without `conversation_id` a new conversation holds every message of the request;
        with it, only those `unrecorded` says are new are appended (404 if it is unknown).
        """
        # Before anything is stored, so a refusal (draining, 429) leaves no trace.
        with self.registry.reserve(tenant) as slot:
            return await self._record_and_launch(tenant, request, conversation_id, slot)

    async def _record_and_launch(
        self,
        tenant: str,
        request: CompletionRequest,
        conversation_id: str | None,
        slot: Slot,
    ) -> StartedCompletion:
        now = now_iso()
        if conversation_id is None:
            model = request.model or self.default_model
            self.check_model(model)
            conversation, stored = self.repo.new_conversation(
                tenant=tenant,
                title=title_of(request.messages),
                system_prompt=None,
                model=model,
                metadata={"source": "chat.completions"},
                messages=self._drafts(tenant, "", request.messages, request, model, now),
            )
            # The request goes upstream before the transaction, which then overlaps the
            # upstream's time to first byte (`Generation`, gated, says how).
            assistant = stored[-1]
            generation = self.registry.launch(
                assistant, request.upstream_body(model), slot=slot, gated=True
            )
            try:
                await self.repo.insert_conversation(conversation, stored)
            except BaseException:
                generation.abandon()
                raise
            generation.recorded()
            return StartedCompletion(conversation.id, assistant)
        else:
            conversation = await self.repo.get_conversation(tenant, conversation_id)
            recorded = await self._recorded_prefix(conversation.id, len(request.messages))
            new = unrecorded(request.messages, recorded)
            model = request.model or conversation.model or self.default_model
            self.check_model(model)
            stored = await self.repo.append_messages(
                tenant,
                conversation.id,
                self._drafts(tenant, conversation.id, new, request, model, now),
            )
        assistant = stored[-1]
        self.registry.launch(assistant, request.upstream_body(model), slot=slot)
        return StartedCompletion(conversation.id, assistant)

    async def _recorded_prefix(self, conversation_id: str, wanted: int) -> list[Message]:
        """The conversation's messages from the start, read a page at a time only until
        `wanted` of them take part in the comparison: a request of n messages cannot match
        more than n, so a long conversation is not read whole."""
        recorded: list[Message] = []
        comparable = 0
        after: int | None = None
        while comparable < wanted:
            page, more = await self.repo.messages_page(
                conversation_id, after_seq=after, limit=_PREFIX_PAGE
            )
            recorded += page
            comparable += sum(1 for m in page if _comparable(m))
            if not more or not page:
                break
            after = page[-1].seq
        return recorded

    async def events(self, assistant: Message, *, heartbeat: float) -> CompletionEvents:
        """The new message's event log from its `start`; an empty batch every `heartbeat` s."""
        batches = await self.subscriptions.event_batches(
            assistant.tenant, assistant.id, None, heartbeat=heartbeat
        )
        if batches is None:  # only a cursor at the terminal event gives None; there is none here
            raise RuntimeError(f"no event stream for new message {assistant.id}")
        return CompletionEvents(batches)

    @classmethod
    def _drafts(
        cls,
        tenant: str,
        conversation_id: str,
        new: Sequence[dict[str, Any]],
        request: CompletionRequest,
        model: str,
        now: str,
    ) -> list[Message]:
        """The request's new messages as stored, then the `streaming` assistant message.

        Sequence numbers (and, for a new conversation, its id) are the repository's."""
        drafts = [draft_message(tenant, conversation_id, m, now) for m in new]
        drafts.append(
            streaming_assistant(tenant, conversation_id, model, now, dict(request.passthrough))
        )
        return drafts


def streaming_assistant(
    tenant: str, conversation_id: str, model: str, now: str, params: dict[str, Any]
) -> Message:
    """The assistant message a generation is about to fill, as stored before it starts.
    Its id is new; its sequence number is the repository's."""
    return Message(
        id=new_id("msg"),
        conversation_id=conversation_id,
        tenant=tenant,
        seq=0,  # assigned by the repository
        role="assistant",
        content="",
        status=Status.STREAMING,
        model=model,
        created_at=now,
        params=params,
    )


def draft_message(tenant: str, conversation_id: str, message: dict[str, Any], now: str) -> Message:
    """A request message (OpenAI chat shape) as stored: text in `content`, the rest of it
    in `params`. Its id is new; its sequence number is the repository's."""
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
