"""Small conveniences over the native API, shared by the integration tests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.fakes.sse_client import Frame, collect

TERMINAL = {"completed", "cancelled", "failed", "interrupted"}


async def new_conversation(client: httpx.AsyncClient, **fields: Any) -> str:
    response = await client.post("/v1/conversations", json=fields)
    assert response.status_code == 201, response.text
    cid: str = response.json()["id"]
    return cid


async def post_streaming(
    client: httpx.AsyncClient, cid: str, content: str, **fields: Any
) -> tuple[httpx.Response, list[Frame]]:
    """POST a message asking for the event stream; read it to the end."""
    async with client.stream(
        "POST",
        f"/v1/conversations/{cid}/messages",
        json={"content": content, **fields},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200, await response.aread()
        collected = await collect(response)
    return response, collected


async def post_accepted(client: httpx.AsyncClient, cid: str, content: str, **fields: Any) -> Any:
    response = await client.post(
        f"/v1/conversations/{cid}/messages", json={"content": content, **fields}
    )
    assert response.status_code == 202, response.text
    return response.json()


async def wait_final(client: httpx.AsyncClient, mid: str, within: float = 15.0) -> Any:
    """Poll the message until it reaches a terminal status."""
    deadline = time.monotonic() + within
    while True:
        response = await client.get(f"/v1/messages/{mid}")
        assert response.status_code == 200, response.text
        message = response.json()
        if message["status"] in TERMINAL:
            return message
        if time.monotonic() > deadline:
            raise AssertionError(f"message {mid} still {message['status']} after {within}s")
        await asyncio.sleep(0.05)
