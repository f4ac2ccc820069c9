"""`/v1/responses`: OpenAI's Responses API (text and function tools) over the same core.

A response is an assistant message; its stream is that message's event log rendered by
`ResponseRenderer`, which numbers events deterministically, so `GET ...?stream=true&
starting_after=N` re-renders the log and sends what follows N. As on
`/v1/chat/completions`, a request waits for the generation's first event after `start`
(unless `background`), so an upstream failing before any output gets its own HTTP status.
Every error takes OpenAI's shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatrelay.broker.event import EventKind, LogEvent
from chatrelay.completions.request import InvalidRequest
from chatrelay.errors import Conflict
from chatrelay.generation.replay import events_from_message
from chatrelay.generation.subscription import Batches
from chatrelay.models import Message, Status
from chatrelay.responses.events import ResponseRenderer, stream_frame
from chatrelay.responses.request import parse_responses_request
from chatrelay.slots import Slot
from chatrelay.sse.framing import PING_FRAME
from chatrelay.web.context import context
from chatrelay.web.errors import openai_recorded_error
from chatrelay.web.routes.openai import (
    CONVERSATION_HEADER,
    MESSAGE_HEADER,
    openai_endpoint,
)
from chatrelay.web.sse import SSE_HEADERS, RelayEventStream, SlottedEventStream
from chatrelay.web.validation import read_json_object


def _ids(message: Message) -> dict[str, str]:
    return {CONVERSATION_HEADER: message.conversation_id, MESSAGE_HEADER: message.id}


def rendered(message: Message) -> dict[str, object]:
    """The response object of a message as stored or generated so far."""
    renderer = ResponseRenderer(message)
    for event in events_from_message(message):
        renderer.render(event)
    return renderer.snapshot()


async def _held_until_output(batches: Batches) -> list[LogEvent]:
    """Events up to and including the first one after `start` (or the end)."""
    held: list[LogEvent] = []
    async for batch in batches:
        held.extend(batch)
        if any(event.kind is not EventKind.START for event in batch):
            break
    return held


async def _frames(
    renderer: ResponseRenderer, held: list[LogEvent], batches: Batches, after: int
) -> AsyncIterator[bytes]:
    """The typed events numbered after `after`; a whole batch goes out in one write."""

    def encode(events: list[LogEvent]) -> bytes:
        out = [
            stream_frame(rendered_event)
            for event in events
            for rendered_event in renderer.render(event)
            if rendered_event["sequence_number"] > after
        ]
        return "".join(out).encode()

    if held:
        chunk = encode(held)
        if chunk:
            yield chunk
        if held[-1].is_terminal:
            return
    async for batch in batches:
        if not batch:
            yield PING_FRAME
            continue
        chunk = encode(batch)
        if chunk:
            yield chunk
        if batch[-1].is_terminal:
            return


def _stream(
    message: Message,
    held: list[LogEvent],
    batches: Batches,
    after: int = -1,
    *,
    slot: Slot | None = None,
) -> EventSourceResponse:
    """The typed event stream; `slot` (a place under the subscriber cap) is released when
    the response ends, however it ends."""
    frames = _frames(ResponseRenderer(message), held, batches, after)
    options: dict[str, Any] = {
        "headers": {**SSE_HEADERS, **_ids(message)},
        "ping": 0,
        "sep": "\n",
    }
    if slot is None:
        return RelayEventStream(frames, **options)
    return SlottedEventStream(frames, slot=slot, **options)


@openai_endpoint
async def create_response(request: Request) -> Response:
    ctx = context(request)
    tenant = ctx.tenant(request)
    body = await read_json_object(request, ctx.settings.max_body_bytes)
    parsed = parse_responses_request(body)
    assistant = await ctx.responses.create(tenant, parsed)
    ids = _ids(assistant)
    if parsed.background and not parsed.stream:
        return JSONResponse(rendered(assistant), headers=ids)
    batches = await ctx.responses.events(assistant, heartbeat=ctx.settings.ping_interval)
    held = [] if parsed.background else await _held_until_output(batches)
    if held and held[-1].kind is EventKind.ERROR and _no_output(held):
        return openai_recorded_error(held[-1].error, headers=ids)
    if parsed.stream:
        return _stream(assistant, held, batches)
    final = held[-1] if held else None
    if final is None or not final.is_terminal:
        async for batch in batches:
            if batch and batch[-1].is_terminal:
                final = batch[-1]
                break
    if final is None or not final.is_terminal:
        raise RuntimeError(f"event log of {assistant.id} ended without a terminal event")
    if final.kind is EventKind.ERROR:
        return openai_recorded_error(final.error, headers=ids)
    return JSONResponse(rendered(final.final), headers=ids)


def _no_output(held: list[LogEvent]) -> bool:
    return all(event.kind in (EventKind.START, EventKind.ERROR) for event in held)


def _starting_after(request: Request) -> int:
    raw = request.query_params.get("starting_after")
    if raw is None or raw == "":
        return -1
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise InvalidRequest(
            "'starting_after' must be a sequence number (a non-negative integer)",
            param="starting_after",
        )
    return int(raw)


def _stream_flag(request: Request) -> bool:
    raw = request.query_params.get("stream", "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidRequest("'stream' must be true or false", param="stream")
    return raw in ("true", "1")


@openai_endpoint
async def retrieve_response(request: Request) -> Response:
    ctx = context(request)
    tenant = ctx.tenant(request)
    stream = _stream_flag(request)
    after = _starting_after(request)
    message = await ctx.responses.find(tenant, request.path_params["response_id"])
    if not stream:
        return JSONResponse(rendered(message), headers=_ids(message))
    batches = await ctx.responses.events(message, heartbeat=ctx.settings.ping_interval)
    # A follower of an existing response, counted like a native `/events` subscriber.
    with ctx.subscriptions.admit(message.id) as slot:
        return _stream(message, [], batches, after, slot=slot.keep())


@openai_endpoint
async def cancel_response(request: Request) -> Response:
    ctx = context(request)
    tenant = ctx.tenant(request)
    message = await ctx.responses.find(tenant, request.path_params["response_id"])
    try:
        final = await ctx.chat.cancel(tenant, message.id)
    except Conflict:
        again = await ctx.responses.find(tenant, request.path_params["response_id"])
        if again.status is not Status.CANCELLED:
            raise
        final = again  # cancelling a cancelled response changes nothing
    return JSONResponse(rendered(final), headers=_ids(final))


@openai_endpoint
async def delete_response(request: Request) -> Response:
    ctx = context(request)
    tenant = ctx.tenant(request)
    deleted = await ctx.responses.delete(tenant, request.path_params["response_id"])
    return JSONResponse({"id": deleted, "object": "response", "deleted": True})


async def response_resource(request: Request) -> Response:
    """GET (retrieve, or resume its stream) and DELETE on one path."""
    if request.method == "DELETE":
        return await delete_response(request)
    return await retrieve_response(request)


routes = [
    Route("/v1/responses", create_response, methods=["POST"]),
    Route("/v1/responses/{response_id}", response_resource, methods=["GET", "DELETE"]),
    Route("/v1/responses/{response_id}/cancel", cancel_response, methods=["POST"]),
]
