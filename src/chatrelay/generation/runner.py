"""One generation: reads the upstream stream into the event log and records the outcome.

The task belongs to no HTTP connection. Streaming runs in an inner task so that a cancel
(endpoint, disconnect with `cancel_on_disconnect`, shutdown) stops the upstream read —
closing the upstream response — while the outer task still writes the final message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

from chatrelay.clock import now_iso
from chatrelay.errors import ChatRelayError
from chatrelay.generation.log import DELTA, REASONING, EventLog, start_data, terminal_event
from chatrelay.models import Message, Status, scrub_nul
from chatrelay.upstream.client import UpstreamClient, UpstreamStream

log = logging.getLogger("chatrelay.generation")

CANCEL = "cancelled"
SHUTDOWN = "shutting_down"

Finalizer = Callable[[Message], Awaitable[None]]


class Generation:
    """State of one running generation; `snapshot()` is what a checkpoint saves."""

    def __init__(
        self,
        message: Message,
        body: dict[str, Any],
        *,
        upstream: UpstreamClient,
        finalize: Finalizer,
        cancel_on_disconnect: bool = False,
    ) -> None:
        self.message = message
        self.body = body
        self.log = EventLog(message.id)
        self.cancel_on_disconnect = cancel_on_disconnect
        self._upstream = upstream
        self._finalize = finalize
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._pieces: list[tuple[str, int]] = []
        self._stream: UpstreamStream | None = None
        self._inner: asyncio.Task[None] | None = None
        self._stop_reason: str | None = None
        self.dirty = False
        self.deleted = False  # its conversation was deleted: no longer readable
        self.watchers = 0  # subscribers connected right now
        self.final: Message | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def finished(self) -> bool:
        return self.final is not None

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self._run(), name=f"generation {self.message.id}")
        return self.task

    def stop(self, reason: str) -> bool:
        """Stop reading the upstream; the outcome is recorded as `reason` says.

        Returns False when the generation had already ended or been stopped.
        """
        if self.final is not None or self._stop_reason is not None:
            return False
        if self._inner is not None and self._inner.done():
            return False
        self._stop_reason = reason
        if self._inner is not None:
            self._inner.cancel()
        return True

    def snapshot(self) -> Message:
        """The message as generated so far (still `streaming`)."""
        return self.message.evolve(
            content="".join(self._content),
            reasoning="".join(self._reasoning) or None,
            pieces=list(self._pieces),
        )

    async def _run(self) -> None:
        self.log.append("start", start_data(self.message))
        error: dict[str, Any] | None = None
        status = Status.COMPLETED
        if self._stop_reason is None:
            self._inner = asyncio.create_task(self._consume())
            try:
                await asyncio.shield(self._inner)
            except asyncio.CancelledError:
                # Our own task was cancelled (the event loop is going away): stop the
                # upstream read, then still record what we have.
                self._stop_reason = self._stop_reason or SHUTDOWN
                self._inner.cancel()
                await asyncio.gather(self._inner, return_exceptions=True)
            except ChatRelayError as exc:
                status, error = Status.FAILED, exc.to_dict()
                if exc.retry_after is not None:
                    error["retry_after"] = exc.retry_after
            except Exception:
                log.exception("generation %s failed unexpectedly", self.message.id)
                status = Status.FAILED
                error = {"code": "internal_error", "message": "the generation failed internally"}
        if self._stop_reason is not None and self._upstream_finished():
            pass  # the stop came after the upstream had finished: the answer is complete
        elif self._stop_reason == SHUTDOWN:
            status = Status.INTERRUPTED
            error = {"code": "shutting_down", "message": "the service stopped during generation"}
        elif self._stop_reason is not None:
            status, error = Status.CANCELLED, None
        self.final = self._final_message(status, error)
        try:
            await self._finalize(self.final)
        finally:
            name, data = terminal_event(self.final)
            self.log.append(name, data)

    async def _consume(self) -> None:
        self._stream = self._upstream.stream_chat(self.body)
        async with aclosing(self._stream.__aiter__()) as deltas:
            async for delta in deltas:
                if delta.content:
                    piece = scrub_nul(delta.content)  # streamed exactly as it is stored
                    self._content.append(piece)
                    self._pieces.append(("c", len(piece)))
                    self.log.append(DELTA, {"content": piece})
                    self.dirty = True
                if delta.reasoning:
                    piece = scrub_nul(delta.reasoning)
                    self._reasoning.append(piece)
                    self._pieces.append(("r", len(piece)))
                    self.log.append(REASONING, {"content": piece})
                    self.dirty = True

    def _upstream_finished(self) -> bool:
        assembler = self._stream.assembler if self._stream is not None else None
        return assembler is not None and (assembler.done or assembler.finish_reason is not None)

    def _final_message(self, status: Status, error: dict[str, Any] | None) -> Message:
        assembler = self._stream.assembler if self._stream is not None else None
        tool_calls = None
        if assembler is not None and assembler.tool_calls:
            tool_calls = [call.to_dict() for call in assembler.tool_calls]
        return self.snapshot().evolve(
            status=status,
            error=error,
            finish_reason=assembler.finish_reason if assembler else None,
            usage=assembler.usage if assembler else None,
            refusal=(assembler.refusal or None) if assembler else None,
            tool_calls=tool_calls,
            completed_at=now_iso(),
        )
