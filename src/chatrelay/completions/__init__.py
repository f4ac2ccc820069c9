"""The OpenAI-compatible surface (`/v1/chat/completions`, `/v1/models`) in plain data.

`request` checks a body, `recording` stores it as a conversation turn and launches its
generation, `render` turns the message's events into chunk and completion objects (built
by `chunks`), `catalog` is the upstream's model list. Nothing here knows HTTP: the edge is
`chatrelay.web.routes.openai`.
"""
