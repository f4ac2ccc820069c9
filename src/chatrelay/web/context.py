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
