"""The upstreams, as configured: one from the `OPENAI_*` variables, or several from a routes file.

Everything an upstream connection needs is decided here, once, at start-up: its URL (a
query string such as Azure's `api-version` kept for every request), how the key is sent
(`Authorization: Bearer` or Azure's `api-key`), fixed extra headers, which CA bundle to
trust (`SSL_CERT_FILE` / `SSL_CERT_DIR` replace the public bundle as everywhere else;
`CHATRELAY_UPSTREAM_CA_FILE` adds a private CA to it), and which proxy to go through
(`HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY`, minus `NO_PROXY`). Resolving the proxy once per
upstream, instead of per request as libraries reading the environment do, keeps it off the
hot path and lets start-up name it (credentials stripped).

A routes file (`CHATRELAY_UPSTREAMS=routes.toml`) maps models to upstreams:

    [[upstream]]
    name = "openai"
    base_url = "https://api.openai.com/v1"
    api_key_env = "OPENAI_API_KEY"
    prefixes = ["gpt-", "o1", "o3", "o4"]

    [[upstream]]
    name = "local"
    base_url = "http://127.0.0.1:11434/v1"
    models = ["llama3.2"]
    default = true

A model goes to the upstream that lists it exactly, else to the one with the longest
matching prefix, else to the `default` one; with none, the request is refused before
anything is stored.
"""

from __future__ import annotations

import json
import math
import re
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from chatrelay.errors import ConfigError

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ROUTE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection", "accept"}
)


class AuthStyle(StrEnum):
    """How the upstream key is sent."""

    BEARER = "bearer"  # Authorization: Bearer <key> (OpenAI and nearly everyone)
    API_KEY = "api-key"  # api-key: <key> (Azure OpenAI)


@dataclass(frozen=True)
class TrustSettings:
    """Which certificates an HTTPS upstream may present."""

    cert_file: str | None = None  # SSL_CERT_FILE: replaces the public bundle
    cert_dir: str | None = None  # SSL_CERT_DIR: replaces the public bundle
    ca_file: str | None = None  # CHATRELAY_UPSTREAM_CA_FILE / a route's ca_file: added to it


@dataclass(frozen=True)
class UpstreamTimeouts:
    connect: float = 10.0
    first_byte: float = 60.0
    idle: float = 60.0
    total: float = 600.0


@dataclass(frozen=True)
class UpstreamRoute:
    """One upstream and the models it serves. Secrets are kept out of `repr`."""

    name: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    auth: AuthStyle = AuthStyle.BEARER
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    models: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    is_default: bool = False
    timeouts: UpstreamTimeouts = field(default_factory=UpstreamTimeouts)
    max_retries: int = 2
    trust: TrustSettings = field(default_factory=TrustSettings)
    proxy: str | None = field(default=None, repr=False)  # http://[user:pass@]host:port
    proxy_setting: str | None = None  # the variable that named the proxy (HTTPS_PROXY, ...)
    source: str = "OPENAI_BASE_URL"  # what an operator should fix when the URL is wrong


@dataclass(frozen=True)
class UpstreamSettings:
    routes: tuple[UpstreamRoute, ...]
    from_file: str | None = None  # the routes file, when there is one
    check_at_start: bool = False  # CHATRELAY_UPSTREAM_CHECK: GET /models once at start-up

    @property
    def routed(self) -> bool:
        """Models choose the upstream (a routes file); otherwise every model goes to one."""
        return self.from_file is not None


def strip_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# -- parsing --------------------------------------------------------------------------------


def _env(env: Mapping[str, str], name: str) -> str | None:
    """A variable in its usual or lower-case spelling (proxies are set both ways)."""
    for key in (name, name.lower()):
        value = env.get(key, "").strip()
        if value:
            return value
    return None


def base_url(where: str, raw: str) -> str:
    """An http(s) base URL; a trailing slash goes, a query string (Azure) stays."""
    url = raw.strip()
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"{where} must be an http(s) URL, got {strip_credentials(url)!r}")
    try:
        parts.port  # noqa: B018  # raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"{where} has an invalid port") from None
    if parts.fragment:
        raise ConfigError(f"{where} must not have a #fragment")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), parts.query, ""))


def _auth(where: str, raw: str | None) -> AuthStyle:
    if raw is None or raw.strip() == "":
        return AuthStyle.BEARER
    try:
        return AuthStyle(raw.strip().lower())
    except ValueError:
        raise ConfigError(f"{where} must be 'bearer' or 'api-key', got {raw!r}") from None


def _headers(where: str, value: Any) -> dict[str, str]:
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigError(
                f'{where} must be a JSON object such as {{"X-Title": "my app"}}'
            ) from None
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be an object of header names to values")
    headers: dict[str, str] = {}
    for name, header_value in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ConfigError(f"{where}: {name!r} is not a valid header name")
        if name.lower() in _RESERVED_HEADERS or name.lower() in {"authorization", "api-key"}:
            raise ConfigError(f"{where}: {name} is set by chatrelay itself")
        if not isinstance(header_value, str) or any(c in header_value for c in "\r\n\0"):
            raise ConfigError(f"{where}: the value of {name} must be a one-line string")
        headers[name] = header_value
    return headers


def _readable_file(where: str, raw: str | None) -> str | None:
    if raw is None or raw.strip() == "":
        return None
    path = Path(raw.strip())
    if not path.is_file():
        raise ConfigError(f"{where} names no readable file: {raw.strip()}")
    try:
        ssl.create_default_context().load_verify_locations(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"{where} holds no PEM certificate ({exc})") from None
    return str(path)


def _bypasses(host: str, port: int | None, no_proxy: str) -> bool:
    """curl's `NO_PROXY` rule: `*`, or an entry that is the host or a domain it is in
    (`example.com` and `.example.com` both cover `api.example.com`), optionally `:port`."""
    host = host.lower().rstrip(".")
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if entry == "*":
            return True
        if not entry:
            continue
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and (not entry_port.isdigit() or port is None or int(entry_port) != port):
            continue
        name = name.strip("[]").lstrip(".").rstrip(".")
        if host == name or host.endswith("." + name):
            return True
    return False


def _proxy_for(url: str, env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The proxy an upstream at `url` is reached through, by the usual variables, and the
    variable that named it (for messages telling the operator what to fix)."""
    parts = urlsplit(url)
    no_proxy = _env(env, "NO_PROXY")
    if (
        no_proxy is not None
        and parts.hostname is not None
        and _bypasses(parts.hostname, parts.port, no_proxy)
    ):
        return None, None
    specific = "HTTPS_PROXY" if parts.scheme == "https" else "HTTP_PROXY"
    proxy = _env(env, specific) or _env(env, "ALL_PROXY")
    if proxy is None:
        return None, None
    which = specific if _env(env, specific) else "ALL_PROXY"
    if "://" not in proxy:
        proxy = "http://" + proxy  # `host:port`, as curl accepts it
    proxy_parts = urlsplit(proxy)
    if proxy_parts.scheme != "http" or not proxy_parts.hostname:
        raise ConfigError(
            f"{which} must be an http:// proxy (got a {proxy_parts.scheme}:// one, which the "
            "upstream client cannot use)"
        )
    try:
        proxy_parts.port  # noqa: B018
    except ValueError:
        raise ConfigError(f"{which} has an invalid port") from None
    return proxy, which


def _number(where: str, value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where} must be a number of seconds")
    if value < 0:
        raise ConfigError(f"{where} must be >= 0")
    return float(value)


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where} must be a list of non-empty strings")
    return tuple(value)


_ROUTE_KEYS = frozenset(
    {
        "name",
        "base_url",
        "api_key",
        "api_key_env",
        "auth",
        "headers",
        "models",
        "prefixes",
        "default",
        "connect_timeout",
        "first_byte_timeout",
        "idle_timeout",
        "total_timeout",
        "max_retries",
        "ca_file",
    }
)


def _route_from_table(
    position: int,
    table: Any,
    env: Mapping[str, str],
    defaults: UpstreamRoute,
    path: str,
) -> UpstreamRoute:
    where = f"{path}: upstream {position}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(table) - _ROUTE_KEYS)
    if unknown:
        raise ConfigError(f"{where} has unknown keys: {', '.join(unknown)}")
    name = table.get("name")
    if not isinstance(name, str) or not _ROUTE_NAME.fullmatch(name):
        raise ConfigError(f"{where} needs a name (letters, digits, _ . -)")
    where = f"{path}: upstream {name!r}"
    raw_url = table.get("base_url")
    if not isinstance(raw_url, str):
        raise ConfigError(f"{where} needs a base_url")
    url = base_url(f"{where} base_url", raw_url)
    api_key = table.get("api_key")
    key_env = table.get("api_key_env")
    if api_key is not None and key_env is not None:
        raise ConfigError(f"{where}: give api_key or api_key_env, not both")
    if key_env is not None:
        if not isinstance(key_env, str) or not key_env:
            raise ConfigError(f"{where} api_key_env must name a variable")
        api_key = env.get(key_env, "").strip() or None
        if api_key is None:
            raise ConfigError(f"{where}: api_key_env {key_env} is not set")
    if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
        raise ConfigError(f"{where} api_key must be a non-empty string")
    retries = table.get("max_retries", defaults.max_retries)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"{where} max_retries must be a whole number >= 0")
    is_default = table.get("default", False)
    if not isinstance(is_default, bool):
        raise ConfigError(f"{where} default must be true or false")
    trust = defaults.trust
    ca_file = _readable_file(f"{where} ca_file", table.get("ca_file"))
    if ca_file is not None:
        trust = TrustSettings(trust.cert_file, trust.cert_dir, ca_file)
    base = defaults.timeouts
    proxy, proxy_setting = _proxy_for(url, env)
    return UpstreamRoute(
        name=name,
        base_url=url,
        api_key=api_key.strip() if isinstance(api_key, str) else None,
        auth=_auth(f"{where} auth", table.get("auth")),
        headers=_headers(f"{where} headers", table.get("headers", {})),
        models=_strings(f"{where} models", table.get("models")),
        prefixes=_strings(f"{where} prefixes", table.get("prefixes")),
        is_default=is_default,
        timeouts=UpstreamTimeouts(
            connect=_number(f"{where} connect_timeout", table.get("connect_timeout"), base.connect),
            first_byte=_number(
                f"{where} first_byte_timeout", table.get("first_byte_timeout"), base.first_byte
            ),
            idle=_number(f"{where} idle_timeout", table.get("idle_timeout"), base.idle),
            total=_number(f"{where} total_timeout", table.get("total_timeout"), base.total),
        ),
        max_retries=retries,
        trust=trust,
        proxy=proxy,
        proxy_setting=proxy_setting,
        source=f"base_url of upstream {name!r} in {path}",
    )


def _routes_file(
    path: str, env: Mapping[str, str], defaults: UpstreamRoute
) -> tuple[UpstreamRoute, ...]:
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"CHATRELAY_UPSTREAMS: cannot read {path} ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"CHATRELAY_UPSTREAMS: {path} is not valid TOML ({exc})") from None
    unknown = sorted(set(document) - {"upstream"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level keys: {', '.join(unknown)}")
    tables = document.get("upstream")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{path} must hold at least one [[upstream]] table")
    routes = tuple(
        _route_from_table(position, table, env, defaults, path)
        for position, table in enumerate(tables, start=1)
    )
    names = [route.name for route in routes]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: upstream names must be unique")
    if sum(route.is_default for route in routes) > 1:
        raise ConfigError(f"{path}: at most one upstream may be the default")
    for route in routes:
        if not (route.models or route.prefixes or route.is_default):
            raise ConfigError(
                f"{path}: upstream {route.name!r} serves no model (give models, prefixes "
                "or default = true)"
            )
    claimed: dict[str, str] = {}
    for route in routes:
        for model in route.models:
            if model in claimed:
                raise ConfigError(
                    f"{path}: model {model!r} is listed by {claimed[model]!r} and {route.name!r}"
                )
            claimed[model] = route.name
    return routes


def load_upstreams(
    env: Mapping[str, str],
    *,
    base_url_value: str,
    api_key: str | None,
    timeouts: UpstreamTimeouts,
    max_retries: int,
) -> UpstreamSettings:
    """The upstreams from the environment (the `OPENAI_*` pair, or `CHATRELAY_UPSTREAMS`)."""
    trust = TrustSettings(
        cert_file=_readable_file("SSL_CERT_FILE", env.get("SSL_CERT_FILE")),
        cert_dir=(env.get("SSL_CERT_DIR", "").strip() or None),
        ca_file=_readable_file("CHATRELAY_UPSTREAM_CA_FILE", env.get("CHATRELAY_UPSTREAM_CA_FILE")),
    )
    if trust.cert_dir is not None and not Path(trust.cert_dir).is_dir():
        raise ConfigError(f"SSL_CERT_DIR names no directory: {trust.cert_dir}")
    proxy, proxy_setting = _proxy_for(base_url_value, env)
    single = UpstreamRoute(
        name="default",
        base_url=base_url("OPENAI_BASE_URL", base_url_value),
        api_key=api_key,
        auth=_auth("CHATRELAY_UPSTREAM_AUTH", env.get("CHATRELAY_UPSTREAM_AUTH")),
        headers=_headers("CHATRELAY_UPSTREAM_HEADERS", env.get("CHATRELAY_UPSTREAM_HEADERS", "")),
        is_default=True,
        timeouts=timeouts,
        max_retries=max_retries,
        trust=trust,
        proxy=proxy,
        proxy_setting=proxy_setting,
    )
    check = env.get("CHATRELAY_UPSTREAM_CHECK", "").strip().lower()
    if check not in {"", "0", "1", "true", "false", "yes", "no", "on", "off"}:
        raise ConfigError(f"CHATRELAY_UPSTREAM_CHECK must be true or false, got {check!r}")
    check_at_start = check in {"1", "true", "yes", "on"}
    path = env.get("CHATRELAY_UPSTREAMS", "").strip()
    if not path:
        return UpstreamSettings((single,), check_at_start=check_at_start)
    return UpstreamSettings(
        _routes_file(path, env, single), from_file=path, check_at_start=check_at_start
    )
