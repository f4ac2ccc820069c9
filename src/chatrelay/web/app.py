"""Assembles the Starlette app: routes, error mapping, and the lifespan that owns resources."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import BaseRoute

from chatrelay.completions.catalog import ModelCatalog
from chatrelay.completions.recording import ChatCompletions
from chatrelay.config import Settings
from chatrelay.generation.engine import Engine
from chatrelay.rate_limit import RateLimiter
from chatrelay.service import ChatService
from chatrelay.storage.database import Database
from chatrelay.storage.migrations import apply_migrations
from chatrelay.storage.repository import Repository
from chatrelay.storage.spool import Spool
from chatrelay.upstream.client import UpstreamClient, UpstreamConfig
from chatrelay.web.auth import Authenticator
from chatrelay.web.context import AppContext
from chatrelay.web.cors import cors_middleware
from chatrelay.web.errors import EXCEPTION_HANDLERS
from chatrelay.web.routes import conversations, health, messages, openai, page

log = logging.getLogger("chatrelay")


def upstream_config(settings: Settings, base_url: str) -> UpstreamConfig:
    return UpstreamConfig(
        base_url=base_url,
        api_key=settings.openai_api_key,
        connect_timeout=settings.upstream_connect_timeout,
        first_byte_timeout=settings.upstream_first_byte_timeout,
        idle_timeout=settings.upstream_idle_timeout,
        total_timeout=settings.upstream_total_timeout,
        max_retries=settings.upstream_max_retries,
        retry_budget=settings.upstream_retry_budget,
        include_usage=settings.include_usage,
        max_event_bytes=settings.upstream_max_event_bytes,
    )


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


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            _warn_about_defaults(settings)
            base_url = settings.openai_base_url
            if settings.use_mock_upstream:
                from chatrelay.mock_upstream import MockUpstreamServer

                mock = MockUpstreamServer(token_delay=settings.mock_token_delay)
                base_url = await mock.start()
                stack.push_async_callback(mock.stop)
                log.warning("mock upstream listening at %s", base_url)
            db = Database(settings.database_url)
            await db.connect()
            stack.push_async_callback(db.disconnect)
            await apply_migrations(db)
            upstream = UpstreamClient(upstream_config(settings, base_url))
            stack.push_async_callback(upstream.aclose)
            repo = Repository(db)
            engine = await Engine.start(
                repo,
                upstream,
                spool=Spool(settings.data_dir / "spool"),
                checkpoint_interval=settings.checkpoint_interval,
                finished_log_ttl=settings.finished_log_ttl,
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
                ),
                completions=ChatCompletions(
                    repo, engine.registry, engine.subscriptions, settings.default_model
                ),
                models=ModelCatalog(upstream),
                auth=Authenticator(settings.api_keys, settings.secret, settings.stream_token_ttl),
                rate_limiter=RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst),
            )
            log.info("chatrelay ready (database: %s)", db.dialect)
            try:
                yield
            finally:
                await engine.drain(settings.shutdown_grace)

    routes: list[BaseRoute] = [
        *health.routes,
        *conversations.routes,
        *messages.routes,
        *openai.routes,
        *page.routes,
    ]
    app = Starlette(
        routes=routes,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=cors_middleware(settings.cors_origins),
        lifespan=lifespan,
    )
    # Starlette answers `/v1/conversations/` with a 307 to an absolute URL built from the
    # request's Host header, which a client (or a poisoned cache) controls. Every path is
    # exact here: an extra slash is the JSON 404 like any other unknown path.
    app.router.redirect_slashes = False
    return app
