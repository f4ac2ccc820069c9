"""The only user of `databases`: connections, units of work, dialect differences.

SQLite gets one long-lived connection shared by the whole process behind a lock: SQLite
allows one writer anyway, and `databases` would otherwise open a connection (and a
thread) per task — thousands under load. PostgreSQL uses the asyncpg pool, one pooled
connection per unit of work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import databases
from databases.core import Connection

from chatrelay.config import sqlite_path
from chatrelay.errors import StorageError

log = logging.getLogger("chatrelay.storage")

Row = Mapping[str, Any]


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


class SQLiteUnit(Unit):
    """The same, on the aiosqlite connection `databases` opened for us.

    SQLite takes our `:name` parameters natively, so statements skip the SQLAlchemy
    compile step that `databases` runs on every call — the largest CPU cost per query —
    and each statement is one trip to the connection's thread.
    """

    def __init__(self, connection: Connection) -> None:
        super().__init__(connection)
        self._raw = connection.raw_connection

    async def execute(self, sql: str, values: Mapping[str, Any] | None = None) -> None:
        await self._raw.execute_fetchall(sql, values or {})

    async def execute_many(self, sql: str, values: Sequence[Mapping[str, Any]]) -> None:
        if values:
            await self._raw.executemany(sql, values)

    async def fetch_one(self, sql: str, values: Mapping[str, Any] | None = None) -> Row | None:
        rows = await self._raw.execute_fetchall(sql, values or {})
        return dict(rows[0]) if rows else None

    async def fetch_all(self, sql: str, values: Mapping[str, Any] | None = None) -> list[Row]:
        return [dict(row) for row in await self._raw.execute_fetchall(sql, values or {})]

    async def rollback_quietly(self) -> None:
        """Roll back if a transaction is open (SQLite may already have rolled it back)."""
        with contextlib.suppress(sqlite3.Error):
            if self._raw.in_transaction:
                await self._raw.execute_fetchall("ROLLBACK")


class Database:
    """Connects, hands out units of work, and translates driver failures to `StorageError`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        self._db = databases.Database(url)
        self._shared: Connection | None = None
        self._lock = asyncio.Lock()

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
                for pragma in (
                    "PRAGMA journal_mode=WAL",
                    "PRAGMA synchronous=NORMAL",
                    "PRAGMA busy_timeout=5000",
                    "PRAGMA foreign_keys=ON",
                ):
                    await self._shared.execute(pragma)
                self._shared.raw_connection.row_factory = sqlite3.Row
        except Exception as exc:
            if _is_storage_failure(exc):
                where = self._db.url.obscure_password
                raise StorageError(
                    f"cannot open the database {where}: {type(exc).__name__}: {exc}"
                ) from exc
            raise

    async def disconnect(self) -> None:
        if self._shared is not None:
            async with self._lock:
                await self._shared.__aexit__()
                self._shared = None
        await self._db.disconnect()

    @asynccontextmanager
    async def unit(self, *, transaction: bool = False) -> AsyncIterator[Unit]:
        """Borrow a connection; with `transaction=True` everything inside commits or not at all."""
        try:
            if self._shared is not None:
                async with self._lock:
                    unit = SQLiteUnit(self._shared)
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
