"""OpenAI's Responses API over a chat-completions upstream: `request` (parse and map),
`objects` (response objects and ids), `events` (the typed, numbered stream events),
`recording` (a response as a recorded conversation turn)."""
