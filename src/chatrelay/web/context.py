"""What request handlers need, built once per app and reached through `request.app.state`."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from chatrelay.completions.catalog import ModelCatalog
from chatrelay.completions.recording import ChatCompletions
from chatrelay.config import Settings
from chatrelay.generation.engine import Engine
from chatrelay.generation.persistence import Persistence
from chatrelay.generation.registry import GenerationRegistry
from chatrelay.generation.subscription import Subscriptions
from chatrelay.rate_limit import RateLimiter
from chatrelay.responses.recording import Responses
from chatrelay.service import ChatService
from chatrelay.storage.database import Database
from chatrelay.upstream.router import UpstreamRouter
from chatrelay.web.auth import Authenticator


@dataclass
class AppContext:
    settings: Settings
    db: Database
    upstream: UpstreamRouter
    engine: Engine
    chat: ChatService
    completions: ChatCompletions
    responses: Responses
    models: ModelCatalog
    auth: Authenticator
    rate_limiter: RateLimiter

    def tenant(self, request: Request) -> str:
        """The caller's tenant (401 without a valid key), charged one request of its
        per-minute budget (429 `rate_limited` when spent). Every `/v1` handler starts here."""
        tenant = self.auth.tenant(request)
        self.rate_limiter.charge(tenant)
        return tenant

    def tenant_from_token(self, token: str, message_id: str) -> str:
        """The tenant a `stream_url` token was issued to, charged like `tenant`."""
        tenant = self.auth.tenant_from_token(token, message_id)
        self.rate_limiter.charge(tenant)
        return tenant

    @property
    def registry(self) -> GenerationRegistry:
        return self.engine.registry

    @property
    def subscriptions(self) -> Subscriptions:
        return self.engine.subscriptions

    @property
    def persistence(self) -> Persistence:
        return self.engine.persistence


def context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.chatrelay
    return ctx
