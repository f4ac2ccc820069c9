"""`/v1/chat/completions` and `/v1/models` in OpenAI's shapes, so any OpenAI SDK works here.

Every error on these routes takes OpenAI's shape (`web.errors.openai_*`). A completion
waits for the generation's first event after `start` before answering, so that an upstream
that fails before any output gets its own HTTP status instead of a 200 stream.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatrelay.completions.catalog import ModelCatalog
from chatrelay.completions.recording import ChatCompletions
from chatrelay.completions.render import CompletionRenderer
from chatrelay.completions.request import InvalidRequest, parse_completion_request
from chatrelay.errors import ChatRelayError, MethodNotAllowed, NotFound
from chatrelay.generation.log import DONE, ERROR, START, LogEvent
from chatrelay.ids import looks_like_id
from chatrelay.sse.framing import PING_FRAME, data_frame
from chatrelay.web.context import context
from chatrelay.web.errors import (
    openai_error,
    openai_error_response,
    openai_recorded_error,
    openai_stream_error,
)
from chatrelay.web.sse import SSE_HEADERS
from chatrelay.web.validation import read_json_object

log = logging.getLogger("chatrelay.web")

CONVERSATION_HEADER = "X-Chatrelay-Conversation-Id"
MESSAGE_HEADER = "X-Chatrelay-Message-Id"

Endpoint = Callable[[Request], Awaitable[Response]]
Batches = AsyncIterator[list[LogEvent]]


def _openai_endpoint(method: str) -> Callable[[Endpoint], Endpoint]:
    """Only `method` is allowed, and every error leaves in OpenAI's shape."""

    def wrap(handler: Endpoint) -> Endpoint:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            try:
                if request.method != method:
                    raise MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
                return await handler(request)
            except InvalidRequest as exc:
                return openai_error_response(exc, param=exc.param)
            except MethodNotAllowed as exc:
                return openai_error_response(exc, headers={"Allow": method})
            except ChatRelayError as exc:
                return openai_error_response(exc)
            except Exception:
                log.exception("unhandled error on %s %s", request.method, request.url.path)
                return openai_error(
                    "internal_error", "the service failed to handle this request", status=500
                )

        return endpoint

    return wrap


def _conversation_header(request: Request) -> str | None:
    raw = request.headers.get(CONVERSATION_HEADER, "").strip()
    if not raw:
        return None
    if not looks_like_id(raw, "conv"):
        raise NotFound(f"conversation {raw[:64]} not found")
    return raw


class _Events:
    """The message's event batches, read past `start` up to the first real event.

    Waiting for that event before answering lets an upstream that fails before any
    output get its own HTTP status rather than a 200 stream.
    """

    def __init__(self, batches: Batches) -> None:
        self._batches = batches
        self.first: LogEvent | None = None
        self._rest: list[LogEvent] = []

    async def open(self) -> LogEvent | None:
        async for batch in self._batches:
            real = [event for event in batch if event.kind != START]
            if real:
                self.first, self._rest = real[0], real[1:]
                return self.first
        return None

    async def after_first(self) -> AsyncIterator[list[LogEvent]]:
        """What follows the first event, in batches (an empty batch is a heartbeat)."""
        if self._rest:
            yield self._rest
        async for batch in self._batches:
            yield batch


def _render(renderer: CompletionRenderer, event: LogEvent) -> tuple[str, bool]:
    """The `data:` frames for one event, and whether the stream ends with it."""
    if event.kind == ERROR:
        return data_frame(openai_stream_error(event.data["error"])), True
    frames = "".join(data_frame(chunk) for chunk in renderer.chunks(event))
    if event.kind == DONE:
        return frames + data_frame("[DONE]"), True
    return frames, False


async def _chunk_frames(renderer: CompletionRenderer, events: _Events) -> AsyncIterator[bytes]:
    """`data:` frames only: the role chunk, content, the closing chunks, `[DONE]`.

    A failure after output has begun is OpenAI's in-stream `{"error": …}`, then the end.
    Everything a batch holds goes out in one write.
    """
    assert events.first is not None
    head, ended = _render(renderer, events.first)
    yield (data_frame(renderer.opening()) + head).encode()
    if ended:
        return
    async for batch in events.after_first():
        if not batch:
            yield PING_FRAME
            continue
        out: list[str] = []
        for event in batch:
            frames, ended = _render(renderer, event)
            out.append(frames)
            if ended:
                break
        yield "".join(out).encode()
        if ended:
            return


@_openai_endpoint("POST")
async def chat_completions(request: Request) -> Response:
    ctx = context(request)
    tenant = ctx.auth.tenant(request)
    body = await read_json_object(request, ctx.settings.max_body_bytes)
    completion = parse_completion_request(body)
    completions = ChatCompletions(ctx.chat.repo, ctx.registry, ctx.settings.default_model)
    started = await completions.start(
        tenant, completion, conversation_id=_conversation_header(request)
    )
    assistant = started.assistant
    ids = {CONVERSATION_HEADER: started.conversation_id, MESSAGE_HEADER: assistant.id}
    batches = await ctx.registry.event_batches(
        tenant, assistant.id, None, heartbeat=ctx.settings.ping_interval
    )
    if batches is None:  # only a cursor at the terminal event gives None; there is none here
        raise RuntimeError(f"no event stream for new message {assistant.id}")
    renderer = CompletionRenderer(assistant, include_usage=completion.include_usage)
    events = _Events(batches)
    first = await events.open()
    if first is None:
        raise RuntimeError(f"event log of {assistant.id} ended without a terminal event")
    if first.kind == ERROR:
        return openai_recorded_error(first.data["error"], headers=ids)
    if completion.stream:
        return EventSourceResponse(
            _chunk_frames(renderer, events),
            headers={**SSE_HEADERS, **ids},
            ping=0,
            sep="\n",
        )
    final = first
    if not final.is_terminal:
        async for batch in events.after_first():
            if batch and batch[-1].is_terminal:
                final = batch[-1]
                break
    if not final.is_terminal:
        raise RuntimeError(f"event log of {assistant.id} ended without a terminal event")
    if final.kind == ERROR:
        return openai_recorded_error(final.data["error"], headers=ids)
    return JSONResponse(renderer.completion(final.data["message"]), headers=ids)


def _catalog(request: Request) -> ModelCatalog:
    """One catalog per app, made on first use."""
    state = request.app.state
    catalog = getattr(state, "openai_model_catalog", None)
    if not isinstance(catalog, ModelCatalog):
        catalog = ModelCatalog(context(request).upstream)
        state.openai_model_catalog = catalog
    return catalog


@_openai_endpoint("GET")
async def list_models(request: Request) -> Response:
    context(request).auth.tenant(request)
    return JSONResponse(await _catalog(request).listing())


# Every method reaches the handlers, so that a wrong one gets its 405 in OpenAI's shape too.
_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

routes = [
    Route("/v1/chat/completions", chat_completions, methods=_ANY_METHOD),
    Route("/v1/models", list_models, methods=_ANY_METHOD),
]
