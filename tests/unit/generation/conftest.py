"""`harness`: the generation core on a real SQLite file in `tmp_path`, torn down after."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatrelay.generation.engine import Engine
from chatrelay.storage.database import Database
from chatrelay.storage.migrations import apply_migrations
from chatrelay.storage.spool import Spool
from tests.fakes.chat_upstream import ScriptedUpstream
from tests.unit.generation.harness import BUSY_TIMEOUT_MS, Harness, SpyRepository

# Short, real intervals instead of a fake clock; a test needing others says so with
# @pytest.mark.parametrize("intervals", [{...}], indirect=True).
INTERVALS = {"checkpoint_interval": 0.02, "finished_log_ttl": 5.0, "poll_interval": 0.02}


@pytest.fixture
def intervals(request: pytest.FixtureRequest) -> dict[str, float]:
    return {**INTERVALS, **getattr(request, "param", {})}


@pytest.fixture
async def harness(tmp_path: Path, intervals: dict[str, float]) -> AsyncIterator[Harness]:
    path = tmp_path / "chatrelay.db"
    db = Database(f"sqlite:///{path}", busy_timeout_ms=BUSY_TIMEOUT_MS)
    await db.connect()
    await apply_migrations(db)
    repo = SpyRepository(db)
    upstream = ScriptedUpstream()
    spool = Spool(tmp_path / "spool")
    engine = await Engine.start(repo, upstream, spool=spool, **intervals)
    made = Harness(db, path, repo, upstream, spool, engine, intervals)
    try:
        yield made
    finally:
        for started in [made.engine, *made.others]:  # interrupts what still runs
            await made.stop(started)
        await db.disconnect()


@pytest.fixture
def generation_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """What the generation core logs, from INFO (where stop reasons are)."""
    caplog.set_level(logging.INFO, logger="chatrelay.generation")
    return caplog
