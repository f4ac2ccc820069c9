"""The whole OpenAPI document, built once per app from the paths and schemas."""

from __future__ import annotations

from typing import Any

import orjson

from chatrelay import __version__
from chatrelay.web.openapi.paths import paths
from chatrelay.web.openapi.schemas import native_schemas, openai_schemas

OPENAPI_VERSION = "3.1.0"

_DESCRIPTION = """\
chatrelay streams chat completions over Server-Sent Events and records every message. \
With `CHATRELAY_API_KEYS` set, every `/v1` route needs `Authorization: Bearer <client key>` \
and a tenant sees only its own objects (anything else is `404`). Every `GET` also answers \
`HEAD` with the same status and headers and no body. Unknown paths are the JSON `404`; \
a known path with another method is `405` with `Allow`. `/v1/chat/completions` and \
`/v1/models` answer errors in OpenAI's shape (`OpenAIError`), everything else in \
chatrelay's (`Error`). The `schema` of a `text/event-stream` response describes one \
event (OpenAPI 3.1 has no `itemSchema`): its `event`, `id` and `data`, with `data` as \
JSON (`contentMediaType`, `contentSchema`)."""


def build_document(*, max_content_chars: int) -> dict[str, Any]:
    """The document for a process whose text limit is `max_content_chars`."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "chatrelay", "version": __version__, "description": _DESCRIPTION},
        "security": [{"bearer": []}],
        "tags": [
            {"name": "openai", "description": "OpenAI-compatible (docs/openai-compat.md)"},
            {"name": "service", "description": "probes and this document; no key needed"},
            {"name": "page", "description": "the browser chat page; no key needed"},
        ],
        "paths": paths(),
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a client key from CHATRELAY_API_KEYS (not needed when the "
                    "service runs open, without keys)",
                }
            },
            "schemas": {**native_schemas(max_content_chars), **openai_schemas()},
        },
    }


def document_bytes(*, max_content_chars: int) -> bytes:
    return orjson.dumps(build_document(max_content_chars=max_content_chars))
