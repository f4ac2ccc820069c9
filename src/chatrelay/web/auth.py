"""Who is calling: client keys to tenants, and signed `stream_url` tokens for browsers.

A browser's `EventSource` cannot set headers, so `stream_url` carries a short-lived HMAC
token naming the message and tenant; it opens that one stream and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Mapping

from starlette.requests import Request

from chatrelay.errors import Unauthorized
from chatrelay.request_context import note_tenant

DEFAULT_TENANT = "default"
# What `stream_token` produces: unpadded URL-safe base64. Anything else is refused before
# decoding, so odd bytes in a token are a 401, never a failure deeper in.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,1024}")


class Authenticator:
    def __init__(self, api_keys: Mapping[str, str], secret: bytes, token_ttl: float) -> None:
        self._keys = dict(api_keys)
        self._secret = secret
        self._token_ttl = token_ttl

    @property
    def open(self) -> bool:
        return not self._keys

    def tenant(self, request: Request) -> str:
        """The caller's tenant, from `Authorization: Bearer <key>` (any caller when open)."""
        if self.open:
            note_tenant(DEFAULT_TENANT)  # for the request's log line
            return DEFAULT_TENANT
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("missing client key: send Authorization: Bearer <key>")
        for known, tenant in self._keys.items():
            if hmac.compare_digest(known.encode(), key.strip().encode()):
                note_tenant(tenant)
                return tenant
        raise Unauthorized("unknown client key")

    def stream_token(self, tenant: str, message_id: str) -> str:
        expires = int(time.time() + self._token_ttl)
        payload = f"{expires}.{tenant}"
        mac = self._mac(message_id, payload)
        raw = f"{payload}.{mac}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def tenant_from_token(self, token: str, message_id: str) -> str:
        """The tenant a valid token for this message was issued to."""
        if not _TOKEN_SHAPE.fullmatch(token):
            raise Unauthorized("malformed stream token")
        try:
            padded = token + "=" * (-len(token) % 4)
            raw = base64.urlsafe_b64decode(padded.encode()).decode()
            payload, mac = raw.rsplit(".", 1)
            expires_raw, tenant = payload.split(".", 1)
            if not (expires_raw.isascii() and expires_raw.isdigit()):
                raise ValueError(expires_raw)
            expires = int(expires_raw)
        except ValueError:
            raise Unauthorized("malformed stream token") from None
        if not hmac.compare_digest(mac.encode(), self._mac(message_id, payload).encode()):
            raise Unauthorized("invalid stream token")
        if expires < time.time():
            raise Unauthorized("stream token expired; fetch the message again for a new one")
        note_tenant(tenant)
        return tenant

    def _mac(self, message_id: str, payload: str) -> str:
        digest = hmac.new(self._secret, f"{message_id}.{payload}".encode(), hashlib.sha256)
        return digest.hexdigest()[:32]
