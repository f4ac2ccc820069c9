"""After the whole run: no secret a test gave a chatrelay process appears in its log.

Every `ServiceProcess` registers its log file with the secrets of its environment (the
upstream key, client keys, the signing secret, extra upstream header values, passwords
in Redis, database and proxy URLs). At the end of the session each log is searched for
each of its secrets and for any stream token left unredacted in a `token=` query value.
Issue #12 asks for exactly this: a grep of a full test run's logs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

_PLAIN_SECRETS = ("OPENAI_API_KEY", "CHATRELAY_SECRET", "CHATRELAY_METRICS_TOKEN")
_URL_SETTINGS = ("REDIS_URL", "DATABASE_URL", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
_MIN_LENGTH = 6  # shorter values would match ordinary words
# A `token` query value that is not the redaction marker (raw or percent-encoded).
_TOKEN_QUERY = re.compile(r"[?&]token=(?!\[redacted\]|%5Bredacted%5D)[^\s&\"']{8,}")


@dataclass(frozen=True)
class Launched:
    log_path: Path
    secrets: frozenset[str]


_launched: list[Launched] = []


def secrets_of(env: dict[str, str]) -> frozenset[str]:
    found: set[str] = set()
    for name in _PLAIN_SECRETS:
        if env.get(name):
            found.add(env[name])
    for name, value in env.items():
        if name.endswith("_API_KEY") and value:
            found.add(value)
    for item in env.get("CHATRELAY_API_KEYS", "").split(","):
        _, _, key = item.strip().partition(":")
        if key and not key.startswith("sha256:"):
            found.add(key)
    try:
        headers = json.loads(env.get("CHATRELAY_UPSTREAM_HEADERS") or "{}")
    except ValueError:
        headers = {}
    if isinstance(headers, dict):
        found.update(v for v in headers.values() if isinstance(v, str))
    for name in _URL_SETTINGS:
        password = _password(env.get(name, ""))
        if password:
            found.add(password)
    return frozenset(s for s in found if len(s) >= _MIN_LENGTH)


def _password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def register(log_path: Path, env: dict[str, str]) -> None:
    _launched.append(Launched(log_path, secrets_of(env)))


def leaks(launched_list: list[Launched] | None = None) -> list[str]:
    """One line per log that holds a secret or an unredacted token (which, not the value)."""
    problems = []
    for launched in _launched if launched_list is None else launched_list:
        try:
            text = launched.log_path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        for secret in launched.secrets:
            if secret in text:
                problems.append(f"{launched.log_path}: holds a secret of {len(secret)} characters")
        if _TOKEN_QUERY.search(text):
            problems.append(f"{launched.log_path}: holds an unredacted stream token")
    return problems
