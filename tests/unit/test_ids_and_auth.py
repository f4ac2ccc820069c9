"""Ids sort by creation; stream tokens open exactly one message's stream, for a while."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import time

import pytest
from starlette.requests import Request

from chatrelay.errors import Unauthorized
from chatrelay.ids import _encode, looks_like_id, new_id
from chatrelay.keys import parse_api_keys
from chatrelay.web.auth import DEFAULT_TENANT, Authenticator


def _crockford(value: int) -> str:
    """Crockford base32 of a 128-bit value, one character at a time (the reference)."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "".join(alphabet[(value >> (5 * i)) & 31] for i in reversed(range(26)))


@pytest.mark.parametrize(
    "value", [0, 1, 31, 32, 1023, 1024, (1 << 128) - 1, 1 << 127, 0x0123456789ABCDEF << 60]
)
def test_id_encoding_is_crockford_base32(value: int) -> None:
    assert _encode(value) == _crockford(value)


def test_id_encoding_matches_the_reference_on_random_values() -> None:
    for _ in range(2000):
        value = random.getrandbits(128)
        assert _encode(value) == _crockford(value)


def test_ids_are_unique_and_increasing() -> None:
    ids = [new_id("msg") for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(looks_like_id(i, "msg") for i in ids)
    assert not looks_like_id(ids[0], "conv")
    assert not looks_like_id("msg_short", "msg")


def _request(authorization: str | None) -> Request:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    return Request({"type": "http", "headers": headers, "method": "GET", "path": "/"})


def test_open_mode_is_single_tenant() -> None:
    auth = Authenticator((), b"s", 60)
    assert auth.tenant(_request(None)) == DEFAULT_TENANT


def test_keys_map_to_tenants() -> None:
    auth = Authenticator(parse_api_keys("acme:k1"), b"s", 60)
    assert auth.tenant(_request("Bearer k1")) == "acme"
    for bad in (None, "Bearer", "Bearer k2", "Token k1"):
        with pytest.raises(Unauthorized):
            auth.tenant(_request(bad))


KEYS = parse_api_keys("acme:k1,globex:k2")


def test_stream_tokens() -> None:
    auth = Authenticator(KEYS, b"secret", 60)
    token = auth.stream_token("acme", "msg_A")
    assert auth.tenant_from_token(token, "msg_A") == "acme"
    assert auth.tenant_from_token(auth.stream_token("globex", "msg_A"), "msg_A") == "globex"
    with pytest.raises(Unauthorized):
        auth.tenant_from_token(token, "msg_B")  # another message
    with pytest.raises(Unauthorized):
        Authenticator(KEYS, b"other", 60).tenant_from_token(token, "msg_A")  # another secret
    with pytest.raises(Unauthorized):
        auth.tenant_from_token("garbage!", "msg_A")
    expired = Authenticator(KEYS, b"secret", -1).stream_token("acme", "msg_A")
    time.sleep(0.01)
    with pytest.raises(Unauthorized, match="expired"):
        auth.tenant_from_token(expired, "msg_A")


def test_open_mode_tokens_name_the_default_tenant() -> None:
    auth = Authenticator((), b"secret", 60)
    token = auth.stream_token(DEFAULT_TENANT, "msg_A")
    assert auth.tenant_from_token(token, "msg_A") == DEFAULT_TENANT


def _decoded(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def test_a_stream_token_is_opaque() -> None:
    auth = Authenticator(parse_api_keys("tenant-with-a-long-name:k1"), b"secret", 60)
    token = auth.stream_token("tenant-with-a-long-name", "msg_A")
    raw = _decoded(token)
    assert b"tenant" not in raw and b"msg_A" not in raw
    expires, mac = raw.split(b".")
    assert expires.isdigit() and len(mac) == 32


def test_a_tenant_removed_from_the_keys_loses_its_tokens() -> None:
    token = Authenticator(KEYS, b"secret", 60).stream_token("globex", "msg_A")
    after = Authenticator(parse_api_keys("acme:k1"), b"secret", 60)
    with pytest.raises(Unauthorized, match="invalid stream token"):
        after.tenant_from_token(token, "msg_A")


def _legacy_token(secret: bytes, tenant: str, message_id: str, expires: int) -> str:
    """A token as the first format made it: `<expiry>.<tenant>.<mac>`, base64url."""
    payload = f"{expires}.{tenant}"
    mac = hmac.new(secret, f"{message_id}.{payload}".encode(), hashlib.sha256).hexdigest()[:32]
    return base64.urlsafe_b64encode(f"{payload}.{mac}".encode()).decode().rstrip("=")


def test_tokens_of_the_first_format_still_verify_as_before() -> None:
    auth = Authenticator(KEYS, b"secret", 60)
    future = int(time.time()) + 60
    assert auth.tenant_from_token(_legacy_token(b"secret", "acme", "msg_A", future), "msg_A") == (
        "acme"
    )
    # A dotted tenant was allowed then, and still is.
    dotted = _legacy_token(b"secret", "a.b", "msg_A", future)
    assert auth.tenant_from_token(dotted, "msg_A") == "a.b"
    with pytest.raises(Unauthorized, match="invalid"):
        auth.tenant_from_token(_legacy_token(b"other", "acme", "msg_A", future), "msg_A")
    with pytest.raises(Unauthorized, match="invalid"):
        auth.tenant_from_token(_legacy_token(b"secret", "acme", "msg_B", future), "msg_A")
    with pytest.raises(Unauthorized, match="expired"):
        past = int(time.time()) - 1
        auth.tenant_from_token(_legacy_token(b"secret", "acme", "msg_A", past), "msg_A")
    # Its tenant cannot be swapped: the MAC covers it.
    raw = _decoded(_legacy_token(b"secret", "acme", "msg_A", future)).replace(b"acme", b"evil")
    forged = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    with pytest.raises(Unauthorized, match="invalid"):
        auth.tenant_from_token(forged, "msg_A")


def test_an_opaque_token_cannot_be_moved_to_the_first_format() -> None:
    """The two MACs are over different inputs, so one format's MAC is no use in the other."""
    auth = Authenticator(KEYS, b"secret", 60)
    expires, mac = _decoded(auth.stream_token("acme", "msg_A")).split(b".")
    moved = base64.urlsafe_b64encode(expires + b".acme." + mac).decode().rstrip("=")
    with pytest.raises(Unauthorized, match="invalid"):
        auth.tenant_from_token(moved, "msg_A")
