"""The service's objects as plain data, and their API shape (the README's "API" section)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, NamedTuple, NotRequired, TypedDict


def scrub_nul(text: str) -> str:
    """PostgreSQL text cannot hold NUL, so it becomes U+FFFD — on every backend alike."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


class Status(StrEnum):
    """Lifecycle of a message. User and system messages are born `completed`."""

    STREAMING = "streaming"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def is_terminal(self) -> bool:
        return self is not Status.STREAMING


class ErrorPayload(TypedDict):
    """Why a message failed: a stable `code` clients branch on and a human `message`."""

    code: str
    message: str
    retry_after: NotRequired[float]  # seconds, when the upstream said how long to wait


class PieceKind(StrEnum):
    """What a streamed piece was; stored in `Message.pieces` as `(kind, number)`.

    For `CONTENT`, `REASONING` and `TOOL_ARGUMENTS` the number is the piece's length. For
    `TOOL_CALL` it is a tool call's position in `tool_calls`: the first such piece of a
    position is the call starting (a `tool_call` event); a later one says that the
    argument pieces that follow belong to that call again (no event), so interleaved
    calls replay exactly with two-element pieces.
    """

    CONTENT = "c"
    REASONING = "r"
    TOOL_CALL = "t"
    TOOL_ARGUMENTS = "a"


@dataclass(frozen=True, slots=True)
class ToolCallHead:
    """What the `tool_call` event that starts a call says about it (its arguments follow)."""

    id: str | None
    type: str
    name: str


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    tenant: str
    title: str | None
    system_prompt: str | None
    model: str | None
    metadata: dict[str, Any]
    created_at: str
    updated_at: str

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "system_prompt": self.system_prompt,
            "model": self.model,
            "metadata": self.metadata,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


class PartialText(NamedTuple):
    """What a checkpoint saves of a message still streaming: the text so far, the tool
    calls as their events told them, the pieces. A tuple, not a `Message`: a checkpoint
    writes every running message each interval, and evolving a whole `Message` for it
    was a third of the checkpoint's CPU with 2,000 streams held (docs/performance.md)."""

    id: str
    content: str
    reasoning: str | None
    tool_calls: list[dict[str, Any]] | None
    pieces: list[tuple[PieceKind, int]]


@dataclass(frozen=True, slots=True)
class Message:
    """One message. `pieces` records how the content was streamed, so events can be replayed.

    `pieces` is the ordered list of streamed pieces as `(kind, number)` (`PieceKind`);
    lengths are in Python characters. Together with `content`, `reasoning` and
    `tool_calls` it reproduces every `delta`/`reasoning`/`tool_call` event exactly.
    """

    id: str
    conversation_id: str
    tenant: str
    seq: int
    role: str
    content: str
    status: Status
    model: str | None
    created_at: str
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: ErrorPayload | None = None
    completed_at: str | None = None
    reasoning: str | None = None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    pieces: list[tuple[PieceKind, int]] = field(default_factory=list)
    superseded_by: str | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "role": self.role,
            "content": self.content,
            "status": str(self.status),
            "finish_reason": self.finish_reason,
            "model": self.model,
            "usage": self.usage,
            "error": self.error,
            "reasoning": self.reasoning,
            "refusal": self.refusal,
            "tool_calls": self.tool_calls,
            "superseded_by": self.superseded_by,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
        }

    def evolve(self, **changes: Any) -> Message:
        return replace(self, **changes)
