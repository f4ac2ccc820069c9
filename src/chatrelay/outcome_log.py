"""One log line per generation outcome: who asked, what ran, how it ended, how fast.

An `Observer` of the core, installed next to the metrics. The line's text reads well in
the text format; its `fields` are what the JSON format carries (docs/operations.md).
Prompt and answer text stay out unless `CHATRELAY_LOG_CONTENT` is on, a debugging aid
for a deployment whose logs may hold what users wrote.
"""

from __future__ import annotations

import logging
from typing import Any

from chatrelay.logs import FIELDS
from chatrelay.models import Status
from chatrelay.observe import GenerationOutcome, Observer

log = logging.getLogger("chatrelay.outcome")

_QUIET = (Status.COMPLETED, Status.CANCELLED)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _prompt(body: dict[str, Any]) -> Any:
    """The last message sent upstream: what this generation answers."""
    messages = body.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        return messages[-1].get("content")
    return None


def outcome_fields(outcome: GenerationOutcome, *, with_content: bool) -> dict[str, Any]:
    final = outcome.final
    fields: dict[str, Any] = {
        "event": "generation",
        "request_id": outcome.request_id,
        "tenant": final.tenant,
        "conversation_id": final.conversation_id,
        "message_id": final.id,
        "model": final.model,
        "status": outcome.status.value,
        "error_code": outcome.error_code,
        "stop_reason": outcome.stop_reason,
        "finish_reason": final.finish_reason,
        "ttft_ms": _ms(outcome.ttft),
        "duration_ms": _ms(outcome.duration),
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "events": outcome.events,
    }
    if with_content:
        fields["prompt"] = _prompt(outcome.body)
        fields["answer"] = final.content
    return fields


class OutcomeLog(Observer):
    def __init__(self, *, log_content: bool = False) -> None:
        self._log_content = log_content

    def generation_finished(self, outcome: GenerationOutcome) -> None:
        level = logging.INFO if outcome.status in _QUIET else logging.WARNING
        if not log.isEnabledFor(level):
            return
        error = f" {outcome.error_code}" if outcome.error_code else ""
        ttft = f", ttft {outcome.ttft:.3f}s" if outcome.ttft is not None else ""
        log.log(
            level,
            "generation %s %s%s in %.3fs%s",
            outcome.final.id,
            outcome.status.value,
            error,
            outcome.duration,
            ttft,
            extra={FIELDS: outcome_fields(outcome, with_content=self._log_content)},
        )
