"""`/v1/messages/{mid}`: read one, follow its events, cancel its generation."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatrelay.errors import NotFound
from chatrelay.generation.log import parse_cursor
from chatrelay.ids import looks_like_id
from chatrelay.web.context import context
from chatrelay.web.sse import event_stream


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
    events = await ctx.registry.events(
        tenant, message_id, cursor, heartbeat=ctx.settings.ping_interval
    )
    if events is None:
        return Response(status_code=204)  # resumed from the terminal event: nothing left

    def abandoned() -> None:
        generation = ctx.registry.generations.get(message_id)
        if generation is not None and generation.cancel_on_disconnect:
            generation.stop("client_disconnected")

    return event_stream(events, on_abandoned=abandoned, headers=headers)


async def get_message(request: Request) -> Response:
    ctx = context(request)
    tenant = ctx.auth.tenant(request)
    message = await ctx.chat.get_message(tenant, _message_id(request))
    return JSONResponse(message.to_api())


async def message_events(request: Request) -> Response:
    ctx = context(request)
    mid = _message_id(request)
    token = request.query_params.get("token")
    if token and "authorization" not in request.headers:
        tenant = ctx.auth.tenant_from_token(token, mid)
    else:
        tenant = ctx.auth.tenant(request)
    raw_cursor = request.headers.get("last-event-id")
    if raw_cursor is None:
        raw_cursor = request.query_params.get("last_event_id")
    return await message_stream(request, tenant, mid, cursor=parse_cursor(raw_cursor))


async def cancel_message(request: Request) -> Response:
    ctx = context(request)
    tenant = ctx.auth.tenant(request)
    message = await ctx.registry.cancel(tenant, _message_id(request))
    return JSONResponse(message.to_api())


routes = [
    Route("/v1/messages/{mid}", get_message, methods=["GET"]),
    Route("/v1/messages/{mid}/events", message_events, methods=["GET"]),
    Route("/v1/messages/{mid}/cancel", cancel_message, methods=["POST"]),
]
