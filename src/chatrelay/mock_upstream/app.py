"""The mock as a Starlette app: `/v1/chat/completions` (streamed or not) and `/v1/models`.

Each request is checked like OpenAI would, turned into a `Plan` for its mode, and answered
by a script: streamed chunks, one completion body, or an error before any byte, with the
faults (stall, drop, in-band error) at a fixed point so tests and humans see them the same.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatrelay.mock_upstream.answers import MOCK_MODELS, MockMode, mock_answer, select_mode, text_of
from chatrelay.mock_upstream.scripted import Body, Script, ScriptedResponse, forever
from chatrelay.mock_upstream.tools import mock_tool_call, tool_result_answer
from chatrelay.mock_upstream.wire import DONE_FRAME, Plan, error_response, json_body, sse_frame

SLOW_TOKEN_DELAY = 0.3
FAULT_AFTER_TOKENS = 3  # tokens sent before mock-stall / mock-drop / mock-error misbehave
LENGTH_LIMIT_TOKENS = 12  # mock-length stops here with finish_reason "length"
_MODELS_CREATED = 1_700_000_000  # fixed, so /v1/models is byte-stable
_FAULTY = (MockMode.STALL, MockMode.DROP, MockMode.ERROR)

_TOKEN = re.compile(r"\s*\S+")


@dataclass
class MockState:
    """Per-app state: the token delay, and `closing`, set when the server stops so that
    open scripts (stalls included) end."""

    token_delay: float
    closing: asyncio.Event = field(default_factory=asyncio.Event)


def _stream_script(plan: Plan) -> Script:
    async def script(body: Body) -> None:
        if plan.tool_call is not None:
            await body.write(plan.chunk({"role": "assistant", "content": None}))
            for delta in plan.tool_call_deltas():
                await asyncio.sleep(plan.delay)
                await body.write(plan.chunk(delta))
        else:
            await body.write(plan.chunk({"role": "assistant", "content": ""}))
        faulty = plan.mode in _FAULTY
        for token in plan.tokens[:FAULT_AFTER_TOKENS] if faulty else plan.tokens:
            await asyncio.sleep(plan.delay)
            await body.write(plan.chunk({"content": token}))
        if plan.mode == MockMode.STALL:
            await forever()
        if plan.mode == MockMode.DROP:
            return  # unfinished response: uvicorn closes the socket, no terminating chunk
        if plan.mode == MockMode.ERROR:
            message = "The mock upstream failed mid-stream on purpose (mock-error)."
            await body.write(sse_frame({"error": {"message": message, "type": "server_error"}}))
            await body.end()
            return
        await asyncio.sleep(plan.delay)
        await body.write(plan.chunk({}, plan.finish_reason))
        if plan.include_usage:
            await body.write(plan.usage_chunk())
        await body.end(DONE_FRAME)

    return script


def _non_stream_script(plan: Plan) -> Script:
    async def script(body: Body) -> None:
        if plan.mode == MockMode.STALL:
            await forever()  # no status line at all: the client waits until it gives up
        await asyncio.sleep(plan.delay * len(plan.tokens))  # as long as the stream would take
        payload = json_body(plan.completion())
        if plan.mode == MockMode.DROP:
            await body.write(payload[: len(payload) // 2])
            return  # unfinished response: uvicorn closes the socket
        await body.end(payload)

    return script


def create_mock_app(*, token_delay: float = 0.02) -> Starlette:
    """The mock as a Starlette app; `MockUpstreamServer` serves it over a real socket."""
    state = MockState(token_delay=token_delay)

    async def chat_completions(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return error_response(
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
            )
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return error_response(400, "'messages' is a required property", "invalid_request_error")
        messages = [m for m in body["messages"] if isinstance(m, dict)]
        user_texts = [text_of(m.get("content")) for m in messages if m.get("role") == "user"]
        last_user = user_texts[-1] if user_texts else ""
        model = body.get("model")
        model = model if isinstance(model, str) and model else MockMode.MOCK.value
        mode = select_mode(model, last_user)

        if mode == MockMode.HTTP_500:
            return error_response(
                500, "The mock upstream failed on purpose (mock-500).", "server_error"
            )
        if mode == MockMode.HTTP_429:
            return error_response(
                429,
                "Rate limit reached on purpose (mock-429). Please try again in 1s.",
                "requests",
                "rate_limit_exceeded",
                headers={"Retry-After": "1"},
            )

        tool_call = mock_tool_call(body, messages)
        answer = tool_result_answer(messages)
        tokens = [] if tool_call else _TOKEN.findall(answer or mock_answer(last_user))
        if mode == MockMode.LENGTH:
            tokens = tokens[:LENGTH_LIMIT_TOKENS]
        options = body.get("stream_options")
        plan = Plan(
            mode=mode,
            model=model,
            tokens=tokens,
            delay=SLOW_TOKEN_DELAY if mode == MockMode.SLOW else state.token_delay,
            prompt_words=sum(len(text_of(m.get("content")).split()) for m in messages),
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            tool_call=tool_call,
        )
        headers = {"x-request-id": plan.id}
        if body.get("stream") is True:
            headers["cache-control"] = "no-cache"
            return ScriptedResponse(
                _stream_script(plan), state.closing, media_type="text/event-stream", headers=headers
            )
        if mode == MockMode.ERROR:
            return error_response(
                500, "The mock upstream failed on purpose (mock-error).", "server_error"
            )
        return ScriptedResponse(
            _non_stream_script(plan), state.closing, media_type="application/json", headers=headers
        )

    async def models(request: Request) -> Response:
        data = [
            {
                "id": name,
                "object": "model",
                "created": _MODELS_CREATED,
                "owned_by": "chatrelay-mock",
            }
            for name in MOCK_MODELS
        ]
        return JSONResponse({"object": "list", "data": data})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return error_response(
            status, f"{request.method} {request.url.path}: {exc}", "invalid_request_error"
        )

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
    )
    app.state.mock = state
    return app
