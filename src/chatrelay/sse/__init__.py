"""Server-Sent Events: our own incremental parser for upstream bytes."""

from chatrelay.sse.event import SSEEvent

__all__ = ["SSEEvent"]
