"""Settings from the environment (and a `.env` file), validated once at start-up.

Everything else receives a `Settings` value; nothing reads `os.environ` after this.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from chatrelay.collector import DEFAULT_YOUNG_THRESHOLD
from chatrelay.config_upstreams import UpstreamSettings, UpstreamTimeouts, load_upstreams
from chatrelay.config_upstreams import base_url as upstream_base_url
from chatrelay.errors import ConfigError
from chatrelay.keys import ClientKey, parse_api_keys

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_DATA_DIR = "data"


class LogFormat(StrEnum):
    """`CHATRELAY_LOG_FORMAT`: the readable text lines, or one JSON object per line."""

    TEXT = "text"
    JSON = "json"


@dataclass(frozen=True)
class Settings:
    """The whole configuration of one process. Secrets are kept out of `repr`."""

    openai_base_url: str = DEFAULT_BASE_URL
    openai_base_url_set: bool = False  # OPENAI_BASE_URL given: a real upstream, key or not
    openai_api_key: str | None = field(default=None, repr=False)
    database_url: str = f"sqlite:///{DEFAULT_DATA_DIR}/chatrelay.db"
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    redis_prefix: str = "chatrelay:"
    redis_finished_ttl: float = 300.0
    redis_max_events: int = 200_000
    lease_ttl: float = 30.0
    # Digests of the client keys with their tenants (`keys.py`); empty: open, one tenant.
    api_keys: tuple[ClientKey, ...] = field(default=(), repr=False)
    default_model: str = "gpt-4o-mini"
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    secret_is_random: bool = True
    shutdown_grace: float = 25.0
    max_body_bytes: int = 1_048_576
    max_content_chars: int = 200_000
    context_tokens: int = 64_000
    checkpoint_interval: float = 1.0
    sqlite_busy_timeout: float = 5.0  # how long a write waits for another process's lock
    gc_threshold: int = DEFAULT_YOUNG_THRESHOLD  # collector.py; 0 keeps CPython's 700
    finished_log_ttl: float = 30.0
    stream_token_ttl: float = 3600.0
    include_usage: bool = True
    upstream_connect_timeout: float = 10.0
    upstream_first_byte_timeout: float = 60.0
    upstream_idle_timeout: float = 60.0
    upstream_total_timeout: float = 600.0
    upstream_max_retries: int = 2
    upstream_max_event_bytes: int = 1_048_576
    upstream_retry_budget: float = 20.0
    ping_interval: float = 15.0
    mock_token_delay: float = 0.02
    data_dir_setting: str | None = None
    cors_origins: tuple[str, ...] = ()  # empty: no CORS headers at all; ("*",): any origin
    upstreams: UpstreamSettings = field(
        default_factory=lambda: load_upstreams(
            {},
            base_url_value=DEFAULT_BASE_URL,
            api_key=None,
            timeouts=UpstreamTimeouts(),
            max_retries=2,
        )
    )
    log_format: LogFormat = LogFormat.TEXT
    log_content: bool = False  # prompt and answer text in generation log lines (debugging)
    metrics_enabled: bool = True  # GET /metrics
    metrics_token: str | None = field(default=None, repr=False)  # bearer token /metrics wants
    # HTTP limits, enforced below the app by `web/http_protocol.py` (docs/security.md).
    max_header_bytes: int = 32_768
    max_url_bytes: int = 8_192
    header_timeout: float = 15.0
    body_timeout: float = 30.0
    keep_alive_timeout: int = 5
    write_timeout: float = 30.0
    max_connections: int = 4_096
    # Per-tenant quotas (0 turns one off; docs/security.md, "Quotas and limits").
    rate_limit_per_minute: int = 300
    rate_limit_burst: int = 60
    max_generations_per_tenant: int = 16
    max_subscribers_per_message: int = 16
    # Size caps on stored fields and on what one read returns (0: no cap where allowed).
    max_title_chars: int = 1000
    max_metadata_bytes: int = 16_384
    max_metadata_depth: int = 8
    max_params_bytes: int = 65_536
    max_page_bytes: int = 1_048_576
    max_conversation_messages: int = 100

    @property
    def sqlite_busy_timeout_ms(self) -> int:
        """`CHATRELAY_SQLITE_BUSY_TIMEOUT` as the database layer takes it: a write that
        finds another process holding SQLite's write lock waits this long (on a worker
        thread, never on the loop) before it fails and is retried."""
        return max(1, round(self.sqlite_busy_timeout * 1000))

    @property
    def use_mock_upstream(self) -> bool:
        """Nothing names an upstream (no key, no OPENAI_BASE_URL, no routes file): answers
        come from the built-in mock. A base URL without a key is a keyless local server
        (vLLM, Ollama, llama.cpp), served as such."""
        return (
            not self.openai_api_key and not self.openai_base_url_set and not self.upstreams.routed
        )

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def data_dir(self) -> Path:
        """Where local state (SQLite file, spool) lives."""
        if self.data_dir_setting:
            return Path(self.data_dir_setting)
        if self.is_sqlite:
            path = sqlite_path(self.database_url)
            if path is not None:
                return path.parent
        return Path(DEFAULT_DATA_DIR)


def sqlite_path(url: str) -> Path | None:
    """The file behind a `sqlite:///…` URL, or None for an in-memory database."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    rest = rest.split("?", 1)[0]
    if rest.startswith("/"):
        rest = rest[1:]
    if not rest or rest == ":memory:":
        return None
    return Path(rest)


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {raw!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {raw!r}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _database_url(raw: str | None) -> str:
    if raw is None or raw.strip() == "":
        return f"sqlite:///{DEFAULT_DATA_DIR}/chatrelay.db"
    url = raw.strip()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in {"sqlite", "sqlite+aiosqlite"}:
        if sqlite_path(url) is None and ":memory:" not in url:
            raise ConfigError("DATABASE_URL sqlite URL names no file (use sqlite:///path/to.db)")
        return "sqlite:///" + url.split(":///", 1)[1] if ":///" in url else url
    if scheme in {"postgresql", "postgres", "postgresql+asyncpg"}:
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018  # raises ValueError on a bad port
        except ValueError:
            raise ConfigError("DATABASE_URL has an invalid port") from None
        if not parts.hostname and "host=" not in parts.query:
            raise ConfigError("DATABASE_URL postgresql URL names no host")
        return "postgresql://" + url.split("://", 1)[1]
    raise ConfigError(
        "DATABASE_URL must start with sqlite:/// or postgresql:// "
        f"(got a URL with scheme {scheme or 'none'!r})"
    )


def _cors_origins(raw: str | None) -> tuple[str, ...]:
    """`CHATRELAY_CORS_ORIGINS`: `*` alone, or origins exactly as browsers send them.

    An origin is compared byte for byte with the request's `Origin`, so a path, a trailing
    slash or a missing scheme would never match: refusing them beats a silent mismatch.
    """
    if raw is None or raw.strip() == "":
        return ()
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if items == ["*"]:
        return ("*",)
    origins: list[str] = []
    for position, item in enumerate(items, start=1):
        if item == "*":
            raise ConfigError("CHATRELAY_CORS_ORIGINS: '*' must be the only entry")
        parts = urlsplit(item)
        try:
            parts.port  # noqa: B018
        except ValueError:
            raise ConfigError(
                f"CHATRELAY_CORS_ORIGINS entry {position} has an invalid port"
            ) from None
        if (
            parts.scheme not in {"http", "https"}
            or not parts.hostname
            or parts.path
            or parts.query
            or parts.fragment
            or parts.username is not None
            or "://" not in item
        ):
            raise ConfigError(
                f"CHATRELAY_CORS_ORIGINS entry {position} must look like "
                f"scheme://host[:port] (no path, no trailing slash), got {item!r}"
            )
        origins.append(item.lower())
    if not origins:
        raise ConfigError("CHATRELAY_CORS_ORIGINS is set but names no origin")
    return tuple(dict.fromkeys(origins))


def _log_format(raw: str | None) -> LogFormat:
    value = (raw or "").strip().lower()
    if not value:
        return LogFormat.TEXT
    try:
        return LogFormat(value)
    except ValueError:
        raise ConfigError(f"CHATRELAY_LOG_FORMAT must be text or json, got {raw!r}") from None


def _metrics_token(raw: str | None) -> str | None:
    token = (raw or "").strip()
    if not token:
        return None
    if len(token) < 16 or not token.isascii() or not token.isprintable() or " " in token:
        raise ConfigError(
            "CHATRELAY_METRICS_TOKEN must be at least 16 printable ASCII characters, no spaces"
        )
    return token


def _max_url_bytes(env: Mapping[str, str], max_header_bytes: int) -> int:
    value = _int(env, "CHATRELAY_MAX_URL_BYTES", 8_192, minimum=256)
    if value > max_header_bytes:
        raise ConfigError(
            f"CHATRELAY_MAX_URL_BYTES ({value}) must not exceed CHATRELAY_MAX_HEADER_BYTES "
            f"({max_header_bytes}): the request target is part of the head"
        )
    return value


def load_settings(environ: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    """Build settings from `environ` (default: the process environment plus `./.env`)."""
    if environ is None:
        if dotenv:
            from dotenv import dotenv_values

            file_values = {k: v for k, v in dotenv_values(".env").items() if v is not None}
            env: dict[str, str] = {**file_values, **os.environ}
        else:
            env = dict(os.environ)
    else:
        env = dict(environ)

    secret_raw = env.get("CHATRELAY_SECRET", "").strip()
    redis_url = env.get("REDIS_URL", "").strip() or None
    if redis_url is not None and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("REDIS_URL must start with redis:// or rediss://")
    if redis_url is not None and not redis_url.startswith("unix://"):
        try:
            urlsplit(redis_url).port  # noqa: B018  # raises ValueError on a bad port
        except ValueError:
            raise ConfigError("REDIS_URL has an invalid port") from None
    redis_prefix = env.get("CHATRELAY_REDIS_PREFIX", "chatrelay:").strip() or "chatrelay:"
    finished_log_ttl = _float(env, "CHATRELAY_FINISHED_LOG_TTL", 30.0)
    redis_finished_ttl = _float(env, "CHATRELAY_REDIS_FINISHED_TTL", 300.0, minimum=1.0)
    if redis_finished_ttl < finished_log_ttl:
        raise ConfigError(
            "CHATRELAY_REDIS_FINISHED_TTL must be >= CHATRELAY_FINISHED_LOG_TTL "
            f"({finished_log_ttl:g}), got {redis_finished_ttl:g}"
        )
    api_key = env.get("OPENAI_API_KEY", "").strip() or None
    default_model = env.get("CHATRELAY_DEFAULT_MODEL", "").strip() or "gpt-4o-mini"
    timeouts = UpstreamTimeouts(
        connect=_float(env, "CHATRELAY_UPSTREAM_CONNECT_TIMEOUT", 10.0),
        first_byte=_float(env, "CHATRELAY_UPSTREAM_FIRST_BYTE_TIMEOUT", 60.0),
        idle=_float(env, "CHATRELAY_UPSTREAM_IDLE_TIMEOUT", 60.0),
        total=_float(env, "CHATRELAY_UPSTREAM_TOTAL_TIMEOUT", 600.0),
    )
    max_retries = _int(env, "CHATRELAY_UPSTREAM_MAX_RETRIES", 2)
    base_url = upstream_base_url(
        "OPENAI_BASE_URL", env.get("OPENAI_BASE_URL", "").strip() or DEFAULT_BASE_URL
    )
    max_header_bytes = _int(env, "CHATRELAY_MAX_HEADER_BYTES", 32_768, minimum=1024)
    return Settings(
        openai_base_url=base_url,
        openai_base_url_set=bool(env.get("OPENAI_BASE_URL", "").strip()),
        openai_api_key=api_key,
        database_url=_database_url(env.get("DATABASE_URL")),
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        redis_finished_ttl=redis_finished_ttl,
        redis_max_events=_int(env, "CHATRELAY_REDIS_MAX_EVENTS", 200_000, minimum=1000),
        lease_ttl=_float(env, "CHATRELAY_LEASE_TTL", 30.0, minimum=1.0),
        api_keys=parse_api_keys(env.get("CHATRELAY_API_KEYS")),
        default_model=default_model,
        secret=secret_raw.encode() if secret_raw else secrets.token_bytes(32),
        secret_is_random=not secret_raw,
        shutdown_grace=_float(env, "CHATRELAY_SHUTDOWN_GRACE", 25.0),
        max_body_bytes=_int(env, "CHATRELAY_MAX_BODY_BYTES", 1_048_576, minimum=1024),
        max_content_chars=_int(env, "CHATRELAY_MAX_CONTENT_CHARS", 200_000, minimum=1),
        context_tokens=_int(env, "CHATRELAY_CONTEXT_TOKENS", 64_000),
        checkpoint_interval=_float(env, "CHATRELAY_CHECKPOINT_INTERVAL", 1.0, minimum=0.05),
        sqlite_busy_timeout=_float(env, "CHATRELAY_SQLITE_BUSY_TIMEOUT", 5.0, minimum=0.01),
        gc_threshold=_int(env, "CHATRELAY_GC_THRESHOLD", DEFAULT_YOUNG_THRESHOLD),
        finished_log_ttl=finished_log_ttl,
        stream_token_ttl=_float(env, "CHATRELAY_STREAM_TOKEN_TTL", 3600.0, minimum=1.0),
        include_usage=_bool(env, "CHATRELAY_INCLUDE_USAGE", True),
        upstream_connect_timeout=timeouts.connect,
        upstream_first_byte_timeout=timeouts.first_byte,
        upstream_idle_timeout=timeouts.idle,
        upstream_total_timeout=timeouts.total,
        upstream_max_retries=max_retries,
        upstream_max_event_bytes=_int(
            env, "CHATRELAY_UPSTREAM_MAX_EVENT_BYTES", 1_048_576, minimum=1024
        ),
        upstream_retry_budget=_float(env, "CHATRELAY_UPSTREAM_RETRY_BUDGET", 20.0),
        ping_interval=_float(env, "CHATRELAY_PING_INTERVAL", 15.0, minimum=0.1),
        mock_token_delay=_float(env, "CHATRELAY_MOCK_TOKEN_DELAY", 0.02),
        data_dir_setting=env.get("CHATRELAY_DATA_DIR", "").strip() or None,
        cors_origins=_cors_origins(env.get("CHATRELAY_CORS_ORIGINS")),
        upstreams=load_upstreams(
            env,
            base_url_value=base_url,
            api_key=api_key,
            timeouts=timeouts,
            max_retries=max_retries,
        ),
        log_format=_log_format(env.get("CHATRELAY_LOG_FORMAT")),
        log_content=_bool(env, "CHATRELAY_LOG_CONTENT", False),
        metrics_enabled=_bool(env, "CHATRELAY_METRICS", True),
        metrics_token=_metrics_token(env.get("CHATRELAY_METRICS_TOKEN")),
        max_header_bytes=max_header_bytes,
        max_url_bytes=_max_url_bytes(env, max_header_bytes),
        header_timeout=_float(env, "CHATRELAY_HEADER_TIMEOUT", 15.0, minimum=0.1),
        body_timeout=_float(env, "CHATRELAY_BODY_TIMEOUT", 30.0, minimum=0.1),
        keep_alive_timeout=_int(env, "CHATRELAY_KEEP_ALIVE_TIMEOUT", 5, minimum=1),
        write_timeout=_float(env, "CHATRELAY_WRITE_TIMEOUT", 30.0, minimum=0.1),
        max_connections=_int(env, "CHATRELAY_MAX_CONNECTIONS", 4_096, minimum=1),
        rate_limit_per_minute=_int(env, "CHATRELAY_RATE_LIMIT_PER_MINUTE", 300),
        rate_limit_burst=_int(env, "CHATRELAY_RATE_LIMIT_BURST", 60, minimum=1),
        max_generations_per_tenant=_int(env, "CHATRELAY_MAX_GENERATIONS_PER_TENANT", 16),
        max_subscribers_per_message=_int(env, "CHATRELAY_MAX_SUBSCRIBERS_PER_MESSAGE", 16),
        max_title_chars=_int(env, "CHATRELAY_MAX_TITLE_CHARS", 1000, minimum=1),
        max_metadata_bytes=_int(env, "CHATRELAY_MAX_METADATA_BYTES", 16_384),
        max_metadata_depth=_int(env, "CHATRELAY_MAX_METADATA_DEPTH", 8),
        max_params_bytes=_int(env, "CHATRELAY_MAX_PARAMS_BYTES", 65_536),
        max_page_bytes=_int(env, "CHATRELAY_MAX_PAGE_BYTES", 1_048_576),
        max_conversation_messages=_int(env, "CHATRELAY_MAX_CONVERSATION_MESSAGES", 100, minimum=1),
    )
