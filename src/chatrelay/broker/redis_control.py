"""The control channel over Redis pub/sub: `RedisControlBus`, the `ControlBus` of
instances that share a Redis (`control.py` has the design and the commands)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Collection
from typing import Any

import redis.asyncio as redis

from chatrelay.broker.base import BrokerOperation, ErrorHook, ignore_error
from chatrelay.broker.control import CancelReply, Command, Handler

log = logging.getLogger("chatrelay.control")

_SUBSCRIBE_WAIT = 2.0  # seconds start() waits for the first subscription
_RETRY_FIRST_DELAY = 0.1
_RETRY_MAX_DELAY = 5.0
_NOTICE_SEND_TIMEOUT = 5.0  # a Redis that hangs must not hold up every later notice
_MAX_QUEUED_NOTICES = 10_000  # beyond this (Redis down for long) notices are dropped


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
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]

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
