"""The SQLite database at its seam: statements on the loop's thread, waits kept off it.

Real SQLite files; another process's write lock is another real connection holding
`BEGIN EXCLUSIVE` (storage/database.py says why statements run inline).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatrelay.errors import StorageError
from chatrelay.storage import database as database_module
from chatrelay.storage.database import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    made = Database(f"sqlite:///{tmp_path / 'inline.db'}", busy_timeout_ms=3000)
    await made.connect()
    async with made.unit() as unit:
        await unit.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    try:
        yield made
    finally:
        await made.disconnect()


def _hold_write_lock(path: Path, seconds: float, held: threading.Event) -> None:
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(seconds)
        other.execute("COMMIT")
    finally:
        other.close()


async def test_a_write_waits_for_another_writer_without_blocking_the_loop(
    db: Database, tmp_path: Path
) -> None:
    held = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(tmp_path / "inline.db", 0.6, held))
    holder.start()
    try:
        assert held.wait(5)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.create_task(ticker())
        started = time.monotonic()
        async with db.unit(transaction=True) as unit:
            await unit.execute("INSERT INTO items (body) VALUES (:body)", {"body": "waited"})
        waited = time.monotonic() - started
        ticking.cancel()
    finally:
        holder.join()
    assert waited >= 0.4  # it did wait for the lock, rather than fail at once
    assert ticks >= 20  # and the loop went on meanwhile (a blocked loop would tick ~0)
    async with db.unit() as unit:
        rows = await unit.fetch_all("SELECT body FROM items")
    assert rows == [{"body": "waited"}]


async def test_a_lock_held_past_the_busy_timeout_is_a_storage_error(tmp_path: Path) -> None:
    made = Database(f"sqlite:///{tmp_path / 'short.db'}", busy_timeout_ms=50)
    await made.connect()
    try:
        async with made.unit() as unit:
            await unit.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
        held = threading.Event()
        holder = threading.Thread(target=_hold_write_lock, args=(tmp_path / "short.db", 0.5, held))
        holder.start()
        try:
            assert held.wait(5)
            with pytest.raises(StorageError, match="locked"):
                async with made.unit(transaction=True) as unit:
                    await unit.execute("INSERT INTO items DEFAULT VALUES")
        finally:
            holder.join()
        # The connection is usable again, outside any transaction.
        async with made.unit(transaction=True) as unit:
            await unit.execute("INSERT INTO items DEFAULT VALUES")
            rows = await unit.fetch_all("SELECT count(*) AS n FROM items")
        assert rows == [{"n": 1}]
    finally:
        await made.disconnect()


async def test_the_wal_is_checkpointed_off_the_loop_so_it_does_not_grow_forever(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = tmp_path / "inline.db-wal"
    body = "x" * 2000

    async def write_rows() -> None:
        for _ in range(10):
            async with db.unit(transaction=True) as unit:
                await unit.execute_many(
                    "INSERT INTO items (body) VALUES (:body)", [{"body": body}] * 100
                )

    await write_rows()
    grown = wal.stat().st_size
    assert grown > 2_000_000  # automatic checkpoints are off: the WAL holds it all
    # A checkpoint round (every WAL_CHECKPOINT_INTERVAL s) copies it into the database file;
    # writers then start the WAL over instead of appending.
    await asyncio.sleep(database_module.WAL_CHECKPOINT_INTERVAL * 2.5)
    await write_rows()
    assert wal.stat().st_size <= grown * 1.1
    probe = sqlite3.connect(tmp_path / "inline.db")
    try:
        assert probe.execute("SELECT count(*) FROM items").fetchone() == (2000,)
    finally:
        probe.close()
