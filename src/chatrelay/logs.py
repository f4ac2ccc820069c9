"""How the service's log lines look: the current text, or one JSON object per line.

`CHATRELAY_LOG_FORMAT=json` puts every record (the service's, uvicorn's, libraries') on
stderr as a JSON object: `ts`, `level`, `logger`, `msg`, the `request_id` of the request
(or generation) it was logged under, and the structured `fields` a record carries — the
per-request line (`web/instrumentation.py`) and the per-generation line
(`outcome_log.py`) put everything an operator filters on there. docs/operations.md lists
the fields.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from chatrelay.config import LogFormat
from chatrelay.request_context import current_request_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS = "fields"  # the `extra` key whose dict a JSON line is extended with


class TextFormatter(logging.Formatter):
    """The readable line, with ` [request <id>]` when it was logged under a request (and
    `[worker N]` in a worker of `--workers`)."""

    def __init__(self, worker: int | None = None) -> None:
        tag = "" if worker is None else f"[worker {worker}] "
        super().__init__(TEXT_FORMAT.replace("%(name)s", tag + "%(name)s", 1))

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = current_request_id()
        return line if request_id is None else f"{line} [request {request_id}]"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; structured `fields` are merged in at the top level (and
    `worker` in a worker of `--workers`)."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self._worker is not None:
            line["worker"] = self._worker
        request_id = current_request_id()
        if request_id is not None:
            line["request_id"] = request_id
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(
    level: str,
    log_format: LogFormat,
    *,
    filters: Sequence[logging.Filter] = (),
    worker: int | None = None,
) -> None:
    """The root handler on stderr in `log_format`; `filters` run on every record it writes."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter(worker))
        logging.captureWarnings(True)  # Python's warnings too, rather than bare stderr text
    else:
        handler.setFormatter(TextFormatter(worker))
    for log_filter in filters:
        handler.addFilter(log_filter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
