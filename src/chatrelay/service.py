"""The core's front door: what the HTTP edge asks for, in plain data.

Builds upstream requests from conversations and hands them to the generation registry.
Knows nothing of HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatrelay.errors import ShuttingDown
from chatrelay.generation.registry import GenerationRegistry
from chatrelay.models import Conversation, Message, Status
from chatrelay.storage.repository import Repository


@dataclass(frozen=True)
class PostedMessage:
    user: Message
    assistant: Message


class ChatService:
    def __init__(self, repo: Repository, registry: GenerationRegistry, default_model: str) -> None:
        self.repo = repo
        self.registry = registry
        self.default_model = default_model

    async def create_conversation(
        self,
        tenant: str,
        *,
        title: str | None = None,
        system_prompt: str | None = None,
        model: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Conversation:
        return await self.repo.create_conversation(
            tenant=tenant,
            title=title,
            system_prompt=system_prompt,
            model=model,
            metadata=metadata or {},
        )

    async def conversation_with_messages(
        self, tenant: str, conversation_id: str
    ) -> tuple[Conversation, list[Message]]:
        conversation = await self.repo.get_conversation(tenant, conversation_id)
        messages = await self.repo.list_messages(conversation_id)
        return conversation, [self._live_view(m) for m in messages]

    async def delete_conversation(self, tenant: str, conversation_id: str) -> None:
        await self.repo.delete_conversation(tenant, conversation_id)
        for generation in list(self.registry.generations.values()):
            if generation.message.conversation_id == conversation_id:
                generation.stop("deleted")

    async def get_message(self, tenant: str, message_id: str) -> Message:
        return self._live_view(await self.repo.get_message(tenant, message_id))

    def _live_view(self, message: Message) -> Message:
        """A streaming message as generated so far, not as last checkpointed."""
        if message.status is Status.STREAMING:
            generation = self.registry.generations.get(message.id)
            if generation is not None:
                return generation.final or generation.snapshot()
        return message

    async def post_message(
        self,
        tenant: str,
        conversation_id: str,
        *,
        content: str,
        model: str | None = None,
        params: dict[str, Any] | None = None,
        cancel_on_disconnect: bool = False,
    ) -> PostedMessage:
        if self.registry.draining:
            # Checked before anything is stored, so a refused post leaves no trace.
            raise ShuttingDown("the service is shutting down; try again shortly")
        conversation = await self.repo.get_conversation(tenant, conversation_id)
        chosen_model = model or conversation.model or self.default_model
        history = await self.repo.list_messages(conversation_id)
        user, assistant = await self.repo.add_exchange(
            tenant=tenant,
            conversation_id=conversation_id,
            user_content=content,
            model=chosen_model,
            params=params or {},
        )
        body = build_upstream_body(conversation, history, user, chosen_model, params or {})
        self.registry.launch(assistant, body, cancel_on_disconnect=cancel_on_disconnect)
        return PostedMessage(user=user, assistant=assistant)


def build_upstream_body(
    conversation: Conversation,
    history: list[Message],
    new_user: Message,
    model: str,
    params: dict[str, Any],
) -> dict[str, Any]:
    """The chat completion request: system prompt, prior turns in order, the new message."""
    messages: list[dict[str, Any]] = []
    if conversation.system_prompt:
        messages.append({"role": "system", "content": conversation.system_prompt})
    for message in history:
        if message.role == "assistant" and not message.content and not message.tool_calls:
            continue  # nothing was generated: it would only confuse the model
        entry: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.role == "assistant" and message.tool_calls:
            entry["tool_calls"] = message.tool_calls
        messages.append(entry)
    messages.append({"role": "user", "content": new_user.content})
    return {**params, "model": model, "messages": messages}
