"""Ids sort by creation; stream tokens open exactly one message's stream, for a while."""

from __future__ import annotations

import time

import pytest
from starlette.requests import Request

from chatrelay.errors import Unauthorized
from chatrelay.ids import looks_like_id, new_id
from chatrelay.web.auth import DEFAULT_TENANT, Authenticator


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
    auth = Authenticator({}, b"s", 60)
    assert auth.tenant(_request(None)) == DEFAULT_TENANT


def test_keys_map_to_tenants() -> None:
    auth = Authenticator({"k1": "acme"}, b"s", 60)
    assert auth.tenant(_request("Bearer k1")) == "acme"
    for bad in (None, "Bearer", "Bearer k2", "Token k1"):
        with pytest.raises(Unauthorized):
            auth.tenant(_request(bad))


def test_stream_tokens() -> None:
    auth = Authenticator({}, b"secret", 60)
    token = auth.stream_token("acme", "msg_A")
    assert auth.tenant_from_token(token, "msg_A") == "acme"
    with pytest.raises(Unauthorized):
        auth.tenant_from_token(token, "msg_B")  # another message
    with pytest.raises(Unauthorized):
        Authenticator({}, b"other", 60).tenant_from_token(token, "msg_A")  # another secret
    with pytest.raises(Unauthorized):
        auth.tenant_from_token("garbage!", "msg_A")
    expired = Authenticator({}, b"secret", -1).stream_token("acme", "msg_A")
    time.sleep(0.01)
    with pytest.raises(Unauthorized, match="expired"):
        auth.tenant_from_token(expired, "msg_A")
