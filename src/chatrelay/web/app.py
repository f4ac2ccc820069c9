"""Assembles the Starlette app: routes, error mapping, and the lifespan that owns resources."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from chatrelay.broker.base import Broker
from chatrelay.completions.catalog import ModelCatalog
from chatrelay.completions.recording import ChatCompletions
from chatrelay.config import LogFormat, Settings
from chatrelay.generation.engine import Engine
from chatrelay.ids import new_id
from chatrelay.metrics import Metrics
from chatrelay.observe import NULL_OBSERVER, Fanout, Observer
from chatrelay.outcome_log import OutcomeLog
from chatrelay.rate_limit import RateLimiter
from chatrelay.responses.recording import Responses
from chatrelay.service import ChatService
from chatrelay.storage.database import Database
from chatrelay.storage.migrations import apply_migrations
from chatrelay.storage.repository import Repository
from chatrelay.storage.spool import Spool
from chatrelay.upstream.client import UpstreamClient, UpstreamConfig
from chatrelay.upstream.router import UpstreamRouter
from chatrelay.web.auth import Authenticator
from chatrelay.web.context import AppContext
from chatrelay.web.cors import cors_middleware
from chatrelay.web.errors import EXCEPTION_HANDLERS
from chatrelay.web.instrumentation import Instrumentation
from chatrelay.web.routes import conversations, health, messages, openai, page, responses, spec
from chatrelay.web.routes import metrics as metrics_route
from chatrelay.web.sse import SERVER_SEND, StreamHolder

log = logging.getLogger("chatrelay")


def upstream_router(
    settings: Settings, mock_url: str | None = None, *, observer: Observer = NULL_OBSERVER
) -> UpstreamRouter:
    """A client per configured upstream (the built-in mock's URL for the single one, when on)."""
    routes = [
        (
            route,
            UpstreamClient(
                UpstreamConfig.for_route(
                    route,
                    base_url=mock_url,
                    retry_budget=settings.upstream_retry_budget,
                    include_usage=settings.include_usage,
                    max_event_bytes=settings.upstream_max_event_bytes,
                ),
                observer=observer,
            ),
        )
        for route in settings.upstreams.routes
    ]
    return UpstreamRouter(routes, routed=settings.upstreams.routed)


def _warn_about_defaults(settings: Settings) -> None:
    if settings.use_mock_upstream:
        banner = "!" * 72
        log.warning(banner)
        log.warning("OPENAI_API_KEY is not set: answers come from the BUILT-IN MOCK UPSTREAM,")
        log.warning("not from a real model. Set OPENAI_API_KEY (and OPENAI_BASE_URL) for one.")
        log.warning(banner)
    if not settings.api_keys:
        log.warning("CHATRELAY_API_KEYS is not set: the API is open to anyone (single tenant)")
    if settings.secret_is_random:
        log.warning("CHATRELAY_SECRET is not set: stream_url tokens die with this process")


class RelayApp(Starlette):
    """Starlette, leaving the server's own `send` in each request's scope: event streams
    write their events with it, past middleware that acts on the response's start only
    (`RelayEventStream._send_events` says why)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[SERVER_SEND] = send
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings, *, metrics: Metrics | None = None, prepare_storage: bool = True
) -> Starlette:
    """The app; its metrics live on their own registry (`metrics`, or a new one).

    `prepare_storage=False` is for a worker of a pool, whose parent replayed the spool and
    recovered orphans before any worker started.
    """
    metrics = metrics if metrics is not None else Metrics()
    observer = Fanout([metrics, OutcomeLog(log_content=settings.log_content)])

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            _warn_about_defaults(settings)
            mock_url: str | None = None
            if settings.use_mock_upstream:
                from chatrelay.mock_upstream import MockUpstreamServer

                mock = MockUpstreamServer(token_delay=settings.mock_token_delay)
                mock_url = await mock.start()
                stack.push_async_callback(mock.stop)
                log.warning("mock upstream listening at %s", mock_url)
            db = Database(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
            await db.connect()
            stack.push_async_callback(db.disconnect)
            await apply_migrations(db)
            upstream = upstream_router(settings, mock_url, observer=observer)
            stack.push_async_callback(upstream.aclose)
            for line in upstream.describe():
                log.info("%s", line)
            if settings.upstreams.check_at_start:
                await upstream.check()
            instance_id = new_id("inst")  # this process, as recorded with what it generates
            repo = Repository(db, instance_id=instance_id, lease_ttl=settings.lease_ttl)
            broker: Broker | None = None
            control = None
            if settings.redis_url:
                # Imported here: redis-py is a tenth of the start-up's imports, and only
                # instances that share a Redis need it.
                from chatrelay.broker.redis import RedisBroker
                from chatrelay.broker.redis_control import RedisControlBus

                broker = RedisBroker(
                    settings.redis_url,
                    prefix=settings.redis_prefix,
                    finished_ttl=settings.redis_finished_ttl,
                    max_events=settings.redis_max_events,
                    on_error=observer.broker_error,
                )
                log.info("%s", broker.description)
                control = RedisControlBus(
                    settings.redis_url,
                    prefix=settings.redis_prefix,
                    instance_id=instance_id,
                    on_error=observer.broker_error,
                )
            engine = await Engine.start(
                repo,
                upstream,
                broker=broker,
                spool=Spool(settings.data_dir / "spool"),
                prepare_storage=prepare_storage,
                checkpoint_interval=settings.checkpoint_interval,
                finished_log_ttl=settings.finished_log_ttl,
                observer=observer,
                control=control,
                max_generations_per_tenant=settings.max_generations_per_tenant,
                max_subscribers_per_message=settings.max_subscribers_per_message,
            )
            stack.push_async_callback(engine.close)
            app.state.chatrelay = AppContext(
                settings=settings,
                db=db,
                upstream=upstream,
                engine=engine,
                chat=ChatService(
                    repo,
                    engine.registry,
                    settings.default_model,
                    context_tokens=settings.context_tokens,
                    check_model=upstream.check_model,
                    peers=engine.peers,
                ),
                completions=ChatCompletions(
                    repo,
                    engine.registry,
                    engine.subscriptions,
                    settings.default_model,
                    check_model=upstream.check_model,
                ),
                responses=Responses(
                    repo,
                    engine.registry,
                    engine.subscriptions,
                    settings.default_model,
                    check_model=upstream.check_model,
                    peers=engine.peers,
                ),
                models=ModelCatalog(upstream),
                auth=Authenticator(settings.api_keys, settings.secret, settings.stream_token_ttl),
                rate_limiter=RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst),
            )
            log.info("chatrelay ready (database: %s, instance %s)", db.dialect, instance_id)
            try:
                yield
            finally:
                await engine.drain(settings.shutdown_grace)

    routes: list[BaseRoute] = [
        *health.routes,
        *conversations.routes,
        *messages.routes,
        *openai.routes,
        *metrics_route.routes(settings, metrics),
        *responses.routes,
        *page.routes,
        *spec.routes,
    ]
    # Instrumentation first: outermost, so every response (CORS preflights included) has
    # its `x-request-id` and is counted. Then `StreamHolder`, which holds event streams
    # until they end once what is inside it has returned; Instrumentation, outside it,
    # still sees each stream's whole life.
    instrumentation = Middleware(
        Instrumentation, metrics=metrics, log_requests=settings.log_format is LogFormat.JSON
    )
    app = RelayApp(
        routes=routes,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[
            instrumentation,
            Middleware(StreamHolder),
            *cors_middleware(settings.cors_origins),
        ],
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    # Starlette answers `/v1/conversations/` with a 307 to an absolute URL built from the
    # request's Host header, which a client (or a poisoned cache) controls. Every path is
    # exact here: an extra slash is the JSON 404 like any other unknown path.
    app.router.redirect_slashes = False
    return app
