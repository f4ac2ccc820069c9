"""The database falters mid-generation; the message is still recorded, whole.

PostgreSQL: every connection of the service is killed (`pg_terminate_backend`) again and
again while it streams. SQLite: another process holds the write lock for longer than the
busy timeout. And when the process must stop before the database is back, the final
write goes to the spool and lands at the next start.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import POSTGRES_URL, Stack
from tests.fakes.sse_client import Frame, collect, content_of, events
from tests.fakes.upstream import Reply
from tests.integration.helpers import new_conversation, post_accepted, wait_final

TOKENS = [f"p{i} " for i in range(60)]


async def _terminate_backends(database: str) -> int:
    conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
        return len(rows)
    finally:
        await conn.close()


async def _set_connections_allowed(database: str, allowed: bool) -> None:
    conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        await conn.execute(
            f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {"true" if allowed else "false"}'
        )
    finally:
        await conn.close()


@contextmanager
def sqlite_write_lock(path: Path, seconds: float) -> Iterator[threading.Event]:
    """Hold an exclusive lock on the SQLite file from another connection, in a thread."""
    acquired = threading.Event()
    release = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, timeout=10, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        acquired.set()
        release.wait(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert acquired.wait(10), "could not take the SQLite lock"
    try:
        yield release
    finally:
        release.set()
        thread.join(15)


@pytest.mark.parametrize("stack", ["postgres"], indirect=True)
async def test_postgres_connections_killed_midstream(stack: Stack) -> None:
    database = stack.database_url.rsplit("/", 1)[1]
    service = stack.service(CHATRELAY_CHECKPOINT_INTERVAL="0.2")
    stack.upstream.enqueue(Reply(tokens=TOKENS, delay=0.05))
    async with stack.client(service) as client:
        cid = await new_conversation(client)
        mid = (await post_accepted(client, cid, "survive"))["assistant_message"]["id"]
        killed = 0

        async def keep_killing() -> None:
            nonlocal killed
            deadline = time.monotonic() + 3.5  # the whole stream and its final write
            while time.monotonic() < deadline:
                killed += await _terminate_backends(database)
                await asyncio.sleep(0.15)

        killer = asyncio.create_task(keep_killing())
        async with client.stream("GET", f"/v1/messages/{mid}/events") as response:
            got = events(await collect(response))
        await killer
        final = await wait_final(client, mid)
    assert killed > 0, "no connection was killed: the test proved nothing"
    assert got[-1].event == "done"
    assert content_of(got) == "".join(TOKENS)
    assert final["status"] == "completed"
    assert final["content"] == "".join(TOKENS)


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
async def test_sqlite_locked_for_seconds(stack: Stack) -> None:
    service = stack.service(CHATRELAY_CHECKPOINT_INTERVAL="0.2")
    stack.upstream.enqueue(Reply(tokens=TOKENS, delay=0.03))
    db_path = Path(stack.database_url.removeprefix("sqlite:///"))
    async with stack.client(service) as client:
        cid = await new_conversation(client)
        mid = (await post_accepted(client, cid, "locked"))["assistant_message"]["id"]
        with sqlite_write_lock(db_path, seconds=8):

            async def follow() -> list[Frame]:
                async with client.stream("GET", f"/v1/messages/{mid}/events") as response:
                    return events(await collect(response))

            follower = asyncio.create_task(follow())
            await asyncio.sleep(3)
            ready = await client.get("/readyz")
            assert ready.status_code == 503, "readiness must report the database trouble"
            got = await follower
        final = await wait_final(client, mid, within=20)
        recovered = await client.get("/readyz")
    assert got[-1].event == "done"
    assert content_of(got) == "".join(TOKENS)
    assert final["status"] == "completed"
    assert final["content"] == "".join(TOKENS)
    assert recovered.status_code == 200


async def test_final_write_spooled_when_stopping_during_outage(stack: Stack) -> None:
    # A short SQLite busy timeout: each write the lock refuses fails after 1 s, not 5.
    service = stack.service(CHATRELAY_SHUTDOWN_GRACE="1", CHATRELAY_SQLITE_BUSY_TIMEOUT="1")
    stack.upstream.enqueue(Reply(tokens=TOKENS[:10], delay=0.05))
    db_path = Path(stack.database_url.removeprefix("sqlite:///"))
    database = stack.database_url.rsplit("/", 1)[1]
    async with stack.client(service) as client:
        cid = await new_conversation(client)
        mid = (await post_accepted(client, cid, "spool me"))["assistant_message"]["id"]
        if stack.backend == "sqlite":
            outage = sqlite_write_lock(db_path, seconds=60)
            outage.__enter__()
        else:
            await _set_connections_allowed(database, False)
            await _terminate_backends(database)
        try:
            following = time.monotonic()
            async with client.stream("GET", f"/v1/messages/{mid}/events") as response:
                got = events(await collect(response))
            assert got[-1].event == "done", "subscribers get the end even while the DB is down"
            if stack.backend == "sqlite":
                # The terminal event follows the final write's first attempt, which waited
                # behind a checkpoint's: two busy timeouts of 1 s (the default would be 10 s).
                assert time.monotonic() - following < 2 * 1 + 3, "CHATRELAY_SQLITE_BUSY_TIMEOUT"
            assert service.proc is not None
            service.proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(service.proc.wait, 60)
        finally:
            if stack.backend == "sqlite":
                outage.__exit__(None, None, None)
            else:
                await _set_connections_allowed(database, True)
    assert code == 0, service.log()
    spooled = list((stack.workdir / "data" / "spool").glob("final-*.jsonl")) + list(
        (stack.workdir / "spool").glob("final-*.jsonl")
    )
    assert spooled, f"no spool file was written:\n{service.log()}"

    restarted = stack.service()
    async with stack.client(restarted) as client:
        final = (await client.get(f"/v1/messages/{mid}")).json()
    assert final["status"] == "completed", "the spooled final write must win over recovery"
    assert final["content"] == "".join(TOKENS[:10])
    assert not any(p.exists() for p in spooled), "a replayed spool file is removed"


async def _run_sql(stack: Stack, *statements: str) -> list[object]:
    """Run statements against the service's database from outside it; the last one's
    first column, row by row."""
    if stack.backend == "sqlite":
        db_path = Path(stack.database_url.removeprefix("sqlite:///"))
        conn = sqlite3.connect(db_path, timeout=10, isolation_level=None)
        try:
            rows: list[object] = []
            for sql in statements:
                rows = [row[0] for row in conn.execute(sql).fetchall()]
            return rows
        finally:
            conn.close()
    pg = await asyncpg.connect(stack.database_url, timeout=5)
    try:
        result: list[object] = []
        for sql in statements:
            result = [row[0] for row in await pg.fetch(sql)]
        return result
    finally:
        await pg.close()


async def _refuse_message_inserts(stack: Stack, refuse: bool) -> None:
    """A trigger that fails every INSERT into `messages`: the database refuses the write
    of a turn after the service has read the history and sent the request upstream."""
    if stack.backend == "sqlite":
        await _run_sql(
            stack,
            "CREATE TRIGGER refuse_messages BEFORE INSERT ON messages "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            if refuse
            else "DROP TRIGGER refuse_messages",
        )
    elif refuse:
        await _run_sql(
            stack,
            "CREATE FUNCTION refuse_messages() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_messages BEFORE INSERT ON messages "
            "FOR EACH ROW EXECUTE FUNCTION refuse_messages()",
        )
    else:
        await _run_sql(stack, "DROP TRIGGER refuse_messages ON messages")


@pytest.mark.parametrize("route", ["native", "openai"])
async def test_a_turn_the_database_refuses_after_its_request_went_upstream_leaves_nothing(
    stack: Stack, route: str
) -> None:
    """A new turn's request goes upstream while the turn is being written (on a pooled
    connection, before the transaction ends). When the write then fails, the client gets
    the database error, the upstream request is dropped, nothing is stored, and the
    tenant's generation slot is free again."""
    service = stack.service(CHATRELAY_MAX_GENERATIONS_PER_TENANT="1")
    async with stack.client(service) as client:

        async def turn(content: str) -> httpx.Response:
            if route == "native":
                cid = await new_conversation(client)
                return await client.post(
                    f"/v1/conversations/{cid}/messages",
                    json={"content": content},
                    headers={"Accept": "text/event-stream"},
                )
            return await client.post(
                "/v1/chat/completions",
                json={
                    "model": "m",
                    "stream": True,
                    "messages": [{"role": "user", "content": content}],
                },
            )

        first = await turn("pools a connection")  # the next request can go out at once
        assert first.status_code == 200, first.text
        assert "Hello" in first.text
        messages_before = await _run_sql(stack, "SELECT count(*) FROM messages")
        # Slow to answer: the relay is still waiting when it drops the request.
        stack.upstream.enqueue(Reply(tokens=["never"], first_delay=3.0))
        await _refuse_message_inserts(stack, True)
        try:
            refused = await turn("refused")
        finally:
            await _refuse_message_inserts(stack, False)
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert error["code"] == "database_unavailable", error

        sent = await asyncio.to_thread(stack.upstream.wait_for_requests, 2)
        assert sent[-1].body["messages"][-1]["content"] == "refused", "it went upstream early"
        dropped = await asyncio.to_thread(stack.upstream.wait_for_disconnect, 2.5)
        assert dropped is not None, "the upstream request must be dropped, not left open"
        assert await _run_sql(stack, "SELECT count(*) FROM messages") == messages_before
        assert await _run_sql(stack, "SELECT count(*) FROM messages WHERE content = 'refused'") == [
            0
        ]

        again = await turn("after")  # the only slot (max 1 per tenant) is free again
        assert again.status_code == 200, again.text
        assert "Hello" in again.text
    assert "Traceback" not in service.log()
