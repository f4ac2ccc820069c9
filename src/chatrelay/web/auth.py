"""Who is calling: client keys to tenants, and signed `stream_url` tokens for browsers.

A browser's `EventSource` cannot set headers, so `stream_url` carries a short-lived HMAC
token bound to one message and its tenant; it opens that one stream and nothing else.

A token is opaque: it holds its expiry and a MAC over (message, expiry, tenant), not the
tenant itself, which anyone holding a token could otherwise read (and which a URL in a log,
a history or a `Referer` would show). The service finds the tenant by checking the MAC
against each configured tenant: a handful of HMACs, all computed, so the time taken does
not depend on which one matched. A tenant whose keys are all removed loses its tokens too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Sequence

from starlette.requests import Request

from chatrelay.errors import Unauthorized
from chatrelay.keys import ClientKey, key_digest, tenants
from chatrelay.request_context import note_tenant

DEFAULT_TENANT = "default"
# What `stream_token` produces: unpadded URL-safe base64. Anything else is refused before
# decoding, so odd bytes in a token are a 401, never a failure deeper in.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,1024}")
# Domain separation: an opaque token's MAC input can never equal a legacy token's, whose
# input starts with the message id.
_OPAQUE_CONTEXT = "v2"


class Authenticator:
    def __init__(self, keys: Sequence[ClientKey], secret: bytes, token_ttl: float) -> None:
        self._keys = tuple(keys)
        self._tenants = tenants(self._keys) or (DEFAULT_TENANT,)
        self._secret = secret
        self._token_ttl = token_ttl

    @property
    def open(self) -> bool:
        return not self._keys

    def tenant(self, request: Request) -> str:
        """The caller's tenant, from `Authorization: Bearer <key>` (any caller when open).

        The presented key is hashed once and its digest compared with every configured one
        (no early exit), so neither a key's prefix nor its position in the list shows in
        the time taken.
        """
        if self.open:
            note_tenant(DEFAULT_TENANT)  # for the request's log line
            return DEFAULT_TENANT
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("missing client key: send Authorization: Bearer <key>")
        presented = key_digest(key)
        found: str | None = None
        for candidate in self._keys:
            if hmac.compare_digest(candidate.digest, presented):
                found = candidate.tenant
        if found is None:
            raise Unauthorized("unknown client key")
        note_tenant(found)
        return found

    def stream_token(self, tenant: str, message_id: str) -> str:
        """`<expiry>.<mac>`, base64url: names neither the tenant nor the message."""
        expires = str(int(time.time() + self._token_ttl))
        raw = f"{expires}.{self._opaque_mac(message_id, expires, tenant)}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def tenant_from_token(self, token: str, message_id: str) -> str:
        """The tenant a valid token for this message was issued to."""
        if not _TOKEN_SHAPE.fullmatch(token):
            raise Unauthorized("malformed stream token")
        try:
            padded = token + "=" * (-len(token) % 4)
            raw = base64.urlsafe_b64decode(padded.encode()).decode()
            parts = raw.split(".")
            if len(parts) == 2:
                expires_raw, mac = parts
                tenant = self._opaque_tenant(message_id, expires_raw, mac)
            else:
                expires_raw, tenant = self._legacy_tenant(message_id, raw)
            if not (expires_raw.isascii() and expires_raw.isdigit()):
                raise ValueError(expires_raw)
            expires = int(expires_raw)
        except ValueError:
            raise Unauthorized("malformed stream token") from None
        if tenant is None:
            raise Unauthorized("invalid stream token")
        if expires < time.time():
            raise Unauthorized("stream token expired; fetch the message again for a new one")
        note_tenant(tenant)
        return tenant

    def _opaque_tenant(self, message_id: str, expires: str, mac: str) -> str | None:
        """The configured tenant whose MAC this is; every tenant's MAC is computed."""
        presented = mac.encode()
        found: str | None = None
        for tenant in self._tenants:
            expected = self._opaque_mac(message_id, expires, tenant).encode()
            if hmac.compare_digest(presented, expected):
                found = tenant
        return found

    def _legacy_tenant(self, message_id: str, raw: str) -> tuple[str, str | None]:
        """A token of the first format, `<expiry>.<tenant>.<mac>`, which named its tenant.

        No longer issued, still honoured, so that `stream_url`s handed out before an
        upgrade keep working until they expire (at most CHATRELAY_STREAM_TOKEN_TTL later).
        """
        payload, mac = raw.rsplit(".", 1)
        expires, tenant = payload.split(".", 1)
        expected = self._mac(f"{message_id}.{payload}")
        return expires, tenant if hmac.compare_digest(mac.encode(), expected.encode()) else None

    def _opaque_mac(self, message_id: str, expires: str, tenant: str) -> str:
        return self._mac(f"{_OPAQUE_CONTEXT}.{message_id}.{expires}.{tenant}")

    def _mac(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()[:32]
