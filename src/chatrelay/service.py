"""The core's front door: what the HTTP edge asks for, in plain data.

Builds upstream requests from conversations and hands them to the generation registry;
decides the model of a turn and what a cancel of a message not running here means.
Knows nothing of HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from chatrelay.errors import Conflict
from chatrelay.generation.peers import Peers
from chatrelay.generation.registry import GenerationRegistry
from chatrelay.models import Conversation, Message, Status
from chatrelay.storage.repository import Repository


@dataclass(frozen=True)
class TurnOptions:
    """How to generate one assistant message; None fields fall back to defaults."""

    model: str | None = None
    params: dict[str, Any] | None = None
    cancel_on_disconnect: bool = False


@dataclass(frozen=True)
class PostedMessage:
    user: Message | None  # None when regenerating
    assistant: Message


class ChatService:
    def __init__(
        self,
        repo: Repository,
        registry: GenerationRegistry,
        default_model: str,
        *,
        context_tokens: int = 0,
        check_model: Callable[[str], None] = lambda _model: None,
        peers: Peers | None = None,
    ) -> None:
        self.repo = repo
        self.registry = registry
        self.peers = peers if peers is not None else Peers(repo, registry, None)
        self.default_model = default_model
        self.context_tokens = context_tokens
        # Raises `UnknownModel` for a model no upstream serves (with a routes file).
        self.check_model = check_model

    async def create_conversation(
        self,
        tenant: str,
        *,
        title: str | None = None,
        system_prompt: str | None = None,
        model: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Conversation:
        if model is not None:
            self.check_model(model)
        conversation, _ = await self.repo.create_conversation(
            tenant=tenant,
            title=title,
            system_prompt=system_prompt,
            model=model,
            metadata=metadata or {},
        )
        return conversation

    async def conversation_with_messages(
        self, tenant: str, conversation_id: str
    ) -> tuple[Conversation, list[Message]]:
        conversation = await self.repo.get_conversation(tenant, conversation_id)
        messages = await self.repo.list_messages(conversation_id)
        return conversation, [self.registry.live_view(m) for m in messages]

    async def delete_conversation(self, tenant: str, conversation_id: str) -> None:
        running = await self.repo.delete_conversation(tenant, conversation_id)
        self.registry.forget_conversation(conversation_id)
        self.peers.forget_conversation(running, conversation_id)

    async def get_message(self, tenant: str, message_id: str) -> Message:
        return self.registry.live_view(await self.repo.get_message(tenant, message_id))

    async def cancel(self, tenant: str, message_id: str) -> Message:
        """Stop a generation; its partial text is kept. 409 when there is nothing to stop.

        A generation running on another instance is stopped there (`Peers.cancel`), with
        the same answer; without a control channel that is `409 not_owner`.
        """
        generation = self.registry.local(tenant, message_id)
        if generation is not None:
            return await self.registry.cancel(generation)
        message = await self.repo.get_message(tenant, message_id)
        if message.status is Status.STREAMING:
            return await self.peers.cancel(tenant, message)
        if message.role != "assistant":
            raise Conflict(
                f"message {message_id} is a {message.role} message", code="not_generated"
            )
        raise Conflict(
            f"message {message_id} already ended with status {message.status}",
            code="message_finished",
        )

    async def post_message(
        self, tenant: str, conversation_id: str, *, content: str, options: TurnOptions
    ) -> PostedMessage:
        return await self._start_turn(tenant, conversation_id, content, options)

    async def regenerate(self, tenant: str, message_id: str, options: TurnOptions) -> PostedMessage:
        """A new answer to the same history; the old one (and any later turn) is superseded.

        Without a model or params of its own, it reuses the old message's.
        """
        old = await self.repo.get_message(tenant, message_id)
        if old.role != "assistant":
            raise Conflict(f"message {message_id} is a {old.role} message", code="not_generated")
        self._check_replaceable(old)
        options = replace(
            options,
            model=options.model or old.model,
            params=old.params if options.params is None else options.params,
        )
        return await self._start_turn(
            tenant, old.conversation_id, None, options, supersede_from=old.seq
        )

    async def edit(
        self, tenant: str, message_id: str, *, content: str, options: TurnOptions
    ) -> PostedMessage:
        """Replace a user message and answer it; it and every later turn leave the context."""
        old = await self.repo.get_message(tenant, message_id)
        if old.role != "user":
            raise Conflict(f"message {message_id} is a {old.role} message", code="not_editable")
        self._check_replaceable(old)
        return await self._start_turn(
            tenant, old.conversation_id, content, options, supersede_from=old.seq
        )

    @staticmethod
    def _check_replaceable(message: Message) -> None:
        if message.superseded_by is not None:
            raise Conflict(
                f"message {message.id} was already replaced by {message.superseded_by}",
                code="message_superseded",
            )
        if message.status is Status.STREAMING:
            raise Conflict(
                f"message {message.id} is still being generated; cancel it first",
                code="message_streaming",
            )

    async def _start_turn(
        self,
        tenant: str,
        conversation_id: str,
        user_content: str | None,
        options: TurnOptions,
        *,
        supersede_from: int | None = None,
    ) -> PostedMessage:
        self.registry.ensure_accepting()  # before anything is stored: a refusal leaves no trace
        params = options.params or {}

        def choose_model(conversation: Conversation) -> str:
            model = options.model or conversation.model or self.default_model
            self.check_model(model)  # inside the transaction: a refusal stores nothing
            return model

        turn = await self.repo.add_turn(
            tenant=tenant,
            conversation_id=conversation_id,
            user_content=user_content,
            choose_model=choose_model,
            params=params,
            supersede_from=supersede_from,
        )
        user, assistant = turn.user, turn.assistant
        if supersede_from is not None:
            self.registry.supersede(conversation_id, supersede_from)
            self.peers.supersede(turn.replaced_running)
        history = turn.history + ([user] if user is not None else [])
        body = build_upstream_body(
            turn.conversation, history, assistant.model or "", params, self.context_tokens
        )
        self.registry.launch(assistant, body, cancel_on_disconnect=options.cancel_on_disconnect)
        return PostedMessage(user=user, assistant=assistant)


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate: ~4 characters per token, plus per-message overhead.

    Close enough for English with OpenAI's tokenizers and deliberately on the safe side
    for budgeting; it never ends up in `usage`, which only holds what the upstream said.
    """
    return len(text) // 4 + 4


def context_entry(message: Message) -> dict[str, Any] | None:
    if message.role == "assistant":
        if message.status is Status.STREAMING:
            return None  # another turn still generating: not part of this context
        if not message.content and not message.tool_calls:
            return None  # nothing was generated: it would only confuse the model
    # Content parts (images, files) and tool fields recorded from OpenAI-style requests
    # live in `params`; the upstream needs them back as they were.
    parts = message.params.get("content") if message.role != "assistant" else None
    content = parts if parts is not None else message.content
    entry: dict[str, Any] = {"role": message.role, "content": content}
    if message.role == "assistant" and message.tool_calls:
        entry["tool_calls"] = message.tool_calls
    if message.role == "tool":
        for key in ("tool_call_id", "name"):
            if key in message.params:
                entry[key] = message.params[key]
    return entry


def build_upstream_body(
    conversation: Conversation,
    history: list[Message],
    model: str,
    params: dict[str, Any],
    context_tokens: int = 0,
) -> dict[str, Any]:
    """The chat completion request: the system prompt, then the most recent turns that fit.

    `history` ends with the message to answer, which is always sent. Older messages are
    added newest first while their estimated tokens fit `context_tokens` (0: no limit);
    whole messages only, and the kept ones stay in their original order.
    """
    system: list[dict[str, Any]] = []
    budget = context_tokens if context_tokens > 0 else None
    if conversation.system_prompt:
        system.append({"role": "system", "content": conversation.system_prompt})
        if budget is not None:
            budget -= estimate_tokens(conversation.system_prompt)
    entries = [e for e in (context_entry(m) for m in history) if e is not None]
    kept: list[dict[str, Any]] = []
    for index, entry in enumerate(reversed(entries)):
        cost = estimate_tokens(str(entry["content"]))
        if budget is not None and index > 0 and cost > budget:
            break
        kept.append(entry)
        if budget is not None:
            budget -= cost
    kept.reverse()
    return {**params, "model": model, "messages": system + kept}
