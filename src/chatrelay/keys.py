"""Client keys as the service holds them: a tenant and the SHA-256 digest of its key.

`CHATRELAY_API_KEYS` lists `tenant:key` or `tenant:sha256:<64 hex digits>` entries. Both
become a digest at start-up, so a presented key is hashed once and compared digest to
digest, and a configuration written in the hashed form holds no usable secret. A tenant may
have several entries: during a rotation the old key and the new one both work.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from chatrelay.errors import ConfigError

HASHED_PREFIX = "sha256:"
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_SETTING = "CHATRELAY_API_KEYS"


@dataclass(frozen=True, slots=True)
class ClientKey:
    """One accepted key. Only the digest is kept; `repr` shows neither it nor a key."""

    tenant: str
    digest: bytes = field(repr=False)


def key_digest(key: str) -> bytes:
    """The SHA-256 of a key as sent (`Authorization: Bearer <key>`, surrounding blanks removed)."""
    return hashlib.sha256(key.strip().encode()).digest()


def hashed_entry(tenant: str, key: str) -> str:
    """The `CHATRELAY_API_KEYS` entry that accepts `key` for `tenant` without holding it."""
    return f"{tenant}:{HASHED_PREFIX}{key_digest(key).hex()}"


def parse_api_keys(raw: str | None) -> tuple[ClientKey, ...]:
    """`CHATRELAY_API_KEYS` as digests; a malformed entry is a `ConfigError` naming its position.

    Error messages never quote an entry: it may be a live key.
    """
    if raw is None or raw == "":
        return ()
    keys: list[ClientKey] = []
    seen: set[bytes] = set()
    for position, item in enumerate(raw.split(","), start=1):
        item = item.strip()
        if not item:
            continue
        key = _parse_entry(item, position)
        if key.digest in seen:
            raise ConfigError(f"{_SETTING} entry {position} repeats a key already given")
        seen.add(key.digest)
        keys.append(key)
    if not keys:
        # Set but empty-looking: refusing beats silently running with no authentication.
        raise ConfigError(f"{_SETTING} is set but names no tenant:key pair")
    return tuple(keys)


def _parse_entry(item: str, position: int) -> ClientKey:
    tenant, sep, rest = item.partition(":")
    tenant, rest = tenant.strip(), rest.strip()
    if not sep or not tenant or not rest:
        raise ConfigError(
            f"{_SETTING} entry {position} must look like tenant:key or tenant:sha256:<hex>"
        )
    if rest.lower().startswith(HASHED_PREFIX):
        hex_digest = rest[len(HASHED_PREFIX) :].strip()
        if not _HEX_DIGEST.fullmatch(hex_digest):
            raise ConfigError(
                f"{_SETTING} entry {position} starts a hashed key but is not "
                "tenant:sha256:<64 hex digits> (make one with `chatrelay hash-key TENANT`)"
            )
        return ClientKey(tenant, bytes.fromhex(hex_digest))
    return ClientKey(tenant, key_digest(rest))


def tenants(keys: tuple[ClientKey, ...]) -> tuple[str, ...]:
    """Every tenant that has at least one key, each once, in a stable order."""
    return tuple(sorted({key.tenant for key in keys}))
