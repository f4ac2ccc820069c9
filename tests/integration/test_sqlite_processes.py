"""One SQLite file, several processes writing at once (`--workers N` on SQLite).

Each worker has its own connection; WAL lets readers go on beside the one writer, the busy
timeout makes a writer wait for the lock instead of failing with "database is locked",
and every transaction begins IMMEDIATE, so none has to upgrade a read lock (which no
timeout helps). Two processes run every kind of write the service makes, started together.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from multiprocessing.synchronize import Event
from pathlib import Path

from chatrelay.clock import now_iso
from chatrelay.models import Status
from chatrelay.storage.database import Database
from chatrelay.storage.migrations import apply_migrations
from chatrelay.storage.repository import Repository

_ROUNDS = 120


async def _write_rounds(url: str, name: str, rounds: int) -> None:
    db = Database(url)
    await db.connect()
    try:
        await apply_migrations(db)  # both at once, as workers' lifespans do
        repo = Repository(db)
        for i in range(rounds):
            conversation, _ = await repo.create_conversation(
                tenant=name, title=f"{name}-{i}", system_prompt=None, model=None, metadata={}
            )
            turn = await repo.add_turn(
                tenant=name,
                conversation_id=conversation.id,
                user_content=f"question {i}",
                choose_model=lambda _: "m",
                params={},
            )
            partial = turn.assistant.evolve(content=f"partial {i}")
            await repo.checkpoint([partial])
            await repo.finalize(
                partial.evolve(
                    content=f"answer {i}", status=Status.COMPLETED, completed_at=now_iso()
                )
            )
            stored = await repo.get_message(name, turn.assistant.id)
            assert stored.status is Status.COMPLETED and stored.content == f"answer {i}"
    finally:
        await db.disconnect()


def _writer(url: str, name: str, rounds: int, go: Event) -> None:
    go.wait(30)
    asyncio.run(_write_rounds(url, name, rounds))


def test_two_processes_write_one_sqlite_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    url = f"sqlite:///{path}"
    spawn = multiprocessing.get_context("spawn")
    go = spawn.Event()
    writers = [spawn.Process(target=_writer, args=(url, name, _ROUNDS, go)) for name in ("a", "b")]
    for writer in writers:
        writer.start()
    go.set()
    for writer in writers:
        writer.join(90)
    assert [w.exitcode for w in writers] == [0, 0], "a writer failed (see its traceback above)"
    with sqlite3.connect(path) as conn:
        counts = dict(conn.execute("SELECT tenant, COUNT(*) FROM conversations GROUP BY tenant"))
        done = conn.execute(
            "SELECT COUNT(*) FROM messages WHERE role = 'assistant' AND status = 'completed'"
        ).fetchone()[0]
        (journal,) = conn.execute("PRAGMA journal_mode").fetchone()
    assert counts == {"a": _ROUNDS, "b": _ROUNDS}
    assert done == 2 * _ROUNDS
    assert journal == "wal"
