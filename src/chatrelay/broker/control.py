"""The control channel between instances: commands to the one that runs a generation.

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

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Literal, Protocol, TypedDict

import redis.asyncio as redis

from chatrelay.broker.base import BrokerOperation, ErrorHook, ignore_error

log = logging.getLogger("chatrelay.control")

_SUBSCRIBE_WAIT = 2.0  # seconds start() waits for the first subscription
_RETRY_FIRST_DELAY = 0.1
_RETRY_MAX_DELAY = 5.0
_NOTICE_SEND_TIMEOUT = 5.0  # a Redis that hangs must not hold up every later notice
_MAX_QUEUED_NOTICES = 10_000  # beyond this (Redis down for long) notices are dropped


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


class RedisControlBus:
    """The control channel over Redis pub/sub (see the module docstring)."""

    def __init__(
        self, url: str, *, prefix: str, instance_id: str, on_error: ErrorHook = ignore_error
    ) -> None:
        self._on_error = on_error
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=None)
        self._prefix = prefix
        self._instance_id = instance_id
        self._handler: Handler | None = None
        self._listener: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._notices: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(_MAX_QUEUED_NOTICES)
        self._pending: dict[str, asyncio.Future[CancelReply]] = {}
        self._handling: set[asyncio.Task[None]] = set()
        self._subscribed = asyncio.Event()

    @property
    def instance_id(self) -> str:
        return self._instance_id

    def _channel(self, instance_id: str) -> str:
        return f"{self._prefix}control:{instance_id}"

    async def start(self, handler: Handler) -> None:
        """Subscribe before the service takes requests; if Redis does not answer yet, go
        on (and keep trying in the background) rather than refuse to start."""
        self._handler = handler
        self._listener = asyncio.create_task(self._listen(), name="control listener")
        self._sender = asyncio.create_task(self._send_notices(), name="control sender")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_SUBSCRIBE_WAIT):
                await self._subscribed.wait()
        if not self._subscribed.is_set():
            log.warning("control channel: Redis not answering yet; retrying in the background")

    async def request(
        self, instance_id: str, command: Command, *, reply_within: float
    ) -> CancelReply | None:
        request_id = secrets.token_hex(8)
        reply: asyncio.Future[CancelReply] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        envelope = {"command": command, "request_id": request_id, "reply_to": self._instance_id}
        try:
            async with asyncio.timeout(reply_within):
                receivers = await self._redis.publish(
                    self._channel(instance_id), json.dumps(envelope)
                )
                if receivers == 0:
                    return None  # nobody listens on that channel: the owner is gone
                answer: CancelReply = await reply
                return answer
        except TimeoutError:
            return None
        except redis.RedisError as exc:
            self._on_error(BrokerOperation.CONTROL)
            log.warning("control channel: request to %s failed: %s", instance_id, exc)
            return None
        finally:
            self._pending.pop(request_id, None)

    async def listening(self, instance_ids: Collection[str]) -> set[str] | None:
        """`PUBSUB NUMSUB` of their channels. Redis drops a subscription when its
        connection closes, so a process that died listens nowhere, while one that is alive
        but stalled (a starved event loop, a database queue) still does."""
        ids = list(instance_ids)
        if not ids:
            return set()
        try:
            async with asyncio.timeout(_NOTICE_SEND_TIMEOUT):
                counts = await self._redis.pubsub_numsub(*(self._channel(i) for i in ids))
        except (redis.RedisError, OSError, TimeoutError):
            self._on_error(BrokerOperation.CONTROL)
            return None
        listened = {
            (c.decode() if isinstance(c, bytes) else str(c)) for c, n in counts if int(n) > 0
        }
        return {i for i in ids if self._channel(i) in listened}

    def notify(self, instance_id: str, command: Command) -> None:
        envelope = json.dumps({"command": command}).encode()
        try:
            self._notices.put_nowait((self._channel(instance_id), envelope))
        except asyncio.QueueFull:
            self._on_error(BrokerOperation.CONTROL)
            log.warning("control channel: notice to %s dropped (Redis backlog)", instance_id)

    async def aclose(self) -> None:
        for task in (self._listener, self._sender, *self._handling):
            if task is not None:
                task.cancel()
        tasks = [t for t in (self._listener, self._sender, *self._handling) if t is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._redis.aclose()

    # -- background tasks ----------------------------------------------------------------

    async def _send_notices(self) -> None:
        while True:
            channel, envelope = await self._notices.get()
            try:
                async with asyncio.timeout(_NOTICE_SEND_TIMEOUT):
                    await self._redis.publish(channel, envelope)
            except (redis.RedisError, TimeoutError) as exc:
                self._on_error(BrokerOperation.CONTROL)
                log.warning("control channel: notice to %s lost: %r", channel, exc)

    async def _listen(self) -> None:
        delay = _RETRY_FIRST_DELAY
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel(self._instance_id))
                self._subscribed.set()
                delay = _RETRY_FIRST_DELAY
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message.get("type") == "message":
                        self._receive(message["data"])
            except Exception as exc:  # Redis gone or restarted: resubscribe, never give up
                self._subscribed.clear()
                self._on_error(BrokerOperation.CONTROL)
                log.warning("control channel: %s; resubscribing in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_DELAY)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _receive(self, data: bytes) -> None:
        try:
            envelope = json.loads(data)
        except ValueError:
            log.warning("control channel: ignored a message that is not JSON")
            return
        if not isinstance(envelope, dict):
            return
        if "reply" in envelope:
            future = self._pending.get(str(envelope.get("request_id")))
            if future is not None and not future.done():
                future.set_result(envelope["reply"])
            return
        command = envelope.get("command")
        if not isinstance(command, dict) or self._handler is None:
            return
        task = asyncio.create_task(self._handle(command, envelope), name="control command")  # type: ignore[arg-type]
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)

    async def _handle(self, command: Command, envelope: dict[str, Any]) -> None:
        assert self._handler is not None
        try:
            reply = await self._handler(command)
        except Exception:
            log.exception("control channel: command %s failed", command.get("kind"))
            return
        reply_to, request_id = envelope.get("reply_to"), envelope.get("request_id")
        if reply is None or not isinstance(reply_to, str) or request_id is None:
            return
        answer = json.dumps({"reply": reply, "request_id": request_id})
        try:
            await self._redis.publish(self._channel(reply_to), answer)
        except redis.RedisError as exc:
            self._on_error(BrokerOperation.CONTROL)
            log.warning("control channel: reply to %s lost: %s", reply_to, exc)
