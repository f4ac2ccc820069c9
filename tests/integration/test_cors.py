"""CORS: answered for `CHATRELAY_CORS_ORIGINS`, absent when unset (the browser side is in
tests/e2e/test_cross_origin.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import CLIENT_KEYS, Relay
from tests.fakes.service import ServiceProcess
from tests.fakes.upstream import Reply

FRONT = "http://front.example:5173"
BACKENDS = ("sqlite",)  # the HTTP edge only: storage plays no part
RELAY_ENV = {"CHATRELAY_CORS_ORIGINS": f"{FRONT},https://other.example"}
AUTH = {"Authorization": f"Bearer {CLIENT_KEYS['acme']}"}


def _preflight(url: str, origin: str, method: str, headers: str) -> httpx.Response:
    return httpx.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": headers,
        },
    )


@pytest.fixture(scope="module")
def plain(relay: Relay) -> Iterator[ServiceProcess]:
    """The same relay's database and upstream, served without `CHATRELAY_CORS_ORIGINS`."""
    service = relay.second_service()
    service.start()
    try:
        yield service
    finally:
        service.terminate()


def test_preflight_allows_the_api_headers(relay: Relay) -> None:
    response = _preflight(
        relay.url + "/v1/conversations", FRONT, "POST", "authorization, content-type"
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == FRONT
    allowed = response.headers["access-control-allow-headers"].lower()
    assert {"authorization", "content-type", "last-event-id"} <= {
        h.strip() for h in allowed.split(",")
    }
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in response.headers

    events = _preflight(relay.url + "/v1/messages/msg_x/events", FRONT, "GET", "last-event-id")
    assert events.status_code == 200


def test_responses_carry_and_expose_the_headers(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["hi"]))
    with httpx.Client(base_url=relay.url, headers={**AUTH, "Origin": FRONT}) as client:
        created = client.post("/v1/conversations", json={})
        assert created.headers["access-control-allow-origin"] == FRONT
        cid = created.json()["id"]
        posted = client.post(f"/v1/conversations/{cid}/messages", json={"content": "hello"})
        assert posted.status_code == 202
        exposed = {
            h.strip().lower() for h in posted.headers["access-control-expose-headers"].split(",")
        }
        assert {"x-message-id", "x-user-message-id", "x-chatrelay-message-id"} <= exposed
        assert {"x-chatrelay-conversation-id", "location"} <= exposed
        assert "x-request-id" in exposed and posted.headers["x-request-id"]
        missing = client.get("/v1/conversations/conv_00000000000000000000000000")
        assert missing.status_code == 404
        assert missing.headers["access-control-allow-origin"] == FRONT


def test_other_origins_get_no_cors_headers(relay: Relay) -> None:
    response = httpx.get(
        relay.url + "/v1/conversations", headers={**AUTH, "Origin": "http://evil.example"}
    )
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    refused = _preflight(relay.url + "/v1/conversations", "http://evil.example", "POST", "")
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


def test_unset_means_no_cors_at_all(plain: ServiceProcess) -> None:
    response = _preflight(plain.base_url + "/v1/conversations", FRONT, "POST", "authorization")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    got = httpx.get(plain.base_url + "/v1/conversations", headers={**AUTH, "Origin": FRONT})
    assert got.status_code == 200
    assert not any(name.startswith("access-control-") for name in got.headers)
