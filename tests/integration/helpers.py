"""Small conveniences over the native API, shared by the integration tests."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import Any

import asyncpg
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


async def stored_row(database_url: str, mid: str) -> dict[str, Any]:
    """The message's row read straight from the database, past the service and its memory
    (`GET /v1/messages/{id}` shows a running generation's state from memory)."""
    sql = "SELECT status, content, finish_reason, usage, completed_at FROM messages WHERE id = "
    if database_url.startswith("sqlite"):

        def read() -> dict[str, Any]:
            path = database_url.removeprefix("sqlite:///")
            with sqlite3.connect(path) as conn:
                conn.row_factory = sqlite3.Row
                row = conn.execute(sql + "?", (mid,)).fetchone()
            assert row is not None, f"no row for {mid}"
            return dict(row)

        row = await asyncio.to_thread(read)
    else:
        conn = await asyncpg.connect(database_url, timeout=5)
        try:
            record = await conn.fetchrow(sql + "$1", mid)
        finally:
            await conn.close()
        assert record is not None, f"no row for {mid}"
        row = dict(record)
    row["usage"] = None if row["usage"] is None else json.loads(row["usage"])
    return row
