"""`/v1/messages/{mid}`: read one, follow its events, cancel its generation."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatrelay.errors import LimitKind, NotFound
from chatrelay.generation.peers import Watcher
from chatrelay.ids import looks_like_id
from chatrelay.service import PostedMessage
from chatrelay.web.context import context
from chatrelay.web.sse import event_stream
from chatrelay.web.validation import (
    TURN_FIELDS,
    event_cursor,
    read_json_object,
    reject_unknown,
    required_text,
    turn_options,
)


def _message_id(request: Request) -> str:
    mid: str = request.path_params["mid"]
    if not looks_like_id(mid, "msg"):
        raise NotFound(f"message {mid[:64]} not found")
    return mid


def stream_url(request: Request, tenant: str, message_id: str) -> str:
    """A URL a browser can open with `EventSource`: it carries a signed, short-lived token."""
    token = context(request).auth.stream_token(tenant, message_id)
    return f"/v1/messages/{message_id}/events?token={token}"


async def message_stream(
    request: Request,
    tenant: str,
    message_id: str,
    *,
    cursor: int | None,
    headers: dict[str, str] | None = None,
) -> Response:
    ctx = context(request)
    batches = await ctx.subscriptions.event_batches(
        tenant, message_id, cursor, heartbeat=ctx.settings.ping_interval
    )
    if batches is None:
        return Response(status_code=204)  # resumed from the terminal event: nothing left
    # Only now, with the tenant's access to the message checked: another tenant learns
    # nothing from a 429 about a message id that is not theirs.
    with ctx.subscriptions.admit(message_id) as slot:
        watched: Watcher | None = ctx.registry.watch(message_id)
        if watched is None:  # generated on another instance: counted there
            watched = await ctx.engine.peers.watch(tenant, message_id)
        slot.keep()  # the response releases it when it ends, however it ends
        if watched is None:
            return event_stream(batches, headers=headers, slot=slot)
        return event_stream(
            batches,
            on_open=watched.watcher_joined,
            on_close=watched.watcher_left,
            headers=headers,
            slot=slot,
        )


def _wants_event_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "").lower()


async def turn_response(request: Request, tenant: str, posted: PostedMessage) -> Response:
    """The answer to anything that starts a generation: its event stream, or 202 with links."""
    assistant = posted.assistant
    ids = {"X-Message-Id": assistant.id}
    if posted.user is not None:
        ids["X-User-Message-Id"] = posted.user.id
    if _wants_event_stream(request):
        return await message_stream(request, tenant, assistant.id, cursor=None, headers=ids)
    body: dict[str, Any] = {
        "user_message": posted.user.to_api() if posted.user is not None else None,
        "assistant_message": assistant.to_api(),
        "stream_url": stream_url(request, tenant, assistant.id),
    }
    return JSONResponse(
        body, status_code=202, headers={**ids, "Location": f"/v1/messages/{assistant.id}"}
    )


async def get_message(request: Request) -> Response:
    """One message; an assistant message also gets a fresh `stream_url` for its events."""
    ctx = context(request)
    tenant = ctx.tenant(request)
    message = await ctx.chat.get_message(tenant, _message_id(request))
    body = message.to_api()
    if message.role == "assistant":
        body["stream_url"] = stream_url(request, tenant, message.id)
    return JSONResponse(body)


async def message_events(request: Request) -> Response:
    ctx = context(request)
    mid = _message_id(request)
    token = request.query_params.get("token")
    if token and "authorization" not in request.headers:
        tenant = ctx.tenant_from_token(token, mid)
    else:
        tenant = ctx.tenant(request)
    raw_cursor = request.headers.get("last-event-id")
    if raw_cursor is None:
        raw_cursor = request.query_params.get("last_event_id")
    return await message_stream(request, tenant, mid, cursor=event_cursor(raw_cursor))


async def cancel_message(request: Request) -> Response:
    ctx = context(request)
    tenant = ctx.tenant(request)
    message = await ctx.chat.cancel(tenant, _message_id(request))
    return JSONResponse(message.to_api())


async def regenerate_message(request: Request) -> Response:
    ctx = context(request)
    tenant = ctx.tenant(request)
    body = await read_json_object(request, ctx.settings.max_body_bytes)
    reject_unknown(body, TURN_FIELDS)
    posted = await ctx.chat.regenerate(
        tenant,
        _message_id(request),
        turn_options(body, max_params_bytes=ctx.settings.max_params_bytes),
    )
    return await turn_response(request, tenant, posted)


async def edit_message(request: Request) -> Response:
    ctx = context(request)
    tenant = ctx.tenant(request)
    body = await read_json_object(request, ctx.settings.max_body_bytes)
    reject_unknown(body, ("content", *TURN_FIELDS))
    content = required_text(
        body, "content", max_len=ctx.settings.max_content_chars, limit=LimitKind.CONTENT
    )
    posted = await ctx.chat.edit(
        tenant,
        _message_id(request),
        content=content,
        options=turn_options(body, max_params_bytes=ctx.settings.max_params_bytes),
    )
    return await turn_response(request, tenant, posted)


routes = [
    Route("/v1/messages/{mid}", get_message, methods=["GET"]),
    Route("/v1/messages/{mid}/events", message_events, methods=["GET"]),
    Route("/v1/messages/{mid}/cancel", cancel_message, methods=["POST"]),
    Route("/v1/messages/{mid}/regenerate", regenerate_message, methods=["POST"]),
    Route("/v1/messages/{mid}/edit", edit_message, methods=["POST"]),
]
