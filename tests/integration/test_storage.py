"""Storage set-up: migrations recorded once, even when two processes start together."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg

from chatrelay.storage.migrations import MIGRATIONS
from tests.conftest import Stack, base_env
from tests.fakes.service import ServiceProcess


async def _applied(stack: Stack) -> list[str]:
    if stack.backend == "sqlite":
        path = Path(stack.database_url.removeprefix("sqlite:///"))
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall()
        return [r[0] for r in rows]
    conn = await asyncpg.connect(stack.database_url, timeout=5)
    try:
        rows = await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")
    finally:
        await conn.close()
    return [r["name"] for r in rows]


async def test_two_processes_starting_at_once_migrate_once(stack: Stack) -> None:
    services = [
        ServiceProcess(base_env(stack.database_url, stack.upstream), stack.workdir)
        for _ in range(2)
    ]
    stack.services.extend(services)
    await asyncio.gather(*(asyncio.to_thread(s.start) for s in services))
    for service in services:
        async with stack.client(service) as client:
            assert (await client.get("/readyz")).status_code == 200
            created = await client.post("/v1/conversations", json={"title": "after race"})
            assert created.status_code == 201
    assert await _applied(stack) == sorted(m.name for m in MIGRATIONS)
