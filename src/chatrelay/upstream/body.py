"""The upstream body's bytes as a transport hands them over, and the request's trace hook.

Both transports (`http11` for a direct upstream, `transport` behind a proxy) leave their
own body stream in the response's extensions, so `body_chunks` can read it without
httpx's re-chunking generators in between.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

# httpcore's `trace` request extension: told when the request headers go out, which is
# where the connect limit ends and the first-byte limit begins.
Trace = Callable[[str, dict[str, Any]], Awaitable[None]]

# The response extension that holds a transport's own body stream (`transport._Body`,
# `http11._Body`), which `body_chunks` reads directly.
BODY_EXTENSION = "chatrelay.body"
_NOT_ENCODED = ("", "identity")


def body_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The response body's bytes as they arrive.

    When the body has no content coding to undo (an event stream, nearly always), they
    come from the transport's own stream, not through httpx's `aiter_bytes` — two more
    async generators (`aiter_raw`, the client's bound stream) and two re-chunkers per
    chunk, for bytes they pass on unchanged. A response from another transport, or a
    compressed one, goes through `aiter_bytes`. Either way `response.aclose()` closes it.
    """
    body = response.extensions.get(BODY_EXTENSION)
    coding = response.headers.get("content-encoding", "").strip().lower()
    if isinstance(body, httpx.AsyncByteStream) and coding in _NOT_ENCODED:
        return body.__aiter__()
    return response.aiter_bytes()
