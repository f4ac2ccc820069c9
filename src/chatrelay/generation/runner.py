"""One generation: reads the upstream stream into its topic and records the outcome.

The task belongs to no HTTP connection. Streaming runs in an inner task so that a stop
(cancel, the last watcher leaving with `cancel_on_disconnect`, delete, supersede,
shutdown) ends the upstream read — closing the upstream response — while the outer task
still writes the final message and publishes the terminal event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from enum import StrEnum
from typing import Any, Protocol

from chatrelay.broker.base import Topic
from chatrelay.broker.event import EventKind
from chatrelay.clock import now_iso
from chatrelay.errors import ChatRelayError
from chatrelay.generation.replay import as_started, terminal_kind
from chatrelay.models import (
    ErrorPayload,
    Message,
    PartialText,
    PieceKind,
    Status,
    ToolCallHead,
    scrub_nul,
)
from chatrelay.observe import NULL_OBSERVER, GenerationOutcome, Observer
from chatrelay.request_context import RequestInfo, current
from chatrelay.upstream.assembler import ChunkAssembler, ChunkDelta, ToolCall, ToolCallPart

log = logging.getLogger("chatrelay.generation")

Finalizer = Callable[[Message], Awaitable[None]]


# The first pieces each give the loop a turn before the next is processed. An upstream
# read often brings many chunks at once, and without a turn this task would work through
# all of them before any subscriber ran: the first token would wait behind the whole
# burst (~350 µs for 20 tokens), and an OpenAI-route response, which is only built once
# the first piece exists, would still be setting up its stream. Four turns cover that
# set-up; later pieces are batched as they come (docs/performance.md).
EAGER_PIECES = 4

# The `(kind, length)` piece of each streamed text piece, shared for the lengths tokens
# have: a tuple of its own per piece was 64 bytes of every event a generation holds, a
# fifth of what a long answer keeps in memory per token (docs/performance.md).
_SHARED_LENGTHS = 256
_SHARED_PIECES = {
    kind: tuple((kind, n) for n in range(_SHARED_LENGTHS))
    for kind in (PieceKind.CONTENT, PieceKind.REASONING)
}


def _text_piece(kind: PieceKind, size: int) -> tuple[PieceKind, int]:
    """The `(kind, size)` of a content or reasoning piece, shared when it is short."""
    return _SHARED_PIECES[kind][size] if size < _SHARED_LENGTHS else (kind, size)


class StopReason(StrEnum):
    """Why a generation was stopped before the upstream finished; logged with its outcome.

    `SHUTDOWN` and `LEASE_LOST` end it `interrupted`; every other reason `cancelled`.
    """

    CANCELLED = "cancelled"  # POST /v1/messages/{id}/cancel
    CLIENT_DISCONNECTED = "client_disconnected"  # cancel_on_disconnect, last watcher gone
    DELETED = "deleted"  # its conversation was deleted
    SUPERSEDED = "superseded"  # an edit or regenerate replaced it
    SHUTDOWN = "shutting_down"  # the service stopped under it
    LEASE_LOST = "lease_lost"  # another instance swept it: the record already says interrupted


class ChatStream(Protocol):
    """What `stream_chat` returns: the deltas, and the assembler that judged them."""

    @property
    def assembler(self) -> ChunkAssembler | None: ...

    def __aiter__(self) -> AsyncIterator[ChunkDelta]: ...

    def send_early(self) -> None:
        """Send the request now if that can be done without waiting (a pooled
        connection), before the stream is iterated."""

    def discard_early(self) -> None:
        """The stream will not be iterated: drop what `send_early` sent."""


class ChatUpstream(Protocol):
    """The seam to the model server (`upstream.client.UpstreamClient`, or a test fake)."""

    def stream_chat(self, body: dict[str, Any]) -> ChatStream: ...


class Generation:
    """State of one running generation; `snapshot()` is what a checkpoint saves.

    Launched `gated`, it runs before its message is recorded: the upstream request goes
    out at once (`ChatStream.send_early`) and the upstream works on it while the caller
    records the turn, instead of after — the whole transaction comes off the time to
    first token. Nothing is published or written until the caller says `recorded()`:
    `start` is published then, the deltas wait for it (held, with the stall timer
    paused), and so does the final write. If the turn could not be recorded,
    `abandon()` ends it without a trace: the upstream request is dropped and nothing is
    published, written or reported.
    """

    def __init__(
        self,
        message: Message,
        body: dict[str, Any],
        *,
        topic: Topic,
        upstream: ChatUpstream,
        finalize: Finalizer,
        cancel_on_disconnect: bool = False,
        observer: Observer = NULL_OBSERVER,
        gated: bool = False,
    ) -> None:
        self.message = message
        self.body = body
        self.topic = topic
        self.cancel_on_disconnect = cancel_on_disconnect
        self._upstream = upstream
        self._finalize = finalize
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._pieces: list[tuple[PieceKind, int]] = []
        # Tool calls in the order they started (their position is the event's `index`),
        # with what the `tool_call` events said of them, for checkpoints.
        self._calls: list[ToolCall] = []
        self._call_positions: dict[int, int] = {}  # assembler index → position
        self._call_heads: list[ToolCallHead] = []
        self._call_arguments: list[list[str]] = []
        self._call_focus = -1  # the call the last TOOL_CALL piece named
        self._stream: ChatStream | None = None
        self._inner: asyncio.Task[None] | None = None
        self.stop_reason: StopReason | None = None
        self.dirty = False
        self.deleted = False  # its conversation was deleted: no longer readable
        self._watchers = 0  # subscribers connected right now
        self.final: Message | None = None
        self.task: asyncio.Task[None] | None = None
        self._observer = observer
        # The request that started it (None outside one): its id goes into the outcome, and
        # a streamed answer's first piece is reported back to it (its log line's TTFT).
        self._request: RequestInfo | None = current()
        self._started_at = 0.0
        self._first_piece_at: float | None = None
        # Gated: resolved True by `recorded()` (and then let go), False by `abandon()`.
        self._gate: asyncio.Future[bool] | None = (
            asyncio.get_running_loop().create_future() if gated else None
        )
        self._abandoned = False

    @property
    def finished(self) -> bool:
        return self.final is not None

    def start(self) -> asyncio.Task[None]:
        """Publish `start` and set the upstream read going, ahead of whatever the caller
        does next: the read's task is scheduled first, so the upstream request goes out
        on the loop's next turn and the caller's own work (building and opening the SSE
        response) overlaps the upstream's time to first byte instead of preceding it."""
        self._started_at = time.monotonic()
        if self._gate is None:
            self._observer.generation_started()
            self.topic.publish(EventKind.START, message=as_started(self.message))
        else:
            self._stream = self._upstream.stream_chat(self.body)
            self._stream.send_early()
        if self.stop_reason is None:
            self._inner = asyncio.create_task(
                self._consume(), name=f"upstream read {self.message.id}"
            )
        self.task = asyncio.create_task(self._run(), name=f"generation {self.message.id}")
        return self.task

    def recorded(self) -> None:
        """The gated generation's message is recorded: publish `start`, let it go on."""
        gate = self._gate
        if gate is None or gate.done():
            return
        self._observer.generation_started()
        self.topic.publish(EventKind.START, message=as_started(self.message))
        gate.set_result(True)
        self._gate = None  # one object less per held stream

    def abandon(self) -> None:
        """The gated generation's message could not be recorded: end it, leaving nothing."""
        gate = self._gate
        if gate is None or gate.done():
            return
        gate.set_result(False)
        self._abandoned = True
        if self._inner is not None:
            self._inner.cancel()

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    def stop(self, reason: StopReason) -> bool:
        """Stop reading the upstream; the outcome is recorded as `reason` says.

        Returns False when the generation had already ended or been stopped.
        """
        if self.final is not None or self.stop_reason is not None:
            return False
        if self._inner is not None and self._inner.done():
            return False
        self.stop_reason = reason
        if self._inner is not None:
            self._inner.cancel()
        return True

    # -- watchers (the `cancel_on_disconnect` rule) ------------------------------------

    def watcher_joined(self) -> None:
        self._watchers += 1

    def watcher_left(self, finished: bool) -> None:
        """The generation stops when the last client watching it leaves early — a second
        tab closing does not stop what another one is showing."""
        self._watchers -= 1
        if not finished and self.cancel_on_disconnect and self._watchers == 0:
            self.stop(StopReason.CLIENT_DISCONNECTED)

    # -- the run -----------------------------------------------------------------------

    def snapshot(self) -> Message:
        """The message as generated so far (still `streaming`)."""
        partial = self.partial()
        return self.message.evolve(
            content=partial.content,
            reasoning=partial.reasoning,
            tool_calls=partial.tool_calls,
            pieces=partial.pieces,
        )

    def partial(self) -> PartialText:
        """What a checkpoint saves: the tool calls as their events told them, so a
        checkpoint replays exactly what was published."""
        tool_calls = [
            {
                "id": head.id,
                "type": head.type,
                "function": {"name": head.name, "arguments": "".join(arguments)},
            }
            for head, arguments in zip(self._call_heads, self._call_arguments, strict=True)
        ]
        return PartialText(
            self.message.id,
            "".join(self._content),
            "".join(self._reasoning) or None,
            tool_calls or None,
            list(self._pieces),
        )

    async def _run(self) -> None:
        try:
            await self._generate()
        finally:
            if not self.abandoned:
                self._report()

    def _report(self) -> None:
        """Hand the outcome to the observers (once, however the run ended)."""
        started, first = self._started_at, self._first_piece_at
        try:
            outcome = GenerationOutcome(
                final=self.final or self._final_message(Status.FAILED, None),
                body=self.body,
                request_id=self._request.request_id if self._request is not None else None,
                duration=time.monotonic() - started,
                ttft=None if first is None else first - started,
                stop_reason=self.stop_reason.value if self.stop_reason is not None else None,
                events=len(self._pieces),
            )
            self._observer.generation_finished(outcome)
        except Exception:
            log.exception("observing the outcome of %s failed", self.message.id)

    def _first_piece(self) -> None:
        """The first content or reasoning piece: time to first token (once per generation)."""
        now = self._first_piece_at = time.monotonic()
        request = self._request
        if request is not None and request.first_token_at is None:
            request.first_token_at = now

    async def _generate(self) -> None:
        error: ErrorPayload | None = None
        status = Status.COMPLETED
        if self._inner is not None:
            try:
                await asyncio.shield(self._inner)
            except asyncio.CancelledError:
                # Our own task was cancelled (the event loop is going away): stop the
                # upstream read, then still record what we have. (Or `abandon()`
                # cancelled the read, and there is nothing to record.)
                if not self.abandoned:
                    self.stop_reason = self.stop_reason or StopReason.SHUTDOWN
                self._inner.cancel()
                await asyncio.gather(self._inner, return_exceptions=True)
            except ChatRelayError as exc:
                status, error = Status.FAILED, exc.to_payload()
            except Exception:
                log.exception("generation %s failed unexpectedly", self.message.id)
                status = Status.FAILED
                error = {"code": "internal_error", "message": "the generation failed internally"}
        if self._stream is not None:
            self._stream.discard_early()  # never read (stopped before its first attempt)
        gate = self._gate
        if gate is not None and not await gate:
            return  # abandoned: the message was never recorded
        del gate
        if self.stop_reason is not None and self._upstream_finished():
            pass  # the stop came after the upstream had finished: the answer is complete
        elif self.stop_reason is StopReason.SHUTDOWN:
            status = Status.INTERRUPTED
            error = {"code": "shutting_down", "message": "the service stopped during generation"}
        elif self.stop_reason is StopReason.LEASE_LOST:
            status = Status.INTERRUPTED
            error = {"code": "interrupted", "message": "its lease expired before it was renewed"}
        elif self.stop_reason is not None:
            status, error = Status.CANCELLED, None
        self.final = self._final_message(status, error)
        if self.stop_reason is not None:
            log.info(
                "generation %s ended %s (stopped: %s)", self.message.id, status, self.stop_reason
            )
        try:
            await self._finalize(self.final)
        finally:
            self.topic.publish(terminal_kind(self.final), message=self.final)

    async def _consume(self) -> None:
        if self._stream is None:
            self._stream = self._upstream.stream_chat(self.body)
        topic = self.topic
        gate = self._gate
        async with aclosing(self._stream.__aiter__()) as deltas:  # type: ignore[type-var]
            async for delta in deltas:
                if gate is not None:  # gated: nothing is published before `recorded()`
                    if not await gate:
                        return
                    gate = None
                eager = len(self._pieces) < EAGER_PIECES and bool(delta.content or delta.reasoning)
                if eager and self._first_piece_at is None:
                    self._first_piece()
                if delta.content:
                    piece = scrub_nul(delta.content)  # streamed exactly as it is stored
                    self._content.append(piece)
                    self._pieces.append(_text_piece(PieceKind.CONTENT, len(piece)))
                    topic.publish(EventKind.DELTA, text=piece)
                    self.dirty = True
                if delta.reasoning:
                    piece = scrub_nul(delta.reasoning)
                    self._reasoning.append(piece)
                    self._pieces.append(_text_piece(PieceKind.REASONING, len(piece)))
                    topic.publish(EventKind.REASONING, text=piece)
                    self.dirty = True
                if delta.tool_parts:
                    for part in delta.tool_parts:
                        self._tool_call_part(part)
                    self.dirty = True
                if eager:
                    await asyncio.sleep(0)  # EAGER_PIECES says why

    def _tool_call_part(self, part: ToolCallPart) -> None:
        """A call's start (`tool_call` with its head), then its argument pieces, by position."""
        call = part.call
        position = self._call_positions.get(call.index)
        if position is None:
            position = len(self._calls)
            self._call_positions[call.index] = position
            self._calls.append(call)
            head = ToolCallHead(call.id, call.type, call.name)
            self._call_heads.append(head)
            self._call_arguments.append([])
            self._pieces.append((PieceKind.TOOL_CALL, position))
            self._call_focus = position
            self.topic.publish(EventKind.TOOL_CALL, index=position, call=head)
        if not part.arguments:
            return
        if self._call_focus != position:
            self._pieces.append((PieceKind.TOOL_CALL, position))
            self._call_focus = position
        self._call_arguments[position].append(part.arguments)
        self._pieces.append((PieceKind.TOOL_ARGUMENTS, len(part.arguments)))
        self.topic.publish(EventKind.TOOL_CALL, index=position, text=part.arguments)

    def _upstream_finished(self) -> bool:
        assembler = self._stream.assembler if self._stream is not None else None
        return assembler is not None and (assembler.done or assembler.finish_reason is not None)

    def _final_message(self, status: Status, error: ErrorPayload | None) -> Message:
        assembler = self._stream.assembler if self._stream is not None else None
        tool_calls = None
        if assembler is not None and assembler.tool_calls:
            # In the order the calls started, which is their events' `index`.
            seen = {id(call) for call in self._calls}
            unseen = [call for call in assembler.tool_calls if id(call) not in seen]
            tool_calls = [call.to_dict() for call in [*self._calls, *unseen]]
        return self.snapshot().evolve(
            status=status,
            error=error,
            finish_reason=assembler.finish_reason if assembler else None,
            usage=assembler.usage if assembler else None,
            refusal=(assembler.refusal or None) if assembler else None,
            tool_calls=tool_calls,
            completed_at=now_iso(),
        )
