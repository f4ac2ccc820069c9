"""One entry per route: `paths()[path][method]` is its OpenAPI operation.

To describe a new route, add its operation here (the helpers below build the usual parts);
`tests/unit/web/test_openapi.py` fails, naming the route, until the app's route table and
this table agree. Statuses are the ones each handler can really answer, so that the fuzz
can check them (`status_code_conformance`).
"""

from __future__ import annotations

from typing import Any

from chatrelay.web.openapi.schemas import Schema, ref

Operation = dict[str, Any]
# An operation per lower-case method, and optionally the `parameters` they share.
PathItem = dict[str, Any]

JSON = "application/json"
EVENT_STREAM = "text/event-stream"

_MID = "^msg_[0-9A-HJKMNP-TV-Z]{26}$"
_CID = "^conv_[0-9A-HJKMNP-TV-Z]{26}$"

NATIVE_EVENTS = """\
Server-Sent Events. The stream starts with `retry: 2000`, then one event per line group, \
each with an `id` (echo it back as `Last-Event-ID` or `?last_event_id=` to resume with \
exactly what you missed):

- `start`: `{"message": Message}`, the assistant message with status `streaming`;
- `delta`: `{"content": "…"}`, pieces that concatenate byte for byte to the final `content`;
- `reasoning`: `{"content": "…"}`, a reasoning model's thinking;
- `done`: `{"message": Message}`, status `completed` or `cancelled`; the stream ends;
- `error`: `{"error": {"code", "message"}, "message": Message}`, status `failed` or \
`interrupted`; the stream ends.

A `: ping` comment is sent after `CHATRELAY_PING_INTERVAL` seconds without events."""

OPENAI_EVENTS = """\
OpenAI's stream: `data: {chat.completion.chunk}` frames only (no `event:`, `id:` or \
`retry:`), the first carrying `delta.role`, content pieces as `delta.content`, reasoning \
as `delta.reasoning_content`, then the tool calls, the refusal, the finish chunk, the \
usage chunk (`choices: []`, only with `stream_options.include_usage`) and `data: [DONE]`. \
A failure after output has begun ends it with `data: {"error": {…}}` and no `[DONE]`."""

_STATUS_TEXT = {
    400: "bad request: `invalid_json`, `invalid_cursor`, `invalid_query`, `bad_request`, …",
    401: "missing or unknown client key (`unauthorized`)",
    404: "unknown id, or another tenant's (`not_found`)",
    409: "the message is in the wrong state for this (`message_finished`, `not_owner`, "
    "`not_generated`, `not_editable`, `message_streaming`, `message_superseded`)",
    413: "request body over CHATRELAY_MAX_BODY_BYTES (`payload_too_large`)",
    415: "a request body not sent as `Content-Type: application/json`",
    422: "a field is unknown, missing, empty, of the wrong type, too long (`too_long`) or "
    "over its size cap (`too_large`, `too_deep`: `metadata`, `params`)",
    429: "a per-tenant quota or rate limit (`rate_limited`: requests per minute; "
    "`too_many_generations`: unfinished generations; `too_many_subscribers`: open streams "
    "of one message); nothing was stored. `Retry-After` says when to try again",
    502: "the upstream failed",
    503: "the database does not answer, or the service is shutting down",
    504: "the upstream timed out",
}


_RETRY_AFTER = {
    "Retry-After": {
        "required": True,
        "description": "whole seconds to wait before trying again",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}


def _errors(statuses: tuple[int, ...], schema: str = "Error") -> dict[str, Any]:
    """Error responses; every `/v1` route can answer 429 (the rate limit covers them all)."""
    return {
        str(status): {
            "description": _STATUS_TEXT[status],
            "content": {JSON: {"schema": ref(schema)}},
            **({"headers": _RETRY_AFTER} if status == 429 else {}),
        }
        for status in statuses
    }


def _json(description: str, schema: Schema, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}, **extra}


def _body(schema: str, *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": ref(schema)}}}


def _path_id(name: str, pattern: str, what: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"the {what}'s id; any other shape is a 404",
        "schema": {"type": "string", "pattern": pattern},
    }


_HEADER_IDS = {
    "X-Message-Id": {"schema": {"type": "string"}, "description": "the assistant message"},
    "X-User-Message-Id": {
        "schema": {"type": "string"},
        "description": "the user message (not on regenerate)",
    },
}

# Native writes with a body: the body's own failures, plus the service's.
_BODY_ERRORS = (400, 401, 413, 415, 422, 429, 503)
# Native reads, deletes and cancels.
_READ_ERRORS = (401, 404, 429, 503)


def _turn(
    operation_id: str, summary: str, description: str, body: str, *, body_required: bool
) -> Operation:
    """Any request that starts a generation: 202 with links, or the event stream itself."""
    return {
        "operationId": operation_id,
        "summary": summary,
        "description": description
        + " With `Accept: text/event-stream` the response is the message's event stream;"
        " otherwise `202` with both messages and a `stream_url`, and the generation goes on"
        " without any client.",
        "requestBody": _body(body, required=body_required),
        "responses": {
            "200": {
                "description": "with `Accept: text/event-stream`: " + NATIVE_EVENTS,
                "headers": _HEADER_IDS,
                "content": {EVENT_STREAM: {"schema": ref("MessageEvent")}},
            },
            "202": _json(
                "stored and started",
                ref("TurnAccepted"),
                links=_TURN_LINKS,
                headers={
                    **_HEADER_IDS,
                    "Location": {
                        "schema": {"type": "string"},
                        "description": "the assistant message",
                    },
                },
            ),
            **_errors((*_BODY_ERRORS, 404, 409)),
        },
    }


def _links(parameter: str, source: str, *operation_ids: str) -> dict[str, Any]:
    """OpenAPI links: where an id in this response can be used next (the fuzz follows them)."""
    return {
        operation_id: {"operationId": operation_id, "parameters": {parameter: source}}
        for operation_id in operation_ids
    }


_CONVERSATION_LINKS = _links(
    "cid",
    "$response.body#/id",
    "getConversation",
    "listMessages",
    "postMessage",
    "deleteConversation",
)
_ASSISTANT = "$response.body#/assistant_message/id"
_TURN_LINKS = {
    **_links(
        "mid", _ASSISTANT, "getMessage", "messageEvents", "cancelMessage", "regenerateMessage"
    ),
    "editUserMessage": {
        "operationId": "editMessage",
        "parameters": {"mid": "$response.body#/user_message/id"},
    },
}

_CID_PARAM = _path_id("cid", _CID, "conversation")
_MID_PARAM = _path_id("mid", _MID, "message")


def _native() -> dict[str, PathItem]:
    return {
        "/v1/conversations": {
            "post": {
                "operationId": "createConversation",
                "summary": "Create a conversation",
                "requestBody": _body("ConversationCreate", required=False),
                "responses": {
                    "201": _json("created", ref("Conversation"), links=_CONVERSATION_LINKS),
                    **_errors(_BODY_ERRORS),
                },
            },
            "get": {
                "operationId": "listConversations",
                "summary": "The tenant's conversations, newest first",
                "description": "A page also ends early, with a `next_cursor`, before its "
                "encoding passes CHATRELAY_MAX_PAGE_BYTES (it always holds one item).",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "description": "`next_cursor` of the previous page",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": _json("one page", ref("ConversationList")),
                    **_errors((400, 401, 429, 503)),
                },
            },
        },
        "/v1/conversations/{cid}": {
            "parameters": [_CID_PARAM],
            "get": {
                "operationId": "getConversation",
                "summary": "A conversation with its newest messages in order, superseded ones "
                "included",
                "description": "At most CHATRELAY_MAX_CONVERSATION_MESSAGES messages, the "
                "newest, and no more than fit CHATRELAY_MAX_PAGE_BYTES; `messages_truncated` "
                "says older ones were left out (`GET …/messages` pages through all of them).",
                "responses": {
                    "200": _json("the conversation", ref("ConversationWithMessages")),
                    **_errors(_READ_ERRORS),
                },
            },
            "delete": {
                "operationId": "deleteConversation",
                "summary": "Delete a conversation and its messages (running generations stop)",
                "responses": {
                    "204": {"description": "deleted"},
                    **_errors(_READ_ERRORS),
                },
            },
        },
        "/v1/conversations/{cid}/messages": {
            "parameters": [_CID_PARAM],
            "get": {
                "operationId": "listMessages",
                "summary": "Every message of the conversation, oldest first, a page at a time",
                "description": "By position, superseded messages included. A message added "
                "while you page shows up on a later page, and none shows up twice. A page "
                "also ends early, with a `next_cursor`, before its encoding passes "
                "CHATRELAY_MAX_PAGE_BYTES (it always holds one message).",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "description": "`next_cursor` of the previous page",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,10}$"},
                    },
                ],
                "responses": {
                    "200": _json("one page", ref("MessageList")),
                    **_errors((400, *_READ_ERRORS)),
                },
            },
            "post": _turn(
                "postMessage",
                "Post a user message and start the answer",
                "Stores the user message and starts generating the assistant message.",
                "MessagePost",
                body_required=True,
            ),
        },
        "/v1/messages/{mid}": {
            "parameters": [_MID_PARAM],
            "get": {
                "operationId": "getMessage",
                "summary": "One message; a streaming one shows the text so far",
                "responses": {
                    "200": _json("the message", ref("MessageRead")),
                    **_errors(_READ_ERRORS),
                },
            },
        },
        "/v1/messages/{mid}/events": {
            "parameters": [_MID_PARAM],
            "get": {
                "operationId": "messageEvents",
                "summary": "The assistant message's event stream, live or replayed",
                "description": "Authenticates with `Authorization`, or with the `token` of a "
                "`stream_url` when no `Authorization` header is sent.",
                "parameters": [
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "description": "resume after this event id",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,10}$"},
                    },
                    {
                        "name": "last_event_id",
                        "in": "query",
                        "description": "the same, for clients that cannot set headers",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,10}$"},
                    },
                    {
                        "name": "token",
                        "in": "query",
                        "description": "from `stream_url`; opens this one stream",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": NATIVE_EVENTS,
                        "content": {EVENT_STREAM: {"schema": ref("MessageEvent")}},
                    },
                    "204": {"description": "resumed from the terminal event: nothing left"},
                    **_errors((400, *_READ_ERRORS)),
                },
            },
        },
        "/v1/messages/{mid}/cancel": {
            "parameters": [_MID_PARAM],
            "post": {
                "operationId": "cancelMessage",
                "summary": "Stop the generation; the partial text is kept",
                "responses": {
                    "200": _json("the message, `cancelled`", ref("Message")),
                    **_errors((*_READ_ERRORS, 409)),
                },
            },
        },
        "/v1/messages/{mid}/regenerate": {
            "parameters": [_MID_PARAM],
            "post": _turn(
                "regenerateMessage",
                "A new answer to the same history",
                "On an assistant message: the old message's model and params unless given; "
                "the old answer and later messages are superseded.",
                "Regenerate",
                body_required=False,
            ),
        },
        "/v1/messages/{mid}/edit": {
            "parameters": [_MID_PARAM],
            "post": _turn(
                "editMessage",
                "Replace a user message and answer it",
                "On a user message: stores the new text as a new user message.",
                "MessageEdit",
                body_required=True,
            ),
        },
    }


def _openai() -> dict[str, PathItem]:
    openai_errors = (400, 401, 404, 413, 415, 429, 502, 503, 504)
    return {
        "/v1/chat/completions": {
            "post": {
                "operationId": "createChatCompletion",
                "summary": "OpenAI-compatible chat completion, recorded as a conversation",
                "tags": ["openai"],
                "parameters": [
                    {
                        "name": "X-Chatrelay-Conversation-Id",
                        "in": "header",
                        "description": "continue this conversation (docs/openai-compat.md)",
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": ref("ChatCompletionRequest")}},
                },
                "responses": {
                    "200": {
                        "description": "a `chat.completion`, or with `stream: true` "
                        + OPENAI_EVENTS,
                        "headers": {
                            "X-Chatrelay-Conversation-Id": {"schema": {"type": "string"}},
                            "X-Chatrelay-Message-Id": {"schema": {"type": "string"}},
                        },
                        "content": {
                            JSON: {"schema": ref("ChatCompletion")},
                            EVENT_STREAM: {"schema": ref("ChatCompletionEvent")},
                        },
                    },
                    **_errors(openai_errors, "OpenAIError"),
                },
            }
        },
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "summary": "The upstream's models in OpenAI's list shape (cached for 60 s)",
                "tags": ["openai"],
                "responses": {
                    "200": _json("the models", ref("ModelList")),
                    **_errors((401, 429, 502, 503, 504), "OpenAIError"),
                },
            }
        },
        "/v1/models/{model_id}": {
            "get": {
                "operationId": "retrieveModel",
                "summary": "One model of the upstream's list (ids may contain `/`)",
                "tags": ["openai"],
                "parameters": [
                    {
                        "name": "model_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1},
                    }
                ],
                "responses": {
                    "200": _json("the model", ref("Model")),
                    **_errors((401, 404, 429, 502, 503, 504), "OpenAIError"),
                },
            }
        },
        **_responses(),
    }


_RESPONSE_ID = {
    "name": "response_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}
_RESPONSE_EVENTS = (
    "with `stream: true`, OpenAI's typed events (`response.created` … "
    "`response.completed`), each with its `sequence_number`"
)


def _responses() -> dict[str, PathItem]:
    """OpenAI's Responses API over the chat-completions upstream (docs/openai-compat.md)."""
    response = ref("Response")
    return {
        "/v1/responses": {
            "post": {
                "operationId": "createResponse",
                "summary": "Create a response (streamed, background or not), recorded as a "
                "conversation message",
                "tags": ["openai"],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": ref("ResponseRequest")}},
                },
                "responses": {
                    "200": {
                        "description": "the response object, or " + _RESPONSE_EVENTS,
                        "content": {
                            JSON: {"schema": response},
                            EVENT_STREAM: {"schema": ref("ResponseEvent")},
                        },
                    },
                    **_errors((400, 401, 404, 413, 415, 422, 429, 503), "OpenAIError"),
                },
            }
        },
        "/v1/responses/{response_id}": {
            "get": {
                "operationId": "retrieveResponse",
                "summary": "The response; with `stream=true&starting_after=N` its event "
                "stream resumed exactly after sequence number N",
                "tags": ["openai"],
                "parameters": [
                    _RESPONSE_ID,
                    {"name": "stream", "in": "query", "schema": {"type": "boolean"}},
                    {
                        "name": "starting_after",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "the response object, or its events",
                        "content": {
                            JSON: {"schema": response},
                            EVENT_STREAM: {"schema": ref("ResponseEvent")},
                        },
                    },
                    **_errors((400, 401, 404, 429), "OpenAIError"),
                },
            },
            "delete": {
                "operationId": "deleteResponse",
                "summary": "Stop it if it runs and delete it",
                "tags": ["openai"],
                "parameters": [_RESPONSE_ID],
                "responses": {
                    "200": _json("deleted", ref("ResponseDeleted")),
                    **_errors((401, 404, 429), "OpenAIError"),
                },
            },
        },
        "/v1/responses/{response_id}/cancel": {
            "post": {
                "operationId": "cancelResponse",
                "summary": "Stop a running response; its partial output is kept",
                "tags": ["openai"],
                "parameters": [_RESPONSE_ID],
                "responses": {
                    "200": _json("the cancelled response", response),
                    **_errors((401, 404, 409, 429, 503), "OpenAIError"),
                },
            }
        },
    }


def _service() -> dict[str, PathItem]:
    unauthenticated: list[dict[str, list[str]]] = [{}]
    return {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: touches nothing",
                "security": unauthenticated,
                "tags": ["service"],
                "responses": {"200": _json("alive", ref("Health"))},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: the database answers and the service is not draining",
                "security": unauthenticated,
                "tags": ["service"],
                "responses": {
                    "200": _json("ready", ref("Readiness")),
                    "503": _json("not ready, with the failing checks", ref("Readiness")),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics, all named chatrelay_… (docs/operations.md)",
                "description": "Open unless CHATRELAY_METRICS_TOKEN is set; absent with "
                "CHATRELAY_METRICS=off.",
                "security": unauthenticated,
                "tags": ["service"],
                "responses": {
                    "200": {
                        "description": "the Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors((401,)),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": unauthenticated,
                "tags": ["service"],
                "responses": {"200": _json("OpenAPI 3.1", {"type": "object"})},
            }
        },
        "/": {
            "get": {
                "operationId": "chatPage",
                "summary": "The browser chat page",
                "security": unauthenticated,
                "tags": ["page"],
                "responses": {
                    "200": {
                        "description": "HTML",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/static/{name}": {
            "get": {
                "operationId": "staticFile",
                "summary": "The chat page's scripts and style (a fixed list of files)",
                "security": unauthenticated,
                "tags": ["page"],
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "the file",
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors((404,)),
                },
            }
        },
    }


def paths() -> dict[str, PathItem]:
    """Every documented route; the order is the order of the document."""
    return {**_native(), **_openai(), **_service()}
