"""Final message writes that could not reach the database before the process had to stop.

Each is appended as one JSON line (flushed and fsynced) under the data directory, and
replayed at the next start before crash recovery runs, so a finished message is never
downgraded to `interrupted`. Replaying is idempotent: the final write only applies to a
row still `streaming`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from chatrelay.clock import now_iso
from chatrelay.models import Message
from chatrelay.storage.repository import Repository, message_from_record, message_record

log = logging.getLogger("chatrelay.storage")


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, messages: list[Message]) -> Path | None:
        if not messages:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"final-{os.getpid()}-{now_iso().replace(':', '')}.jsonl"
        with open(path, "a", encoding="utf-8") as handle:
            for message in messages:
                handle.write(json.dumps(message_record(message), ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        log.error("spooled %d final message write(s) to %s", len(messages), path)
        return path

    async def replay(self, repo: Repository) -> int:
        """Apply every spooled final write; a file is removed once all of it landed."""
        if not self.directory.is_dir():
            return 0
        applied = 0
        for path in sorted(self.directory.glob("final-*.jsonl")):
            lines = path.read_text(encoding="utf-8").splitlines()
            for line in lines:
                if not line.strip():
                    continue
                try:
                    message = message_from_record(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    log.error("skipping an unreadable spool line in %s", path)
                    continue
                await repo.finalize(message)
                applied += 1
            path.unlink()
        if applied:
            log.warning("replayed %d spooled final write(s)", applied)
        return applied
