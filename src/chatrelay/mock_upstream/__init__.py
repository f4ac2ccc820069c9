"""Built-in mock of the OpenAI chat completions API, served over real HTTP on 127.0.0.1.

Without an OPENAI_API_KEY chatrelay points its ordinary httpx upstream client at this server, so
the whole upstream path (sockets, SSE parsing, timeouts, error mapping) runs exactly as it would
against OpenAI. The model name, or a `[[fault:NAME]]` marker in the *last* user message (so a chat
UI can pick one; `stall` and `mock-stall` both work), selects a mode, so every upstream failure
can be seen by hand with `make run`:

    mock         a normal answer, `token_delay` between tokens (unknown models behave like it)
    mock-slow    0.3 s between tokens
    mock-stall   a few tokens, then silence with the connection held open until the client leaves
    mock-drop    a few tokens, then the connection closes without finish_reason or [DONE]
    mock-error   a few tokens, then an in-band `data: {"error": {...}}` event
    mock-500     HTTP 500 with an OpenAI error body, before any streaming
    mock-429     HTTP 429 with `Retry-After: 1`
    mock-length  a truncated answer with finish_reason "length"

A request with function `tools` is answered with a call to the first function (or the one
`tool_choice` names; none for `"none"`), its arguments built from the function's JSON schema
and streamed in a few pieces, `finish_reason` "tool_calls". When the last message is a tool
result, the answer is text quoting it, so a tool loop ends (`tools`).

The answer is deterministic for a given last user message, quotes its first words and is 3-5
sentences long. Usage numbers are mock estimates: whitespace-separated words of the prompt (all
messages) and of the answer, not real tokenizer counts. Authorization is ignored.

Modules: `answers` (the text and the mode a request selects), `tools` (the tool calls),
`wire` (OpenAI's JSON shapes and SSE frames), `scripted` (a response that can misbehave on
purpose), `app` (the Starlette app), `server` (`MockUpstreamServer`, the app on a loopback
port). Only `web/app.py`'s lifespan imports this package; the real client in
`chatrelay.upstream` never does.
"""

from chatrelay.mock_upstream.answers import MOCK_MODELS, MockMode, mock_answer
from chatrelay.mock_upstream.app import create_mock_app
from chatrelay.mock_upstream.server import MockUpstreamServer

__all__ = [
    "MOCK_MODELS",
    "MockMode",
    "MockUpstreamServer",
    "create_mock_app",
    "mock_answer",
]
