"""The control channel between instances: commands to the one that runs a generation.

This module holds the seam (`ControlBus`) and its commands; `redis_control.py` the Redis
implementation, imported only when `REDIS_URL` is set.

Design: Redis pub/sub, one channel per instance (`{prefix}control:{instance_id}`), where
the instance id is random per process and recorded with every message it generates
(`messages.owner`). A sender therefore addresses the owner directly instead of
broadcasting: no other instance wakes up for a cancel, and `PUBLISH` answers how many
listeners got the command, so a dead owner (no listener) is known at once instead of
after a timeout. Pub/sub is at-most-once, which suits commands that are only meaningful
to a live listener; what must survive (the record, the lease) is in the database.

A request (cancel) carries a request id and the sender's id; the owner publishes the
reply to the sender's channel. A notice (delete, supersede, watchers) has no reply.
Notices from one process are sent in order by one task, so a `watcher_left` never
overtakes its `watcher_joined`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any, Literal, Protocol, TypedDict


class CancelCommand(TypedDict):
    kind: Literal["cancel"]
    tenant: str
    message_id: str


class ForgetConversationCommand(TypedDict):
    kind: Literal["forget_conversation"]
    conversation_id: str


class SupersedeCommand(TypedDict):
    kind: Literal["supersede"]
    message_ids: list[str]


class WatcherJoinedCommand(TypedDict):
    kind: Literal["watcher_joined"]
    message_id: str
    watch_id: str  # one subscriber's watch, so a `left` only undoes its own `joined`


class WatcherLeftCommand(TypedDict):
    kind: Literal["watcher_left"]
    message_id: str
    watch_id: str
    finished: bool  # the subscriber saw the terminal event


Command = (
    CancelCommand
    | ForgetConversationCommand
    | SupersedeCommand
    | WatcherJoinedCommand
    | WatcherLeftCommand
)


class CancelReply(TypedDict):
    """`cancelled`: stopped, `message` is the cancelled message (a storage record);
    `finished`: it had already ended (`message` as it ended); `not_running`: not here."""

    outcome: Literal["cancelled", "finished", "not_running"]
    message: dict[str, Any] | None


Handler = Callable[[Command], Awaitable[CancelReply | None]]


class ControlBus(Protocol):
    """Sends commands to one instance by id and serves the commands sent to this one."""

    @property
    def instance_id(self) -> str: ...

    async def start(self, handler: Handler) -> None:
        """Listen for commands to this instance; `handler` answers requests."""
        ...

    async def request(
        self, instance_id: str, command: Command, *, reply_within: float
    ) -> CancelReply | None:
        """Send and wait for the reply; None when no listener got it or none answered in time."""
        ...

    def notify(self, instance_id: str, command: Command) -> None:
        """Send without a reply, in order with this process's other notices."""
        ...

    async def listening(self, instance_ids: Collection[str]) -> set[str] | None:
        """Which of these instances listen on the bus now; None when the bus cannot say."""
        ...

    async def aclose(self) -> None: ...
