"""JSON Schemas (2020-12, as OpenAPI 3.1 uses) of the API's objects and error shapes.

Objects the service builds itself (conversation, message, native errors) are closed
(`additionalProperties: false`), so a field added to `to_api()` and not here fails the
schema fuzz. Shapes that carry upstream data (usage, tool calls, OpenAI objects) are open.
"""

from __future__ import annotations

from typing import Any

from chatrelay.completions.request import ROLES
from chatrelay.models import Status
from chatrelay.web.validation import RESERVED_PARAMS

Schema = dict[str, Any]

ERROR_CODE_PATTERN = "^[a-z][a-z0-9_]*$"
# Wire form of every timestamp: RFC 3339 in UTC with milliseconds (`…T19:33:14.658Z`).
TIMESTAMP: Schema = {"type": "string", "format": "date-time"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """`schema` or `null` (OpenAPI 3.1 has no `nullable`; a union with null instead)."""
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    kind = schema["type"]
    kinds = [*kind, "null"] if isinstance(kind, list) else [kind, "null"]
    return {**schema, "type": kinds}


def closed(properties: dict[str, Schema], *, required: list[str] | None = None) -> Schema:
    """An object with exactly these properties (all required unless `required` says)."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def _error_payload() -> Schema:
    return {
        "type": "object",
        "description": "Why a message failed: a stable snake_case `code` and a human `message`.",
        "properties": {
            "code": {"type": "string", "pattern": ERROR_CODE_PATTERN},
            "message": {"type": "string"},
            "retry_after": {
                "type": "number",
                "minimum": 0,
                "description": "seconds, when a rate-limited or unavailable upstream said",
            },
        },
        "required": ["code", "message"],
        "additionalProperties": False,
    }


def _message_properties() -> dict[str, Schema]:
    return {
        "id": {"type": "string", "pattern": "^msg_[0-9A-HJKMNP-TV-Z]{26}$"},
        "conversation_id": {"type": "string", "pattern": "^conv_[0-9A-HJKMNP-TV-Z]{26}$"},
        "role": {
            "type": "string",
            "enum": sorted(ROLES),
            "description": "`user` or `assistant` on the native API; messages recorded from "
            "`/v1/chat/completions` may also be `system`, `developer` or `tool`.",
        },
        "content": {"type": "string", "description": "the text so far, also while streaming"},
        "status": {"type": "string", "enum": [str(s) for s in Status]},
        "finish_reason": nullable({"type": "string"}),
        "model": nullable({"type": "string"}),
        "usage": nullable(ref("Usage")),
        "error": nullable(ref("MessageError")),
        "reasoning": nullable({"type": "string"}),
        "refusal": nullable({"type": "string"}),
        "tool_calls": nullable({"type": "array", "items": {"type": "object"}}),
        "superseded_by": nullable(
            {"type": "string", "description": "the message that replaced this one"}
        ),
        "created_at": TIMESTAMP,
        "completed_at": nullable(TIMESTAMP),
    }


def _conversation_properties() -> dict[str, Schema]:
    return {
        "id": {"type": "string", "pattern": "^conv_[0-9A-HJKMNP-TV-Z]{26}$"},
        "title": nullable({"type": "string"}),
        "system_prompt": nullable({"type": "string"}),
        "model": nullable({"type": "string"}),
        "metadata": {"type": "object", "description": "the client's own, stored as given"},
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
    }


STREAM_URL: Schema = {
    "type": "string",
    "pattern": "^/v1/messages/msg_[0-9A-HJKMNP-TV-Z]{26}/events\\?token=[A-Za-z0-9_-]+$",
    "description": "a path with a short-lived token that opens this one message's stream "
    "without an `Authorization` header (for `EventSource`)",
}


def _turn_properties(max_model: int = 200) -> dict[str, Schema]:
    return {
        "model": nullable(
            {"type": "string", "minLength": 1, "maxLength": max_model, "pattern": "\\S"}
        ),
        "params": nullable(
            {
                "type": "object",
                "description": "merged into the upstream request (e.g. `temperature`); may not "
                f"set {', '.join(sorted(RESERVED_PARAMS))}",
                "not": {"anyOf": [{"required": [name]} for name in sorted(RESERVED_PARAMS)]},
            }
        ),
        "cancel_on_disconnect": nullable(
            {
                "type": "boolean",
                "description": "stop the generation when the last client following it leaves",
            }
        ),
    }


def _text(max_chars: int, description: str) -> Schema:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": max_chars,
        "pattern": "\\S",
        "description": description,
    }


def _json_data(schema: Schema) -> Schema:
    """An SSE event's `data`: a line of JSON that `schema` describes."""
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


def _event(kinds: list[str], data: Schema) -> Schema:
    return {
        "type": "object",
        "properties": {
            "event": {"type": "string", "enum": kinds},
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "data": _json_data(data),
        },
        "required": ["event", "id", "data"],
    }


def _native_event() -> Schema:
    """One event of a native stream, as an SSE parser sees it (`event`, `id`, `data`)."""
    with_message = closed({"message": ref("Message")})
    return {
        "description": "one event of a message's stream; `data` is JSON",
        "anyOf": [
            _event(["start", "done"], with_message),
            _event(["delta", "reasoning"], closed({"content": {"type": "string"}})),
            _event(
                ["tool_call"],
                {
                    "description": "a tool call starting (`id`, `type`, `name`) or a piece of "
                    "its `arguments`; `index` is its position in `tool_calls`",
                    "anyOf": [
                        closed(
                            {
                                "index": {"type": "integer", "minimum": 0},
                                "id": nullable({"type": "string"}),
                                "type": {"type": "string"},
                                "name": {"type": "string"},
                            }
                        ),
                        closed(
                            {
                                "index": {"type": "integer", "minimum": 0},
                                "arguments": {"type": "string"},
                            }
                        ),
                    ],
                },
            ),
            _event(["error"], closed({"error": ref("MessageError"), "message": ref("Message")})),
        ],
    }


def native_schemas(max_content_chars: int) -> dict[str, Schema]:
    """Objects of the native API; text limits as this process enforces them."""
    message = _message_properties()
    conversation = _conversation_properties()
    turn = _turn_properties()
    return {
        "Error": {
            "type": "object",
            "description": "Every native error. `code` is stable and snake_case "
            "(README, 'Errors').",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string", "pattern": ERROR_CODE_PATTERN},
                        "message": {"type": "string"},
                    },
                    "required": ["code", "message"],
                }
            },
            "required": ["error"],
            "additionalProperties": False,
        },
        "MessageError": _error_payload(),
        "Usage": {
            "type": "object",
            "description": "as the upstream reported it; `total_tokens` filled in when missing",
            "properties": {
                "prompt_tokens": {"type": "integer"},
                "completion_tokens": {"type": "integer"},
                "total_tokens": {"type": "integer"},
            },
        },
        "Message": closed(message),
        "MessageRead": closed({**message, "stream_url": STREAM_URL}, required=list(message))
        | {"description": "A message; an assistant message also carries a fresh `stream_url`."},
        "Conversation": closed(conversation),
        "ConversationWithMessages": closed(
            {
                **conversation,
                "messages": {
                    "type": "array",
                    "items": ref("Message"),
                    "description": "the newest messages, in order",
                },
                "messages_truncated": {
                    "type": "boolean",
                    "description": "older messages were left out of `messages`; "
                    "`GET /v1/conversations/{cid}/messages` pages through all of them",
                },
            }
        ),
        "ConversationList": closed(
            {
                "data": {"type": "array", "items": ref("Conversation")},
                "next_cursor": nullable(
                    {"type": "string", "description": "pass as `cursor` for the next page"}
                ),
            }
        ),
        "MessageList": closed(
            {
                "data": {"type": "array", "items": ref("Message")},
                "next_cursor": nullable(
                    {
                        "type": "string",
                        "pattern": "^[0-9]{1,10}$",
                        "description": "pass as `cursor` for the next page",
                    }
                ),
            }
        ),
        "ConversationCreate": closed(
            {
                "title": nullable({"type": "string", "maxLength": 1000}),
                "system_prompt": nullable({"type": "string", "maxLength": max_content_chars}),
                "model": turn["model"],
                "metadata": nullable(
                    {
                        "type": "object",
                        "description": "at most CHATRELAY_MAX_METADATA_BYTES as compact JSON, "
                        "nested at most CHATRELAY_MAX_METADATA_DEPTH deep",
                    }
                ),
            },
            required=[],
        ),
        "MessagePost": closed(
            {"content": _text(max_content_chars, "the user's message"), **turn},
            required=["content"],
        ),
        "MessageEdit": closed(
            {"content": _text(max_content_chars, "the new text of the user message"), **turn},
            required=["content"],
        ),
        "Regenerate": closed(turn, required=[]),
        "TurnAccepted": closed(
            {
                "user_message": nullable(ref("Message")),
                "assistant_message": ref("Message"),
                "stream_url": STREAM_URL,
            }
        )
        | {"description": "`user_message` is null for a regenerate."},
        "MessageEvent": _native_event(),
        "Health": closed({"status": {"const": "ok"}}),
        "Readiness": closed(
            {
                "status": {"type": "string", "enum": ["ok", "unavailable"]},
                "checks": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "`database` (and `service` while draining): `ok` or why not",
                },
            }
        ),
    }


def openai_schemas() -> dict[str, Schema]:
    """OpenAI's shapes as chatrelay produces and accepts them (docs/openai-compat.md)."""
    return {
        "OpenAIError": {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "message": {"type": "string"},
                        "type": {
                            "type": "string",
                            "enum": [
                                "invalid_request_error",
                                "authentication_error",
                                "rate_limit_error",
                                "server_error",
                            ],
                        },
                        "code": {"type": "string", "pattern": ERROR_CODE_PATTERN},
                        "param": nullable({"type": "string"}),
                    },
                    "required": ["message", "type", "code", "param"],
                    "additionalProperties": False,
                }
            },
            "required": ["error"],
            "additionalProperties": False,
        },
        "ChatMessage": {
            "type": "object",
            "properties": {
                "role": {"type": "string", "enum": sorted(ROLES)},
                "content": {
                    "anyOf": [
                        {"type": "string"},
                        {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"type": {"type": "string"}},
                                "required": ["type"],
                            },
                        },
                        {"type": "null"},
                    ],
                    "description": "null only on `assistant` messages",
                },
                "tool_call_id": {"type": "string", "description": "required on `tool` messages"},
                "tool_calls": {"type": "array", "items": {"type": "object"}},
            },
            "required": ["role"],
        },
        "ChatCompletionRequest": {
            "type": "object",
            "description": "Fields chatrelay does not read (`temperature`, `tools`, …) go "
            "upstream untouched.",
            "properties": {
                "messages": {"type": "array", "minItems": 1, "items": ref("ChatMessage")},
                "model": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "\\S"},
                "stream": {"type": "boolean"},
                "stream_options": {
                    "type": "object",
                    "properties": {"include_usage": {"type": "boolean"}},
                },
                "n": {"const": 1},
            },
            "required": ["messages"],
        },
        "ChatCompletion": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "pattern": "^chatcmpl-"},
                "object": {"const": "chat.completion"},
                "created": {"type": "integer"},
                "model": {"type": "string"},
                "choices": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "index": {"const": 0},
                            "message": {
                                "type": "object",
                                "properties": {
                                    "role": {"const": "assistant"},
                                    "content": nullable({"type": "string"}),
                                    "refusal": nullable({"type": "string"}),
                                    "tool_calls": {"type": "array", "items": {"type": "object"}},
                                    "reasoning_content": {"type": "string"},
                                },
                                "required": ["role", "content"],
                            },
                            "logprobs": {"type": "null"},
                            "finish_reason": {"type": "string"},
                        },
                        "required": ["index", "message", "finish_reason"],
                    },
                },
                "usage": nullable(ref("Usage")),
            },
            "required": ["id", "object", "created", "model", "choices", "usage"],
        },
        "ChatCompletionChunk": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "pattern": "^chatcmpl-"},
                "object": {"const": "chat.completion.chunk"},
                "created": {"type": "integer"},
                "model": {"type": "string"},
                "choices": {
                    "type": "array",
                    "maxItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "index": {"const": 0},
                            "delta": {"type": "object"},
                            "logprobs": {"type": "null"},
                            "finish_reason": nullable({"type": "string"}),
                        },
                        "required": ["index", "delta", "finish_reason"],
                    },
                },
                "usage": nullable(ref("Usage")),
            },
            "required": ["id", "object", "created", "model", "choices"],
        },
        "ChatCompletionEvent": {
            "description": "one `data:` frame of an OpenAI stream: a chunk, an in-stream "
            "error, or the final `[DONE]`",
            "anyOf": [
                {
                    "type": "object",
                    "properties": {"data": {"const": "[DONE]"}},
                    "required": ["data"],
                },
                {
                    "type": "object",
                    "properties": {
                        "data": _json_data(
                            {"anyOf": [ref("ChatCompletionChunk"), ref("OpenAIError")]}
                        )
                    },
                    "required": ["data"],
                },
            ],
        },
        "Model": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "model"},
                "created": {"type": "integer"},
                "owned_by": {"type": "string"},
            },
            "required": ["id", "object", "created", "owned_by"],
        },
        "ResponseRequest": {
            "type": "object",
            "description": "The text and function-tool subset of OpenAI's Responses API; "
            "built-in tools, file inputs and other unsupported fields are a 400 naming them "
            "(docs/openai-compat.md).",
            "properties": {
                "model": {"type": "string", "minLength": 1, "maxLength": 200},
                "input": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"type": "object"}},
                    ]
                },
                "instructions": nullable({"type": "string"}),
                "tools": {"type": "array", "items": {"type": "object"}},
                "previous_response_id": nullable({"type": "string"}),
                "stream": nullable({"type": "boolean"}),
                "background": nullable({"type": "boolean"}),
                "metadata": nullable({"type": "object"}),
            },
            "required": ["input"],
        },
        "Response": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "pattern": "^resp_"},
                "object": {"const": "response"},
                "created_at": {"type": "integer"},
                "status": {
                    "type": "string",
                    "enum": [
                        "queued",
                        "in_progress",
                        "completed",
                        "failed",
                        "incomplete",
                        "cancelled",
                    ],
                },
                "model": {"type": "string"},
                "output": {"type": "array", "items": {"type": "object"}},
                "error": nullable({"type": "object"}),
                "usage": nullable({"type": "object"}),
            },
            "required": ["id", "object", "created_at", "status", "model", "output"],
        },
        "ResponseDeleted": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "pattern": "^resp_"},
                "object": {"const": "response"},
                "deleted": {"const": True},
            },
            "required": ["id", "object", "deleted"],
        },
        "ResponseEvent": {
            "description": "one event of a Responses stream: `event:` is the type, `data:` "
            "the typed event with its `sequence_number`",
            "type": "object",
            "properties": {
                "event": {"type": "string"},
                "data": _json_data(
                    {
                        "type": "object",
                        "properties": {
                            "type": {"type": "string"},
                            "sequence_number": {"type": "integer", "minimum": 0},
                        },
                        "required": ["type", "sequence_number"],
                    }
                ),
            },
            "required": ["data"],
        },
        "ModelList": {
            "type": "object",
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": ref("Model")},
            },
            "required": ["object", "data"],
        },
    }
