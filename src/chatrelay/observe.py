"""The seam through which the core reports what it does, for metrics and outcome logs.

The core (`generation/`, `upstream/`, `storage/`) calls an `Observer`; it never imports
Prometheus or knows a log format. `chatrelay.metrics.Metrics` and
`chatrelay.outcome_log.OutcomeLog` are the observers the service installs (`Fanout`
calls both); the in-process tests run with the no-op base class. Every hook is called
at most a few times per generation or per database call, never per streamed event, so
an observer may do real work (a Prometheus update, a log line) without slowing the
per-event path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from chatrelay.broker.base import BrokerOperation
from chatrelay.models import Message, Status


class StorageOperation(StrEnum):
    """What the service was doing when the database failed (a label, so a closed set)."""

    CHECKPOINT = "checkpoint"
    FINAL_WRITE = "final_write"  # each failed attempt, the first and every retry
    REQUEST = "request"  # a request answered `database_unavailable`


@dataclass(frozen=True, slots=True)
class GenerationOutcome:
    """How one generation ended, handed to observers once, after its final write.

    Times are seconds; `ttft` is None when no content or reasoning piece was streamed
    (a tool-call-only answer, or a failure before any output).
    """

    final: Message
    body: dict[str, Any]  # what was sent upstream; its text is logged only on request
    request_id: str | None  # the request that started it
    duration: float
    ttft: float | None
    stop_reason: str | None
    events: int  # content and reasoning pieces streamed

    @property
    def status(self) -> Status:
        return self.final.status

    @property
    def error_code(self) -> str | None:
        error = self.final.error
        code = error.get("code") if error else None
        return code if isinstance(code, str) and code else None

    @property
    def prompt_tokens(self) -> int | None:
        return _usage(self.final, "prompt_tokens")

    @property
    def completion_tokens(self) -> int | None:
        return _usage(self.final, "completion_tokens")


def _usage(message: Message, field: str) -> int | None:
    usage = message.usage
    value = usage.get(field) if isinstance(usage, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None  # the upstream did not report it (or reported nonsense)
    return value


class Observer:
    """Every hook the core calls; all do nothing here. Subclasses override what they use."""

    def generation_started(self) -> None:
        """A generation task began (paired with exactly one `generation_finished`)."""

    def generation_finished(self, outcome: GenerationOutcome) -> None:
        """A generation ended, its final write done (or handed to the retrier)."""

    def upstream_responded(self, seconds: float) -> None:
        """An attempt's response headers arrived, `seconds` after the request went out."""

    def upstream_retry(self, code: str) -> None:
        """An attempt failed with `code` and another one will be made."""

    def checkpoint_written(self, seconds: float) -> None:
        """A checkpoint transaction landed."""

    def final_write(self, seconds: float) -> None:
        """A final-write transaction (one group commit, or one retry) landed."""

    def storage_error(self, operation: StorageOperation) -> None:
        """The database failed an operation (a driver failure, not one of our bugs)."""

    def broker_error(self, operation: BrokerOperation) -> None:
        """A broker shared between instances failed; the in-process broker never does."""


NULL_OBSERVER = Observer()


class Fanout(Observer):
    """Several observers behind one (the metrics and the outcome log)."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self._observers = tuple(observers)

    def generation_started(self) -> None:
        for observer in self._observers:
            observer.generation_started()

    def generation_finished(self, outcome: GenerationOutcome) -> None:
        for observer in self._observers:
            observer.generation_finished(outcome)

    def upstream_responded(self, seconds: float) -> None:
        for observer in self._observers:
            observer.upstream_responded(seconds)

    def upstream_retry(self, code: str) -> None:
        for observer in self._observers:
            observer.upstream_retry(code)

    def checkpoint_written(self, seconds: float) -> None:
        for observer in self._observers:
            observer.checkpoint_written(seconds)

    def final_write(self, seconds: float) -> None:
        for observer in self._observers:
            observer.final_write(seconds)

    def storage_error(self, operation: StorageOperation) -> None:
        for observer in self._observers:
            observer.storage_error(operation)

    def broker_error(self, operation: BrokerOperation) -> None:
        for observer in self._observers:
            observer.broker_error(operation)
