"""`/v1/conversations`: create, list, read, delete, and post a message to one."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatrelay.errors import BadRequest, LimitKind, NotFound
from chatrelay.ids import looks_like_id
from chatrelay.web.context import context
from chatrelay.web.pagination import (
    encode_bounded,
    encode_json,
    json_array,
    object_response,
    page_response,
)
from chatrelay.web.routes.messages import turn_response
from chatrelay.web.validation import (
    TURN_FIELDS,
    metadata_object,
    optional_model,
    optional_str,
    query_int,
    read_json_object,
    reject_unknown,
    required_text,
    turn_options,
)

_CONVERSATION_FIELDS = ("title", "system_prompt", "model", "metadata")
_MESSAGE_FIELDS = ("content", *TURN_FIELDS)
# Every list: `limit` from 1 to this (the contract's bound), default `_DEFAULT_LIMIT`.
MAX_LIST_LIMIT = 100
_DEFAULT_CONVERSATIONS = 20
_DEFAULT_MESSAGES = 50


def _conversation_id(request: Request) -> str:
    cid: str = request.path_params["cid"]
    if not looks_like_id(cid, "conv"):
        raise NotFound(f"conversation {cid[:64]} not found")
    return cid


async def create_conversation(request: Request) -> Response:
    ctx = context(request)
    tenant = ctx.tenant(request)
    body = await read_json_object(request, ctx.settings.max_body_bytes)
    reject_unknown(body, _CONVERSATION_FIELDS)
    conversation = await ctx.chat.create_conversation(
        tenant,
        title=optional_str(
            body, "title", max_len=ctx.settings.max_title_chars, limit=LimitKind.TITLE
        ),
        system_prompt=optional_str(
            body,
            "system_prompt",
            max_len=ctx.settings.max_content_chars,
            limit=LimitKind.CONTENT,
        ),
        model=optional_model(body),
        metadata=metadata_object(
            body,
            max_bytes=ctx.settings.max_metadata_bytes,
            max_depth=ctx.settings.max_metadata_depth,
        ),
    )
    return JSONResponse(conversation.to_api(), status_code=201)


async def list_conversations(request: Request) -> Response:
    """Newest first, `limit` at most; the page ends early at `CHATRELAY_MAX_PAGE_BYTES`."""
    ctx = context(request)
    tenant = ctx.tenant(request)
    limit = query_int(request, "limit", _DEFAULT_CONVERSATIONS, low=1, high=MAX_LIST_LIMIT)
    cursor = request.query_params.get("cursor") or None
    if cursor is not None and not looks_like_id(cursor, "conv"):
        raise BadRequest("'cursor' is not a cursor this service gave out", code="invalid_cursor")
    conversations, next_cursor = await ctx.chat.repo.list_conversations(
        tenant, limit=limit, before=cursor
    )
    parts = encode_bounded((c.to_api() for c in conversations), ctx.settings.max_page_bytes)
    if len(parts) < len(conversations):
        next_cursor = conversations[len(parts) - 1].id
    return page_response(parts, next_cursor)


async def get_conversation(request: Request) -> Response:
    """The conversation with its newest messages (at most `CHATRELAY_MAX_CONVERSATION_MESSAGES`
    and `CHATRELAY_MAX_PAGE_BYTES`), in order; `messages_truncated` says older ones exist,
    which `GET …/messages` pages through."""
    ctx = context(request)
    tenant = ctx.tenant(request)
    conversation, messages, truncated = await ctx.chat.conversation_with_messages(
        tenant, _conversation_id(request), limit=ctx.settings.max_conversation_messages
    )
    newest_first = encode_bounded(
        (m.to_api() for m in reversed(messages)), ctx.settings.max_page_bytes
    )
    truncated = truncated or len(newest_first) < len(messages)
    return object_response(
        conversation.to_api(),
        {
            "messages": json_array(newest_first[::-1]),
            "messages_truncated": encode_json(truncated),
        },
    )


def _seq_cursor(request: Request) -> int | None:
    """A messages cursor: the position this service gave out as `next_cursor`."""
    raw = request.query_params.get("cursor")
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10:
        raise BadRequest("'cursor' is not a cursor this service gave out", code="invalid_cursor")
    return int(raw)


async def list_messages(request: Request) -> Response:
    """The conversation's messages oldest first (superseded ones included), `limit` per
    page; `next_cursor` continues after the last one sent, so a walk sees each message
    exactly once, including those added while it pages."""
    ctx = context(request)
    tenant = ctx.tenant(request)
    cid = _conversation_id(request)
    limit = query_int(request, "limit", _DEFAULT_MESSAGES, low=1, high=MAX_LIST_LIMIT)
    after = _seq_cursor(request)
    messages, more = await ctx.chat.messages_page(tenant, cid, after_seq=after, limit=limit)
    parts = encode_bounded((m.to_api() for m in messages), ctx.settings.max_page_bytes)
    more = more or len(parts) < len(messages)
    next_cursor = str(messages[len(parts) - 1].seq) if more and parts else None
    return page_response(parts, next_cursor)


async def delete_conversation(request: Request) -> Response:
    ctx = context(request)
    tenant = ctx.tenant(request)
    await ctx.chat.delete_conversation(tenant, _conversation_id(request))
    return Response(status_code=204)


async def post_message(request: Request) -> Response:
    """Store the user message and start generating; stream it, or answer 202 with links."""
    ctx = context(request)
    tenant = ctx.tenant(request)
    cid = _conversation_id(request)
    body = await read_json_object(request, ctx.settings.max_body_bytes)
    reject_unknown(body, _MESSAGE_FIELDS)
    content = required_text(
        body, "content", max_len=ctx.settings.max_content_chars, limit=LimitKind.CONTENT
    )
    posted = await ctx.chat.post_message(
        tenant,
        cid,
        content=content,
        options=turn_options(body, max_params_bytes=ctx.settings.max_params_bytes),
    )
    return await turn_response(request, tenant, posted)


routes = [
    Route("/v1/conversations", create_conversation, methods=["POST"]),
    Route("/v1/conversations", list_conversations, methods=["GET"]),
    Route("/v1/conversations/{cid}", get_conversation, methods=["GET"]),
    Route("/v1/conversations/{cid}", delete_conversation, methods=["DELETE"]),
    Route("/v1/conversations/{cid}/messages", list_messages, methods=["GET"]),
    Route("/v1/conversations/{cid}/messages", post_message, methods=["POST"]),
]
