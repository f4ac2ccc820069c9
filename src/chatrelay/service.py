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
from chatrelay.generation.runner import Generation
from chatrelay.models import Conversation, Message, Status
from chatrelay.slots import Slot
from chatrelay.storage.repository import HistoryOffer, Repository, Turn


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
        self, tenant: str, conversation_id: str, *, limit: int
    ) -> tuple[Conversation, list[Message], bool]:
        """The conversation and its newest `limit` messages in order; True when older ones
        were left out (the whole history pages through `messages_page`)."""
        conversation = await self.repo.get_conversation(tenant, conversation_id)
        messages, truncated = await self.repo.latest_messages(conversation_id, limit=limit)
        return conversation, [self.registry.live_view(m) for m in messages], truncated

    async def messages_page(
        self, tenant: str, conversation_id: str, *, after_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        """Up to `limit` of the conversation's messages after `after_seq`, in order, and
        whether more follow."""
        await self.repo.get_conversation(tenant, conversation_id)  # the tenant's, or 404
        messages, more = await self.repo.messages_page(
            conversation_id, after_seq=after_seq, limit=limit
        )
        return [self.registry.live_view(m) for m in messages], more

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
        # Before anything is stored, so a refusal (draining, 429) leaves no trace.
        with self.registry.reserve(tenant) as slot:
            return await self._store_and_launch(
                tenant, conversation_id, user_content, options, supersede_from, slot
            )

    async def _store_and_launch(
        self,
        tenant: str,
        conversation_id: str,
        user_content: str | None,
        options: TurnOptions,
        supersede_from: int | None,
        slot: Slot,
    ) -> PostedMessage:
        params = options.params or {}

        def choose_model(conversation: Conversation) -> str:
            model = options.model or conversation.model or self.default_model
            self.check_model(model)  # inside the transaction: a refusal stores nothing
            return model

        selections: list[ContextSelection] = []

        def select_history(conversation: Conversation) -> HistoryOffer:
            selections.append(ContextSelection(conversation, self.context_tokens))
            return selections[-1].offer

        if supersede_from is None:
            return await self._store_launched(
                tenant,
                conversation_id,
                user_content,
                options,
                choose_model,
                select_history,
                selections,
                slot,
            )
        turn = await self.repo.add_turn(
            tenant=tenant,
            conversation_id=conversation_id,
            user_content=user_content,
            choose_model=choose_model,
            params=params,
            supersede_from=supersede_from,
            history=select_history,
        )
        user, assistant = turn.user, turn.assistant
        self.registry.supersede(conversation_id, supersede_from)
        self.peers.supersede(turn.replaced_running)
        body = selections[-1].upstream_body(assistant.model or "", params)
        self.registry.launch(
            assistant, body, cancel_on_disconnect=options.cancel_on_disconnect, slot=slot
        )
        return PostedMessage(user=user, assistant=assistant)

    async def _store_launched(
        self,
        tenant: str,
        conversation_id: str,
        user_content: str | None,
        options: TurnOptions,
        choose_model: Callable[[Conversation], str],
        select_history: Callable[[Conversation], HistoryOffer],
        selections: list[ContextSelection],
        slot: Slot,
    ) -> PostedMessage:
        """A new turn whose generation starts inside the transaction, once the history is
        read and before the messages are written: the upstream works on the request while
        they are (`Generation`, gated). Not for an edit or regenerate, which stop the
        running generations of the turns they replace once the transaction is done."""
        params = options.params or {}
        launched: list[Generation] = []

        def launch(turn: Turn) -> None:
            assistant = turn.assistant
            body = selections[-1].upstream_body(assistant.model or "", params)
            launched.append(
                self.registry.launch(
                    assistant,
                    body,
                    cancel_on_disconnect=options.cancel_on_disconnect,
                    slot=slot,
                    gated=True,
                )
            )

        try:
            turn = await self.repo.add_turn(
                tenant=tenant,
                conversation_id=conversation_id,
                user_content=user_content,
                choose_model=choose_model,
                params=params,
                history=select_history,
                prepared=launch,
            )
        except BaseException:
            for generation in launched:
                generation.abandon()
            raise
        launched[0].recorded()
        return PostedMessage(user=turn.user, assistant=turn.assistant)


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


class ContextSelection:
    """The upstream context, chosen from messages offered newest first.

    The system prompt always goes, and so does the first message offered that has
    something to send (the one being answered). Older ones are kept while their estimated
    tokens fit `context_tokens` (0: no limit); whole messages only, and the first that does
    not fit ends the selection. `offer` says when it has ended, so the caller reads no more
    history than the budget can use.
    """

    def __init__(self, conversation: Conversation, context_tokens: int = 0) -> None:
        self._system: list[dict[str, Any]] = []
        self._budget = context_tokens if context_tokens > 0 else None
        if conversation.system_prompt:
            self._system.append({"role": "system", "content": conversation.system_prompt})
            if self._budget is not None:
                self._budget -= estimate_tokens(conversation.system_prompt)
        self._kept: list[dict[str, Any]] = []  # newest first
        self._full = False

    def offer(self, message: Message) -> bool:
        """Consider the next older message; False once nothing older can be kept."""
        if self._full:
            return False
        entry = context_entry(message)
        if entry is None:
            return True
        cost = estimate_tokens(str(entry["content"]))
        if self._budget is not None and self._kept and cost > self._budget:
            self._full = True
            return False
        self._kept.append(entry)
        if self._budget is not None:
            self._budget -= cost
        return True

    def upstream_body(self, model: str, params: dict[str, Any]) -> dict[str, Any]:
        """The chat completion request: `params`, the model, the selected messages in order."""
        return {**params, "model": model, "messages": self._system + self._kept[::-1]}


def build_upstream_body(
    conversation: Conversation,
    history: list[Message],
    model: str,
    params: dict[str, Any],
    context_tokens: int = 0,
) -> dict[str, Any]:
    """The chat completion request for `history`, which ends with the message to answer
    (see `ContextSelection` for what is kept)."""
    context = ContextSelection(conversation, context_tokens)
    for message in reversed(history):
        if not context.offer(message):
            break
    return context.upstream_body(model, params)
