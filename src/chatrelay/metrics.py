"""The service's Prometheus metrics, on a registry each app owns (docs/operations.md lists them).

The only module that imports `prometheus_client`. The core reports through the
`observe.Observer` hooks, which `Metrics` implements; the HTTP edge calls the request
methods below once per request. Nothing here runs per streamed event: tokens and events
are counted when a generation ends. Every label has a closed set of values (route
templates, not paths; error codes of our own, clamped to their shape; no tenant, message
or request id), so the number of series stays bounded whatever clients send.
"""

from __future__ import annotations

import re

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from chatrelay import __version__
from chatrelay.broker.base import BrokerOperation
from chatrelay.errors import LimitKind
from chatrelay.observe import GenerationOutcome, Observer, StorageOperation

CONTENT_TYPE = CONTENT_TYPE_LATEST

# From a token that arrives in milliseconds to an upstream that queues for minutes.
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
# A database round trip: sub-millisecond on SQLite, seconds when it struggles.
DATABASE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# A whole generation: a short answer to a long one that hits the total timeout.
GENERATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# A request that is not an event stream.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_CODE_SHAPE = re.compile(r"[a-z0-9_]{1,64}")
NO_ERROR = "none"
OTHER_LIMIT = "other"  # a refusal by status (408, 413, 414, 415, 429, 431) naming no limit
_LIMITS = frozenset(LimitKind)


def code_label(code: str | None) -> str:
    """An error code as a label value: ours are snake_case, anything else is `other`."""
    if code is None:
        return NO_ERROR
    return code if _CODE_SHAPE.fullmatch(code) else "other"


class Metrics(Observer):
    """Every metric of one app, on its own `CollectorRegistry` (so tests can build several)."""

    def __init__(self) -> None:
        # No `*_created` series beside every counter and histogram: they double the output
        # and Prometheus does not use them. (A process-wide switch of prometheus_client.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry = CollectorRegistry()
        self.build_info = Gauge(
            "chatrelay_build_info",
            "Always 1; the version is a label.",
            ["version"],
            registry=registry,
        )
        self.build_info.labels(__version__).set(1)
        # -- HTTP ---------------------------------------------------------------------------
        self.http_requests = Counter(
            "chatrelay_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.http_request_duration = Histogram(
            "chatrelay_http_request_duration_seconds",
            "Time to answer a request that is not an event stream, by route template.",
            ["route"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.active_subscribers = Gauge(
            "chatrelay_active_subscribers",
            "Event-stream responses open right now (native and OpenAI-compatible).",
            registry=registry,
        )
        self.rejected_requests = Counter(
            "chatrelay_rejected_requests",
            "Requests refused by a limit or quota, by error code and by the limit "
            "(`limit`: request_rate, generations, subscribers, body_size, header_size, ...).",
            ["code", "limit"],
            registry=registry,
        )
        # -- generations --------------------------------------------------------------------
        self.active_generations = Gauge(
            "chatrelay_active_generations",
            "Generations running in this process right now.",
            registry=registry,
        )
        self.generations = Counter(
            "chatrelay_generations",
            "Generations ended, by final status and error code (`none` without an error).",
            ["status", "error_code"],
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "chatrelay_time_to_first_token_seconds",
            "From a generation's start to its first streamed content or reasoning piece.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.generation_duration = Histogram(
            "chatrelay_generation_duration_seconds",
            "From a generation's start to its end, by final status.",
            ["status"],
            buckets=GENERATION_BUCKETS,
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "chatrelay_prompt_tokens",
            "Prompt (input) tokens, as the upstream reported them in usage.",
            registry=registry,
        )
        self.completion_tokens = Counter(
            "chatrelay_completion_tokens",
            "Completion (output) tokens, as the upstream reported them in usage.",
            registry=registry,
        )
        self.generations_without_usage = Counter(
            "chatrelay_generations_without_usage",
            "Generations that ended with no usage from the upstream (tokens not counted).",
            registry=registry,
        )
        self.streamed_events = Counter(
            "chatrelay_streamed_events",
            "Content and reasoning pieces published, counted when each generation ends.",
            registry=registry,
        )
        # -- upstream -----------------------------------------------------------------------
        self.upstream_latency = Histogram(
            "chatrelay_upstream_latency_seconds",
            "From sending an upstream request to its response headers, per attempt.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_retries = Counter(
            "chatrelay_upstream_retries",
            "Upstream attempts that failed and were retried, by the failure's code.",
            ["code"],
            registry=registry,
        )
        # -- storage and broker -------------------------------------------------------------
        self.checkpoint_duration = Histogram(
            "chatrelay_checkpoint_seconds",
            "Time of one checkpoint transaction (the partial text of running generations).",
            buckets=DATABASE_BUCKETS,
            registry=registry,
        )
        self.final_write_duration = Histogram(
            "chatrelay_final_write_seconds",
            "Time of one final-write transaction (a group commit, or a retry).",
            buckets=DATABASE_BUCKETS,
            registry=registry,
        )
        self.database_errors = Counter(
            "chatrelay_database_errors",
            "Database failures, by what was being done.",
            ["operation"],
            registry=registry,
        )
        for operation in StorageOperation:
            self.database_errors.labels(operation.value)  # present at 0 from the start
        self.broker_errors = Counter(
            "chatrelay_broker_errors",
            "Failures of a broker shared between instances, by operation.",
            ["operation"],
            registry=registry,
        )
        for broker_operation in BrokerOperation:
            self.broker_errors.labels(broker_operation.value)  # present at 0 from the start

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    # -- the HTTP edge (once per request) -------------------------------------------------

    def request_finished(
        self, route: str, method: str, status: int, seconds: float, *, streamed: bool
    ) -> None:
        self.http_requests.labels(route, method, str(status)).inc()
        if not streamed:
            self.http_request_duration.labels(route).observe(seconds)

    def request_rejected(self, code: str, limit: str | None = None) -> None:
        """One refusal: by the app (`web/instrumentation.py`) or below it, by the HTTP
        protocol (`web/http_protocol.py`); `limit` is an `errors.LimitKind` value."""
        limit_value = limit if limit in _LIMITS else OTHER_LIMIT
        self.rejected_requests.labels(code_label(code), limit_value).inc()

    def subscriber_opened(self) -> None:
        self.active_subscribers.inc()

    def subscriber_closed(self) -> None:
        self.active_subscribers.dec()

    # -- the core (observe.Observer) ------------------------------------------------------

    def generation_started(self) -> None:
        self.active_generations.inc()

    def generation_finished(self, outcome: GenerationOutcome) -> None:
        status = outcome.status.value
        self.active_generations.dec()
        self.generations.labels(status, code_label(outcome.error_code)).inc()
        self.generation_duration.labels(status).observe(outcome.duration)
        if outcome.ttft is not None:
            self.time_to_first_token.observe(outcome.ttft)
        prompt, completion = outcome.prompt_tokens, outcome.completion_tokens
        if prompt is None and completion is None:
            self.generations_without_usage.inc()
        if prompt:
            self.prompt_tokens.inc(prompt)
        if completion:
            self.completion_tokens.inc(completion)
        if outcome.events:
            self.streamed_events.inc(outcome.events)

    def upstream_responded(self, seconds: float) -> None:
        self.upstream_latency.observe(seconds)

    def upstream_retry(self, code: str) -> None:
        self.upstream_retries.labels(code_label(code)).inc()

    def checkpoint_written(self, seconds: float) -> None:
        self.checkpoint_duration.observe(seconds)

    def final_write(self, seconds: float) -> None:
        self.final_write_duration.observe(seconds)

    def storage_error(self, operation: StorageOperation) -> None:
        self.database_errors.labels(operation.value).inc()

    def broker_error(self, operation: BrokerOperation) -> None:
        self.broker_errors.labels(operation.value).inc()
