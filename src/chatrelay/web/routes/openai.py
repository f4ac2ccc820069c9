"""`/v1/chat/completions` and `/v1/models` in OpenAI's shapes, so any OpenAI SDK works here.

Every error on these routes takes OpenAI's shape (`web.errors.openai_*`). A completion
waits for the generation's first event after `start` before answering, so that an upstream
that fails before any output gets its own HTTP status instead of a 200 stream.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatrelay.broker.event import EventKind
from chatrelay.completions.render import CompletionRenderer, chunk_frames
from chatrelay.completions.request import InvalidRequest, parse_completion_request
from chatrelay.errors import ChatRelayError, NotFound
from chatrelay.ids import looks_like_id
from chatrelay.web.context import context
from chatrelay.web.errors import (
    OPENAI_PATHS,
    openai_error,
    openai_error_response,
    openai_recorded_error,
    openai_stream_error,
)
from chatrelay.web.sse import SSE_HEADERS, RelayEventStream
from chatrelay.web.validation import read_json_object

log = logging.getLogger("chatrelay.web")

CONVERSATION_HEADER = "X-Chatrelay-Conversation-Id"
MESSAGE_HEADER = "X-Chatrelay-Message-Id"

Endpoint = Callable[[Request], Awaitable[Response]]


def _openai_endpoint(handler: Endpoint) -> Endpoint:
    """Every error leaves in OpenAI's shape. (A wrong method never gets here: the router's
    405 takes OpenAI's shape on these paths in `web.errors`.)"""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except InvalidRequest as exc:
            return openai_error_response(exc, param=exc.param)
        except ChatRelayError as exc:
            return openai_error_response(exc)
        except ClientDisconnect:
            raise  # nobody to answer: web/errors.py drops it quietly
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.url.path)
            return openai_error(
                "internal_error", "the service failed to handle this request", status=500
            )

    return endpoint


def _conversation_header(request: Request) -> str | None:
    raw = request.headers.get(CONVERSATION_HEADER, "").strip()
    if not raw:
        return None
    if not looks_like_id(raw, "conv"):
        raise NotFound(f"conversation {raw[:64]} not found")
    return raw


@_openai_endpoint
async def chat_completions(request: Request) -> Response:
    ctx = context(request)
    tenant = ctx.tenant(request)
    body = await read_json_object(request, ctx.settings.max_body_bytes)
    completion = parse_completion_request(body)
    started = await ctx.completions.start(
        tenant, completion, conversation_id=_conversation_header(request)
    )
    assistant = started.assistant
    ids = {CONVERSATION_HEADER: started.conversation_id, MESSAGE_HEADER: assistant.id}
    events = await ctx.completions.events(assistant, heartbeat=ctx.settings.ping_interval)
    first = await events.open()
    if first is None:
        raise RuntimeError(f"event log of {assistant.id} ended without a terminal event")
    if first.kind is EventKind.ERROR:
        return openai_recorded_error(first.error, headers=ids)
    renderer = CompletionRenderer(assistant, include_usage=completion.include_usage)
    if completion.stream:
        return RelayEventStream(
            chunk_frames(renderer, events, openai_stream_error),
            headers={**SSE_HEADERS, **ids},
            ping=0,
            sep="\n",
        )
    final = await events.terminal()
    if final is None:
        raise RuntimeError(f"event log of {assistant.id} ended without a terminal event")
    if final.kind is EventKind.ERROR:
        return openai_recorded_error(final.error, headers=ids)
    return JSONResponse(renderer.completion(final.final), headers=ids)


@_openai_endpoint
async def list_models(request: Request) -> Response:
    ctx = context(request)
    ctx.tenant(request)
    return JSONResponse(await ctx.models.listing())


@_openai_endpoint
async def retrieve_model(request: Request) -> Response:
    """What `client.models.retrieve(id)` calls; ids may hold slashes (`org/model`)."""
    ctx = context(request)
    ctx.tenant(request)
    model_id: str = request.path_params["model_id"]
    if not model_id:  # `/v1/models/`: paths are exact here, an extra slash is no route
        raise NotFound(f"no route for {request.method} {request.url.path}")
    return JSONResponse(await ctx.models.model(model_id))


# For the other OpenAI-shaped routes (`routes/responses.py`).
openai_endpoint = _openai_endpoint

routes = [
    Route(OPENAI_PATHS[0], chat_completions, methods=["POST"]),
    Route(OPENAI_PATHS[1], list_models, methods=["GET"]),
    Route("/v1/models/{model_id:path}", retrieve_model, methods=["GET"]),
]
