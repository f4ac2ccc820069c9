"""Client keys: plain and hashed entries, several per tenant, refused when malformed."""

from __future__ import annotations

import hashlib

import pytest
from starlette.requests import Request

from chatrelay.errors import ConfigError, Unauthorized
from chatrelay.keys import ClientKey, hashed_entry, key_digest, parse_api_keys
from chatrelay.web.auth import Authenticator


def _request(key: str) -> Request:
    headers = [(b"authorization", f"Bearer {key}".encode())]
    return Request({"type": "http", "headers": headers, "method": "GET", "path": "/"})


def test_a_hashed_entry_is_the_sha256_of_the_key() -> None:
    hex_digest = hashlib.sha256(b"key-acme-new").hexdigest()
    assert hashed_entry("acme", "key-acme-new") == f"acme:sha256:{hex_digest}"
    assert parse_api_keys(f"acme:sha256:{hex_digest.upper()}") == (
        ClientKey("acme", bytes.fromhex(hex_digest)),
    )


def test_plain_and_hashed_keys_of_one_tenant_both_work() -> None:
    keys = parse_api_keys(f"acme:old-key, {hashed_entry('acme', 'new-key')}, globex:g-key")
    auth = Authenticator(keys, b"s", 60)
    assert auth.tenant(_request("old-key")) == "acme"
    assert auth.tenant(_request("new-key")) == "acme"
    assert auth.tenant(_request("g-key")) == "globex"
    for wrong in ("new-key2", "old-ke", hashed_entry("acme", "new-key").split(":", 1)[1]):
        with pytest.raises(Unauthorized):
            auth.tenant(_request(wrong))  # not even the configured digest itself


def test_the_config_holds_only_digests() -> None:
    keys = parse_api_keys("acme:the-plain-secret")
    assert keys[0].digest == key_digest("the-plain-secret")
    assert "the-plain-secret" not in repr(keys)
    assert key_digest("the-plain-secret").hex() not in repr(keys)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("acme:sha256:abc", "entry 1 starts a hashed key"),
        ("acme:k, acme:sha256:" + "g" * 64, "entry 2 starts a hashed key"),
        ("acme:sha256:" + "a" * 63, "64 hex digits"),
        ("acme:sha256:" + "a" * 65, "64 hex digits"),
        ("acme:SHA256:", "entry 1 starts a hashed key"),
        (":key", "entry 1 must look like tenant:key"),
        ("acme:", "entry 1 must look like tenant:key"),
        ("acme", "entry 1 must look like tenant:key"),
        ("a:k1, b:k1", "entry 2 repeats a key"),
        (f"a:k1, {hashed_entry('b', 'k1')}", "entry 2 repeats a key"),
        (" , ", "names no tenant:key"),
    ],
)
def test_malformed_entries_are_refused_with_one_line_that_quotes_no_key(
    raw: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_api_keys(raw)
    message = caught.value.message
    assert fragment in message
    assert "\n" not in message
    assert message.startswith("CHATRELAY_API_KEYS")
    for secret in ("k1", "abc", "a" * 63, "g" * 64):
        assert secret not in message.replace("CHATRELAY_API_KEYS", "")
