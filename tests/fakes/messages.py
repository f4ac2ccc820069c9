"""A streaming assistant reply as a test's starting point, so tests that need one do not
each spell out every field of `Message`."""

from __future__ import annotations

from typing import Any

from chatrelay.models import Message, Status


def streaming_reply(**changes: Any) -> Message:
    """An assistant message, `streaming`, second in its conversation; `changes` override."""
    base = Message(
        id="msg_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        conversation_id="conv_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        tenant="t",
        seq=2,
        role="assistant",
        content="",
        status=Status.STREAMING,
        model="m",
        created_at="2026-01-01T00:00:00.000Z",
    )
    return base.evolve(**changes) if changes else base
