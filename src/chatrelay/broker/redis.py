"""The Redis broker: the owner serves from memory and mirrors every event to Redis.

`open` gives the generating instance an `OwnedTopic`, a `MemoryTopic` whose publish also
marks it for the flusher: its own subscribers read memory as with the in-process broker
(no Redis round trip, no added latency), and publishing never waits on Redis. One
flusher task per broker writes everything published since its last round trip in one
pipeline, one script call per message (`_APPEND`), so the events of one upstream read go
in one round trip. Entry ids are `<seq>-0` (`codec.py`): the stream's ids are the SSE
cursors. The script appends only ids above the stream's newest, so a re-send after a
failure is idempotent; when the stream holds less than the owner thinks (Redis restarted,
the key expired), it says how much, and the owner re-sends the rest from memory. The
stream expires `finished_ttl` s after the terminal event (`live_ttl` s after any event
while it streams, so a dead owner's stream goes too) and is capped at `max_events`.

`find` on another instance loads the stream and follows it (`remote.RemoteTopic`). Redis
being down never stops a generation or its local subscribers: the flusher keeps the
backlog and retries with backoff, `check` (readiness) says why, and `find` returns None
so subscribers fall back to the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from chatrelay.broker.base import BrokerOperation, ErrorHook, ignore_error
from chatrelay.broker.codec import decode_entries, encode_event
from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.broker.memory import MemoryTopic
from chatrelay.broker.remote import RemoteTopic
from chatrelay.models import Message, ToolCallHead

log = logging.getLogger("chatrelay.broker")

# KEYS[1] the stream; ARGV: first seq of the batch, EXPIRE seconds, MAXLEN, then a
# field and a value per event. Appends the events above the stream's newest id and
# returns the newest seq the stream then holds — below first-1 means a gap: nothing is
# written and the caller re-sends from there.
_APPEND = """
local top = 0
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if newest[1] then top = tonumber(string.match(newest[1][1], '^%d+')) end
local first = tonumber(ARGV[1])
if top < first - 1 then return top end
local seq = first
for i = 4, #ARGV, 2 do
  if seq > top then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], seq .. '-0', ARGV[i], ARGV[i + 1])
  end
  seq = seq + 1
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
if seq - 1 > top then return seq - 1 end
return top
"""
_APPEND_SHA = hashlib.sha1(_APPEND.encode()).hexdigest()

# KEYS[1] the stream; ARGV: seq, field, value, EXPIRE seconds. The end of a message that
# someone other than its generation closed (the lease sweeper): appended only to a stream
# that exists and has not ended, atomically, since its owner may be alive and only cut
# off from the database, publishing its own end at the same time. Returns 1 if appended.
_END = """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if not newest[1] then return 0 end
local kind = newest[1][2][1]
if kind == 'done' or kind == 'error' then return 0 end
local top = tonumber(string.match(newest[1][1], '^%d+'))
if top >= tonumber(ARGV[1]) then return 0 end
redis.call('XADD', KEYS[1], ARGV[1] .. '-0', ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

_FAILURES = (RedisError, OSError, TimeoutError)
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 2.0
_COMMAND_TIMEOUT = 2.0  # connect and command timeout of the flusher and `find`
_QUIET_AFTER_FAILURE = 1.0  # `find` does not try Redis again within this after a failure
_CATCH_UP = 1.0  # how long `find` waits for a cursor just published elsewhere
_READ_BLOCK = 1.0  # XREAD BLOCK of a remote reader (the idle check runs this often)
_READER_IDLE = 10.0  # a remote reader with no subscriber for this long stops
_MAX_PER_CALL = 5000  # events per script call: a long backlog goes in several, not one huge one


def redacted_url(url: str) -> str:
    """`scheme://host:port/db` of a Redis URL: never its user or password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class OwnedTopic(MemoryTopic):
    """A generation's topic on its own instance: memory first, Redis in the background."""

    __slots__ = ("_broker", "sent")

    def __init__(self, message_id: str, broker: RedisBroker) -> None:
        super().__init__(message_id)
        self._broker = broker
        self.sent = 0  # the newest seq Redis is known to hold

    def publish(
        self,
        kind: EventKind,
        *,
        text: str = "",
        message: Message | None = None,
        index: int = 0,
        call: ToolCallHead | None = None,
    ) -> LogEvent:
        event = super().publish(kind, text=text, message=message, index=index, call=call)
        self._broker.mark(self)
        return event

    def unsent(self, limit: int) -> list[LogEvent]:
        return self._events[self.sent : self.sent + limit]


class RedisBroker:
    """Topics of this instance's generations, mirrored to Redis; others' read from Redis."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "chatrelay:",
        finished_ttl: float = 300.0,
        live_ttl: float = 3600.0,
        max_events: int = 200_000,
        max_readers: int = 1000,
        on_error: ErrorHook = ignore_error,
    ) -> None:
        self._url = url
        self._on_error = on_error
        self._password = urlsplit(url).password
        self._prefix = prefix
        self._finished_ttl = max(1, int(finished_ttl))
        self._live_ttl = max(1, int(live_ttl))
        self._max_events = max_events
        self._max_readers = max_readers  # each holds one Redis connection
        no_retry = Retry(NoBackoff(), 0)  # the flusher retries itself, with backoff
        self._client = Redis.from_url(
            url,
            socket_timeout=_COMMAND_TIMEOUT,
            socket_connect_timeout=_COMMAND_TIMEOUT,
            retry=no_retry,
        )
        # Blocking reads hold their connection, so they get a pool of their own.
        self._readers_client = Redis.from_url(
            url,
            socket_timeout=_READ_BLOCK + _COMMAND_TIMEOUT,
            socket_connect_timeout=_COMMAND_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )
        self._owned: dict[str, OwnedTopic] = {}
        self._remote: dict[str, RemoteTopic] = {}
        self._dirty: dict[str, OwnedTopic] = {}
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._drained: asyncio.Event | None = None  # set when the backlog is empty (closing)
        self._problem: str | None = None
        self._failed_at: float | None = None
        self.flushes = 0  # round trips that wrote events (for tests and diagnosis)

    @property
    def description(self) -> str:
        return f"redis broker at {redacted_url(self._url)}, keys {self._prefix}events:*"

    def key(self, message_id: str) -> str:
        return f"{self._prefix}events:{message_id}"

    # -- the owner's side --------------------------------------------------------------

    def open(self, message_id: str) -> OwnedTopic:
        topic = OwnedTopic(message_id, self)
        self._owned[message_id] = topic
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush_forever(), name="redis broker flusher"
            )
        return topic

    def mark(self, topic: OwnedTopic) -> None:
        """`topic` has events Redis lacks (O(1): called by every publish)."""
        self._dirty[topic.message_id] = topic
        self._wake.set()

    @property
    def backlog(self) -> int:
        """Events published here that Redis does not hold yet."""
        return sum(t.last_seq - t.sent for t in self._owned.values())

    async def _flush_forever(self) -> None:
        with contextlib.suppress(*_FAILURES):
            await self._client.script_load(_APPEND)  # else the first flush finds NOSCRIPT
        backoff = 0.0
        while True:
            if not self._dirty:
                if self._drained is not None:
                    self._drained.set()
                self._wake.clear()
                await self._wake.wait()
            topics = list(self._dirty.values())
            self._dirty.clear()
            failure: BaseException | None
            try:
                failure = await self._flush(topics)
            except _FAILURES as exc:
                failure = exc
            except Exception as exc:  # a bug must not end mirroring for good
                log.exception("redis broker: flushing failed unexpectedly")
                failure = exc
            if failure is None:
                backoff = 0.0
                self._note_success()
                continue
            for topic in topics:
                if topic.message_id in self._owned:
                    self._dirty.setdefault(topic.message_id, topic)
            self._note_failure("writing events", failure, BrokerOperation.WRITE)
            backoff = min(_BACKOFF_MAX, max(_BACKOFF_FIRST, backoff * 2))
            await asyncio.sleep(backoff)

    async def _flush(self, topics: Sequence[OwnedTopic]) -> RedisError | None:
        """One round trip for every topic's unsent events; the topics not fully written
        are marked again. Returns the error to back off on, if a command failed."""
        sent: list[OwnedTopic] = []
        async with self._client.pipeline(transaction=False) as pipe:
            for topic in topics:
                events = topic.unsent(_MAX_PER_CALL)
                if not events:
                    continue
                ttl = self._finished_ttl if events[-1].is_terminal else self._live_ttl
                args: list[Any] = [topic.sent + 1, ttl, self._max_events]
                for event in events:
                    args.extend(encode_event(event))
                pipe.evalsha(_APPEND_SHA, 1, self.key(topic.message_id), *args)
                sent.append(topic)
            if not sent:
                return None
            results = await pipe.execute(raise_on_error=False)
        self.flushes += 1
        failure: RedisError | None = None
        script_missing = False
        for topic, result in zip(sent, results, strict=True):
            if isinstance(result, NoScriptError):
                script_missing = True  # Redis restarted (or its scripts were flushed)
            elif isinstance(result, Exception):
                failure = result if isinstance(result, RedisError) else RedisError(str(result))
            else:
                topic.sent = min(int(result), topic.last_seq)
            if topic.sent < topic.last_seq and topic.message_id in self._owned:
                self.mark(topic)
        if script_missing:
            await self._client.script_load(_APPEND)
        return failure

    def _note_failure(self, what: str, exc: BaseException, operation: BrokerOperation) -> None:
        self._on_error(operation)
        reason = self._scrub(f"{what}: {type(exc).__name__}: {exc}")
        if self._problem is None:
            log.warning("redis broker unavailable (%s); generations go on, events kept", reason)
        self._problem = reason
        self._failed_at = asyncio.get_running_loop().time()

    def _note_success(self) -> None:
        if self._problem is not None:
            log.warning("redis broker available again")
        self._problem = None
        self._failed_at = None

    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "[redacted]")
        return text.replace(self._url, redacted_url(self._url))

    async def publish_external_end(self, event: LogEvent) -> None:
        """Subscribers of the message on every instance end with `event` (see `_END`); a
        message whose stream is gone or already ended is left alone."""
        field, value = encode_event(event)
        await self._client.eval(
            _END,
            1,
            self.key(event.final.id),
            event.seq,
            field,
            value,
            int(self._finished_ttl),
        )

    # -- another instance's side ---------------------------------------------------------

    async def find(
        self, message_id: str, *, after: int | None = None
    ) -> MemoryTopic | RemoteTopic | None:
        owned = self._owned.get(message_id)
        if owned is not None:
            return owned
        topic = self._remote.get(message_id)
        if topic is None or topic.failed:
            topic = await self._load(message_id)
            if topic is None:
                return None
        topic.touch()
        if after is not None and after > topic.last_seq and not topic.closed:
            await topic.wait_for(after, within=_CATCH_UP)
        return topic

    async def _load(self, message_id: str) -> RemoteTopic | None:
        """The message's stream as a followed topic, if Redis has all of it."""
        loop = asyncio.get_running_loop()
        if self._failed_at is not None and loop.time() - self._failed_at < _QUIET_AFTER_FAILURE:
            return None  # Redis failed a moment ago: the database answers without waiting
        key = self.key(message_id)
        try:
            entries = await self._client.xrange(key, "-", "+")
        except _FAILURES as exc:
            self._note_failure("reading events", exc, BrokerOperation.READ)
            return None
        if not self._dirty:
            self._note_success()  # (with a backlog, the flusher says when it is written)
        if not entries:
            return None
        if len(self._remote) >= self._max_readers:
            log.info(
                "redis broker: %d messages followed already; %s polled",
                len(self._remote),
                message_id,
            )
            return None
        try:
            events = decode_entries(entries)
        except ValueError as exc:
            log.warning("redis broker: stream of %s unreadable (%s)", message_id, exc)
            return None
        if events[0].seq != 1 or events[-1].seq != len(events):
            return None  # trimmed or incomplete: the database serves it
        existing = self._remote.get(message_id)
        if existing is not None and not existing.failed:
            return existing  # another subscriber loaded it meanwhile
        topic = RemoteTopic(
            message_id, key, events, lambda: self._forget(message_id, topic), self._on_error
        )
        if not topic.closed:
            self._remote[message_id] = topic
            topic.task = loop.create_task(
                topic.follow(self._readers_client, block=_READ_BLOCK, idle=_READER_IDLE),
                name=f"redis reader {message_id}",
            )
        return topic

    def _forget(self, message_id: str, topic: RemoteTopic) -> None:
        if self._remote.get(message_id) is topic:
            del self._remote[message_id]

    # -- both ----------------------------------------------------------------------------

    def discard(self, message_id: str) -> None:
        topic = self._owned.pop(message_id, None)
        if topic is not None and topic.closed:
            self._dirty.pop(message_id, None)  # finished and recorded: the database has it

    async def check(self) -> str | None:
        try:
            async with asyncio.timeout(_COMMAND_TIMEOUT):
                await self._client.ping()
        except _FAILURES as exc:
            return self._scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        if self._problem is not None and self.backlog:
            return self._problem  # answers, but the backlog does not go in
        return None

    async def aclose(self, *, grace: float = 2.0) -> None:
        """Give the backlog `grace` s to reach Redis, then stop reading and writing."""
        if self._dirty and self._flusher is not None:
            self._drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._drained.wait()
        # A cancelled blocking read is not always let go by redis-py: the readers are told
        # to stop and their connections closed under them, and nothing waits long.
        tasks = []
        for topic in self._remote.values():
            topic.stop()
            if topic.task is not None:
                tasks.append(topic.task)
        if self._flusher is not None:
            tasks.append(self._flusher)
        for task in tasks:
            task.cancel()
        await self._readers_client.aclose()
        if tasks:
            await asyncio.wait(tasks, timeout=_COMMAND_TIMEOUT)
        self._owned.clear()
        self._remote.clear()
        self._dirty.clear()
        await self._client.aclose()
