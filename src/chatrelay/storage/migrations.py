"""Ordered, named schema migrations, applied at start-up and recorded in `schema_migrations`.

Append new steps at the end; never edit an applied one. On PostgreSQL an advisory lock
makes concurrent start-ups take turns; on SQLite the database's own write lock does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from chatrelay.clock import now_iso
from chatrelay.errors import StorageError
from chatrelay.storage.database import Database

log = logging.getLogger("chatrelay.storage")

_ADVISORY_LOCK_KEY = 0x63686174  # "chat"


@dataclass(frozen=True)
class Migration:
    name: str
    statements: Callable[[str], list[str]]  # dialect -> SQL statements


MIGRATIONS: list[Migration] = []


def migration(name: str) -> Callable[[Callable[[str], list[str]]], Callable[[str], list[str]]]:
    """Register a migration step; the decorated function returns its SQL for a dialect."""

    def register(fn: Callable[[str], list[str]]) -> Callable[[str], list[str]]:
        if any(m.name == name for m in MIGRATIONS):
            raise ValueError(f"duplicate migration {name}")
        MIGRATIONS.append(Migration(name, fn))
        return fn

    return register


@migration("0001_conversations_and_messages")
def _initial(dialect: str) -> list[str]:
    return [
        """
        CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            title TEXT,
            system_prompt TEXT,
            model TEXT,
            metadata TEXT NOT NULL,
            next_seq INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX conversations_by_tenant ON conversations (tenant, id)",
        """
        CREATE TABLE messages (
            id TEXT PRIMARY KEY,
            conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            tenant TEXT NOT NULL,
            seq INTEGER NOT NULL,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            status TEXT NOT NULL,
            finish_reason TEXT,
            model TEXT,
            usage TEXT,
            error TEXT,
            reasoning TEXT,
            refusal TEXT,
            tool_calls TEXT,
            params TEXT NOT NULL,
            pieces TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            completed_at TEXT,
            UNIQUE (conversation_id, seq)
        )
        """,
        "CREATE INDEX messages_by_status ON messages (status)",
    ]


@migration("0002_message_superseded_by")
def _superseded(dialect: str) -> list[str]:
    """Edit and regenerate keep old turns but take them out of the context."""
    return ["ALTER TABLE messages ADD COLUMN superseded_by TEXT"]


@migration("0003_message_leases")
def _leases(dialect: str) -> list[str]:
    """Which instance generates a streaming message, and until when its lease holds.

    `lease_expires_at` is seconds since the epoch on the database's own clock, so that
    instances with skewed clocks still agree on when a lease has expired.
    """
    return [
        "ALTER TABLE messages ADD COLUMN owner TEXT",
        "ALTER TABLE messages ADD COLUMN lease_expires_at DOUBLE PRECISION",
    ]


async def apply_migrations(db: Database) -> list[str]:
    """Apply every migration not yet recorded; returns the names applied now."""
    for attempt in range(20):
        try:
            applied_now = await _apply_once(db)
            break
        except StorageError:
            # Two SQLite processes starting together: one loses the race for the write
            # lock and retries once the other has committed.
            if not db.is_sqlite or attempt == 19:
                raise
            await asyncio.sleep(0.1 * (attempt + 1))
    for name in applied_now:
        log.info("applied migration %s", name)
    return applied_now


async def _apply_once(db: Database) -> list[str]:
    applied_now: list[str] = []
    async with db.unit(transaction=True) as unit:
        if not db.is_sqlite:
            await unit.execute(f"SELECT pg_advisory_xact_lock({_ADVISORY_LOCK_KEY})")
        await unit.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        rows = await unit.fetch_all("SELECT name FROM schema_migrations")
        done = {row["name"] for row in rows}
        for step in MIGRATIONS:
            if step.name in done:
                continue
            for sql in step.statements(db.dialect):
                await unit.execute(sql)
            await unit.execute(
                "INSERT INTO schema_migrations (name, applied_at) VALUES (:name, :at)",
                {"name": step.name, "at": now_iso()},
            )
            applied_now.append(step.name)
    return applied_now
