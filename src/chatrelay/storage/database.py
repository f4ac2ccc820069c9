"""The only user of `databases`: connections, units of work, dialect differences.

SQLite gets one long-lived connection shared by the whole process behind a lock: SQLite
allows one writer anyway, and `databases` would otherwise open a connection (and a
thread) per task — thousands under load. PostgreSQL uses the asyncpg pool, one pooled
connection per unit of work.

SQLite statements run on the event loop's own thread, not on aiosqlite's: in WAL mode
with `synchronous=NORMAL` a statement is a few microseconds of work that never waits for
a disk, while a trip to aiosqlite's thread and back costs about 70 µs of CPU (two thread
wake-ups and the GIL handed over twice) and, with a busy loop holding the GIL, up to the
interpreter's 5 ms switch interval of waiting, per statement. The two things that could
block are kept off the loop: a write that finds another process holding the write lock
(`busy_timeout` is 0 on the loop; such a statement is retried on a worker thread, where
it waits up to `BUSY_TIMEOUT_MS`), and WAL checkpoints, which write and sync the
database file (automatic checkpoints are off; `_checkpoint_wal` runs them on a worker
thread every `WAL_CHECKPOINT_INTERVAL` seconds after writes). Measured in
docs/performance.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar

import databases
from databases.core import Connection

from chatrelay.config import sqlite_path
from chatrelay.errors import StorageError

log = logging.getLogger("chatrelay.storage")

Row = Mapping[str, Any]
_T = TypeVar("_T")


def _is_storage_failure(exc: BaseException) -> bool:
    """Errors that mean "the database did not do it" (as opposed to our own bugs)."""
    if isinstance(exc, (OSError, sqlite3.Error, ConnectionError, asyncio.TimeoutError)):
        return True
    module = type(exc).__module__
    return module.startswith(("asyncpg", "aiosqlite"))


class Unit:
    """A connection borrowed for one unit of work (optionally a transaction)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def execute(self, sql: str, values: Mapping[str, Any] | None = None) -> None:
        await self._connection.execute(sql, dict(values) if values else None)

    async def execute_many(self, sql: str, values: Sequence[Mapping[str, Any]]) -> None:
        if values:
            await self._connection.execute_many(sql, [dict(v) for v in values])

    async def fetch_one(self, sql: str, values: Mapping[str, Any] | None = None) -> Row | None:
        record = await self._connection.fetch_one(sql, dict(values) if values else None)
        return None if record is None else dict(record._mapping)

    async def fetch_all(self, sql: str, values: Mapping[str, Any] | None = None) -> list[Row]:
        records = await self._connection.fetch_all(sql, dict(values) if values else None)
        return [dict(r._mapping) for r in records]


BUSY_TIMEOUT_MS = 5000  # how long a write waits for another process's write lock
WAL_CHECKPOINT_INTERVAL = 1.0  # seconds between WAL checkpoints while writes happen


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return (exc.sqlite_errorcode & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _waiting(connection: sqlite3.Connection, call: Callable[[], _T], busy_timeout_ms: int) -> _T:
    """`call` on a worker thread, with the busy timeout that the loop's statements lack."""
    connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    try:
        return call()
    finally:
        connection.execute("PRAGMA busy_timeout=0")


async def _off_the_loop(
    connection: sqlite3.Connection, call: Callable[[], _T], busy_timeout_ms: int
) -> _T:
    """Run `call` on a worker thread and wait for it to finish, even when cancelled: the
    connection must not be used again (a rollback, the next unit) while it is busy."""
    future = asyncio.ensure_future(asyncio.to_thread(_waiting, connection, call, busy_timeout_ms))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise


class SQLiteUnit(Unit):
    """The same, on the connection `databases` opened through aiosqlite, run inline.

    SQLite takes our `:name` parameters natively, so statements skip the SQLAlchemy
    compile step that `databases` runs on every call, and they run on the loop's thread
    (the module's docstring says why and what is kept off it).
    """

    def __init__(
        self, connection: Connection, sqlite: sqlite3.Connection, busy_timeout_ms: int
    ) -> None:
        super().__init__(connection)
        self._sqlite = sqlite
        self._busy_timeout_ms = busy_timeout_ms

    async def _run(self, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
        return await _off_the_loop(self._sqlite, call, self._busy_timeout_ms)

    async def execute(self, sql: str, values: Mapping[str, Any] | None = None) -> None:
        await self._run(partial(self._sqlite.execute, sql, values or {}))

    async def execute_many(self, sql: str, values: Sequence[Mapping[str, Any]]) -> None:
        if values:
            await self._run(partial(self._sqlite.executemany, sql, values))

    async def fetch_one(self, sql: str, values: Mapping[str, Any] | None = None) -> Row | None:
        rows = await self._run(partial(self._fetch, sql, values))
        return dict(rows[0]) if rows else None

    async def fetch_all(self, sql: str, values: Mapping[str, Any] | None = None) -> list[Row]:
        return [dict(row) for row in await self._run(partial(self._fetch, sql, values))]

    def _fetch(self, sql: str, values: Mapping[str, Any] | None) -> list[sqlite3.Row]:
        rows: list[sqlite3.Row] = self._sqlite.execute(sql, values or {}).fetchall()
        return rows

    async def rollback_quietly(self) -> None:
        """Roll back if a transaction is open (SQLite may already have rolled it back)."""
        with contextlib.suppress(sqlite3.Error):
            if self._sqlite.in_transaction:
                self._sqlite.execute("ROLLBACK")


class Database:
    """Connects, hands out units of work, and translates driver failures to `StorageError`."""

    def __init__(self, url: str, *, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.url = url
        self.busy_timeout_ms = busy_timeout_ms  # SQLite: how long a write waits for a lock
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        # The loop's thread uses the connection aiosqlite opened on its own thread.
        options = {"check_same_thread": False} if self.dialect == "sqlite" else {}
        self._db = databases.Database(url, **options)
        self._shared: Connection | None = None
        self._sqlite: sqlite3.Connection | None = None  # the sqlite3 connection behind it
        self._lock = asyncio.Lock()
        self._checkpointer: asyncio.Task[None] | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def clock_sql(self) -> str:
        """SQL for "now" in seconds since the epoch, on the database's clock.

        Leases compare against this, never against an instance's own clock: PostgreSQL's
        clock is one for every instance, and a SQLite file is only shared on one machine.
        """
        if self.is_sqlite:
            return "((julianday('now') - 2440587.5) * 86400.0)"
        return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"

    async def connect(self) -> None:
        try:
            if self.is_sqlite:
                path = sqlite_path(self.url)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
            await self._db.connect()
            if self.is_sqlite:
                self._shared = Connection(self._db, self._db._backend)
                await self._shared.__aenter__()
                self._sqlite = self._shared.raw_connection._conn
                for pragma in (
                    "PRAGMA journal_mode=WAL",
                    "PRAGMA synchronous=NORMAL",
                    "PRAGMA busy_timeout=0",  # the loop never waits: see _off_the_loop
                    "PRAGMA wal_autocheckpoint=0",  # _checkpoint_wal does it, off the loop
                    "PRAGMA foreign_keys=ON",
                ):
                    await self._shared.execute(pragma)
                self._shared.raw_connection.row_factory = sqlite3.Row
                self._checkpointer = asyncio.create_task(
                    self._checkpoint_wal(self._sqlite),
                    name="sqlite wal checkpoints",
                )
        except Exception as exc:
            if _is_storage_failure(exc):
                where = self._db.url.obscure_password
                raise StorageError(
                    f"cannot open the database {where}: {type(exc).__name__}: {exc}"
                ) from exc
            raise

    async def _checkpoint_wal(self, connection: sqlite3.Connection) -> None:
        """Copy the WAL back into the database file while writes happen, on a worker
        thread: the automatic checkpoint would run inside whichever statement crossed
        its threshold, on the loop, and it syncs the file."""
        checkpointed = connection.total_changes
        while True:
            await asyncio.sleep(WAL_CHECKPOINT_INTERVAL)
            if connection.total_changes == checkpointed:
                continue
            try:
                async with self._lock:
                    checkpointed = connection.total_changes
                    await _off_the_loop(
                        connection,
                        partial(connection.execute, "PRAGMA wal_checkpoint(PASSIVE)"),
                        self.busy_timeout_ms,
                    )
            except sqlite3.Error as exc:  # the next round tries again
                log.warning("WAL checkpoint failed: %s: %s", type(exc).__name__, exc)

    async def disconnect(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            await asyncio.gather(self._checkpointer, return_exceptions=True)
            self._checkpointer = None
        if self._shared is not None:
            async with self._lock:
                await self._shared.__aexit__()
                self._shared = None
                self._sqlite = None
        await self._db.disconnect()

    @asynccontextmanager
    async def unit(self, *, transaction: bool = False) -> AsyncIterator[Unit]:
        """Borrow a connection; with `transaction=True` everything inside commits or not at all."""
        try:
            if self._shared is not None and self._sqlite is not None:
                async with self._lock:
                    unit = SQLiteUnit(self._shared, self._sqlite, self.busy_timeout_ms)
                    if not transaction:
                        yield unit
                    else:
                        await unit.execute("BEGIN IMMEDIATE")
                        try:
                            yield unit
                            await unit.execute("COMMIT")
                        except BaseException:
                            # Never leave the shared connection inside a transaction.
                            await asyncio.shield(unit.rollback_quietly())
                            raise
            else:
                async with self._db.connection() as connection:
                    if transaction:
                        async with connection.transaction():
                            yield Unit(connection)
                    else:
                        yield Unit(connection)
        except StorageError:
            raise
        except Exception as exc:
            if _is_storage_failure(exc):
                raise StorageError(f"database error: {type(exc).__name__}: {exc}") from exc
            raise

    async def ping(self) -> None:
        async with self.unit() as unit:
            await unit.fetch_one("SELECT 1 AS ok")
