"""What request handlers need, built once per app and reached through `request.app.state`."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from chatrelay.completions.catalog import ModelCatalog
from chatrelay.completions.recording import ChatCompletions
from chatrelay.config import Settings
from chatrelay.generation.registry import GenerationRegistry
from chatrelay.service import ChatService
from chatrelay.storage.database import Database
from chatrelay.upstream.client import UpstreamClient
from chatrelay.web.auth import Authenticator


@dataclass
class AppContext:
    settings: Settings
    db: Database
    upstream: UpstreamClient
    registry: GenerationRegistry
    chat: ChatService
    completions: ChatCompletions
    models: ModelCatalog
    auth: Authenticator


def context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.chatrelay
    return ctx
