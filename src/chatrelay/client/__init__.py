"""chatrelay's official Python client: `Client` and `AsyncClient`.

`follow(message_id)` yields a message's events and reconnects by itself with the last
event id, so a caller sees each delta exactly once across dropped connections and service
restarts. This package is an edge of its own: it talks to the service over HTTP only and
imports nothing of it but the SSE parser. docs/client.md has examples.
"""

from chatrelay.client.async_ import AsyncClient
from chatrelay.client.calls import ConversationPage, PostedMessage
from chatrelay.client.errors import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    ChatRelayAPIError,
    ChatRelayClientError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    StreamInterruptedError,
    UnavailableError,
    ValidationError,
)
from chatrelay.client.events import Event, EventKind
from chatrelay.client.sync import Client

__all__ = [
    "APIConnectionError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "ChatRelayAPIError",
    "ChatRelayClientError",
    "Client",
    "ConflictError",
    "ConversationPage",
    "Event",
    "EventKind",
    "NotFoundError",
    "PayloadTooLargeError",
    "PostedMessage",
    "ProtocolError",
    "RateLimitedError",
    "ServerError",
    "StreamInterruptedError",
    "UnavailableError",
    "ValidationError",
]
