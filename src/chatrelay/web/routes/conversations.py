"""`/v1/conversations`: create, list, read, delete, and post a message to one."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatrelay.errors import BadRequest, NotFound
from chatrelay.ids import looks_like_id
from chatrelay.web.context import context
from chatrelay.web.routes.messages import turn_response
from chatrelay.web.validation import (
    TURN_FIELDS,
    optional_model,
    optional_object,
    optional_str,
    query_int,
    read_json_object,
    reject_unknown,
    required_text,
    turn_options,
)

_CONVERSATION_FIELDS = ("title", "system_prompt", "model", "metadata")
_MESSAGE_FIELDS = ("content", *TURN_FIELDS)


def _conversation_id(request: Request) -> str:
    cid: str = request.path_params["cid"]
    if not looks_like_id(cid, "conv"):
        raise NotFound(f"conversation {cid[:64]} not found")
    return cid


async def create_conversation(request: Request) -> Response:
    ctx = context(request)
    tenant = ctx.auth.tenant(request)
    body = await read_json_object(request, ctx.settings.max_body_bytes)
    reject_unknown(body, _CONVERSATION_FIELDS)
    conversation = await ctx.chat.create_conversation(
        tenant,
        title=optional_str(body, "title", max_len=1000),
        system_prompt=optional_str(body, "system_prompt", max_len=ctx.settings.max_content_chars),
        model=optional_model(body),
        metadata=optional_object(body, "metadata"),
    )
    return JSONResponse(conversation.to_api(), status_code=201)


async def list_conversations(request: Request) -> Response:
    ctx = context(request)
    tenant = ctx.auth.tenant(request)
    limit = query_int(request, "limit", 20, low=1, high=100)
    cursor = request.query_params.get("cursor") or None
    if cursor is not None and not looks_like_id(cursor, "conv"):
        raise BadRequest("'cursor' is not a cursor this service gave out", code="invalid_cursor")
    conversations, next_cursor = await ctx.chat.repo.list_conversations(
        tenant, limit=limit, before=cursor
    )
    return JSONResponse({"data": [c.to_api() for c in conversations], "next_cursor": next_cursor})


async def get_conversation(request: Request) -> Response:
    ctx = context(request)
    tenant = ctx.auth.tenant(request)
    conversation, messages = await ctx.chat.conversation_with_messages(
        tenant, _conversation_id(request)
    )
    return JSONResponse({**conversation.to_api(), "messages": [m.to_api() for m in messages]})


async def delete_conversation(request: Request) -> Response:
    ctx = context(request)
    tenant = ctx.auth.tenant(request)
    await ctx.chat.delete_conversation(tenant, _conversation_id(request))
    return Response(status_code=204)


async def post_message(request: Request) -> Response:
    """Store the user message and start generating; stream it, or answer 202 with links."""
    ctx = context(request)
    tenant = ctx.auth.tenant(request)
    cid = _conversation_id(request)
    body = await read_json_object(request, ctx.settings.max_body_bytes)
    reject_unknown(body, _MESSAGE_FIELDS)
    content = required_text(body, "content", max_len=ctx.settings.max_content_chars)
    posted = await ctx.chat.post_message(tenant, cid, content=content, options=turn_options(body))
    return await turn_response(request, tenant, posted)


routes = [
    Route("/v1/conversations", create_conversation, methods=["POST"]),
    Route("/v1/conversations", list_conversations, methods=["GET"]),
    Route("/v1/conversations/{cid}", get_conversation, methods=["GET"]),
    Route("/v1/conversations/{cid}", delete_conversation, methods=["DELETE"]),
    Route("/v1/conversations/{cid}/messages", post_message, methods=["POST"]),
]
