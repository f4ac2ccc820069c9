"""Request building, answer parsing, typed errors and the 429/503 retry rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from chatrelay.client import (
    ChatRelayAPIError,
    ConflictError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    UnavailableError,
    ValidationError,
    calls,
)
from chatrelay.client.errors import error_from_response, parse_retry_after
from chatrelay.client.options import ClientOptions


def error_body(code: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": "why"}}).encode()


def test_post_message_sends_only_what_was_given_and_reads_the_pair() -> None:
    call = calls.post_message("conv_1", "Hi", params={"temperature": 0.2})
    assert (call.method, call.path) == ("POST", "/v1/conversations/conv_1/messages")
    assert call.json == {"content": "Hi", "params": {"temperature": 0.2}}
    body = {
        "user_message": {"id": "msg_U"},
        "assistant_message": {"id": "msg_A"},
        "stream_url": "/v1/messages/msg_A/events?token=t",
    }
    posted = call.result(202, {}, json.dumps(body).encode())
    assert posted.message_id == "msg_A"
    assert posted.user_message == {"id": "msg_U"}
    assert posted.stream_url.endswith("token=t")


def test_ids_are_quoted_into_one_path_segment() -> None:
    assert calls.get_message("a/b?c").path == "/v1/messages/a%2Fb%3Fc"


def test_list_conversations_page() -> None:
    call = calls.list_conversations(limit=5)
    assert call.params == {"limit": "5"}
    page = call.result(200, {}, b'{"data": [{"id": "conv_1"}], "next_cursor": null}')
    assert page.data == [{"id": "conv_1"}] and page.next_cursor is None


@pytest.mark.parametrize(
    ("status", "family"),
    [(409, ConflictError), (422, ValidationError), (503, UnavailableError), (500, ServerError)],
)
def test_status_families(status: int, family: type[ChatRelayAPIError]) -> None:
    with pytest.raises(family) as caught:
        calls.cancel("msg_1").result(status, {}, error_body("some_code"))
    assert caught.value.code == "some_code" and caught.value.status == status


def test_a_body_outside_the_contract_still_maps() -> None:
    error = error_from_response(502, {}, b"<html>bad gateway</html>")
    assert isinstance(error, ServerError) and error.code == "http_502"


def test_a_success_that_is_not_json_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        calls.get_message("msg_1").result(200, {}, b"<html>")


def test_retry_after_seconds_and_date() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:05 GMT", now=now) == 5.0


def test_429_is_retried_for_every_call_503_only_for_reads() -> None:
    limited = error_from_response(429, {"retry-after": "3"}, error_body("rate_limited"))
    assert isinstance(limited, RateLimitedError) and limited.retry_after == 3.0
    post = calls.post_message("conv_1", "Hi")
    assert calls.retry_delay(post, limited, 0, max_wait=60) == 3.0
    down = error_from_response(503, {}, error_body("database_unavailable"))
    assert calls.retry_delay(calls.get_message("msg_1"), down, 2, max_wait=60) == 4.0
    with pytest.raises(UnavailableError):
        calls.retry_delay(post, down, 0, max_wait=60)
    with pytest.raises(RateLimitedError):
        calls.retry_delay(post, limited, 0, max_wait=1)  # would wait longer than allowed


def test_options_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATRELAY_URL", "http://relay.test:9000/")
    monkeypatch.setenv("CHATRELAY_API_KEY", "k-1")
    monkeypatch.setenv("CHATRELAY_API_KEYS", "acme:not-this-one")
    options = ClientOptions.resolve(None, None, timeout=5)
    assert options.base_url == "http://relay.test:9000"
    assert options.headers["Authorization"] == "Bearer k-1"
    monkeypatch.delenv("CHATRELAY_URL")
    monkeypatch.delenv("CHATRELAY_API_KEY")
    options = ClientOptions.resolve(None, "")
    assert options.base_url == "http://127.0.0.1:8000"
    assert "Authorization" not in options.headers
    assert options.timeout == 30.0 and options.reconnect.max_reconnects == 10
