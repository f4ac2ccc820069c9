"""The upstream through a forwarding HTTP proxy on loopback, as behind a company proxy.

`HTTP_PROXY` carries a plain-HTTP upstream's requests in absolute form; `HTTPS_PROXY` (here
spelled in lower case, as it often is) tunnels an HTTPS upstream with `CONNECT`; `NO_PROXY`
naming the upstream's host keeps the proxy out. The proxy's credentials, given in its URL,
must work and must never reach the log or a client.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import UPSTREAM_KEY
from tests.fakes.http_proxy import HttpProxy
from tests.fakes.service import ServiceProcess
from tests.fakes.upstream import FakeUpstream
from tests.integration.deployments import (
    Pki,
    client_of,
    full_log,
    native_chat,
    openai_chat,
    running,
    streamed_text,
)

PROXY_USER, PROXY_PASSWORD = "relay-user", "proxy-Pa55word-7f3a9c"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Proxied:
    service: ServiceProcess
    upstream: FakeUpstream
    proxy: HttpProxy


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


def host_port(upstream: FakeUpstream) -> str:
    return upstream.base_url.split("://", 1)[1].split("/", 1)[0]


async def chat_on_both_endpoints(service: ServiceProcess) -> str:
    """Native, OpenAI plain and streamed, and the model list; everything a client saw."""
    seen = []
    async with client_of(service) as client:
        native = await native_chat(client)
        assert (native.status, native.content) == ("completed", "Hello, world!"), native.error
        plain = await openai_chat(client)
        assert plain.status_code == 200, plain.text
        assert plain.json()["choices"][0]["message"]["content"] == "Hello, world!"
        streamed = await openai_chat(client, stream=True)
        assert streamed_text(streamed) == "Hello, world!"
        models = await client.get("/v1/models")
        assert models.status_code == 200, models.text
        seen = [native.raw, plain.text, streamed.text, models.text]
    return "\n".join(seen)


# -- plain HTTP upstream: absolute-form requests ------------------------------------------------


@pytest.fixture(scope="module")
def plain_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    proxy = HttpProxy(credentials=(PROXY_USER, PROXY_PASSWORD))
    proxy.start()
    try:
        with FakeUpstream() as upstream:
            env = {
                "OPENAI_BASE_URL": upstream.base_url,
                "OPENAI_API_KEY": UPSTREAM_KEY,
                "HTTP_PROXY": f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}",
            }
            with running(tmp_path_factory.mktemp("proxy-http"), **env) as service:
                yield Proxied(service, upstream, proxy)
    finally:
        proxy.stop()


async def test_http_proxy_forwards_absolute_form_requests(plain_http: Proxied) -> None:
    before = len(plain_http.proxy.requests)
    seen = await chat_on_both_endpoints(plain_http.service)
    through = plain_http.proxy.requests[before:]
    origin = f"http://{host_port(plain_http.upstream)}/v1"
    assert [(r.method, r.target) for r in through] == [
        ("POST", f"{origin}/chat/completions"),
        ("POST", f"{origin}/chat/completions"),
        ("POST", f"{origin}/chat/completions"),
        ("GET", f"{origin}/models"),
    ]
    assert all(r.proxy_authorization == basic(PROXY_USER, PROXY_PASSWORD) for r in through)
    assert len(plain_http.upstream.requests) == 3
    assert PROXY_PASSWORD not in seen


def test_http_proxy_is_named_without_its_credentials(plain_http: Proxied) -> None:
    log = full_log(plain_http.service)
    assert f"through proxy http://127.0.0.1:{plain_http.proxy.port}" in log
    assert PROXY_PASSWORD not in log
    assert f"{PROXY_USER}:" not in log
    assert UPSTREAM_KEY not in log


# -- HTTPS upstream: CONNECT tunnels ----------------------------------------------------------


@pytest.fixture(scope="module")
def tunnelled(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    proxy = HttpProxy(credentials=(PROXY_USER, PROXY_PASSWORD))
    proxy.start()
    cert, key = pki.leaf("upstream", "127.0.0.1")
    try:
        with FakeUpstream(certfile=cert, keyfile=key) as upstream:
            env = {
                "OPENAI_BASE_URL": upstream.base_url,
                "OPENAI_API_KEY": UPSTREAM_KEY,
                "SSL_CERT_FILE": str(pki.ca_file),
                "https_proxy": f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{proxy.port}",
            }
            with running(tmp_path_factory.mktemp("proxy-https"), **env) as service:
                yield Proxied(service, upstream, proxy)
    finally:
        proxy.stop()


async def test_https_proxy_tunnels_with_connect(tunnelled: Proxied) -> None:
    seen = await chat_on_both_endpoints(tunnelled.service)
    through = tunnelled.proxy.requests
    assert through, "the proxy saw nothing"
    assert {(r.method, r.target) for r in through} == {("CONNECT", host_port(tunnelled.upstream))}
    assert all(r.proxy_authorization == basic(PROXY_USER, PROXY_PASSWORD) for r in through)
    assert len(tunnelled.upstream.requests) >= 3
    assert PROXY_PASSWORD not in seen
    log = full_log(tunnelled.service)
    assert f"through proxy http://127.0.0.1:{tunnelled.proxy.port}" in log
    assert PROXY_PASSWORD not in log


# -- NO_PROXY ---------------------------------------------------------------------------------


async def test_no_proxy_matching_the_upstream_bypasses_the_proxy(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    proxy = HttpProxy()
    proxy.start()
    try:
        with FakeUpstream() as upstream:
            env = {
                "OPENAI_BASE_URL": upstream.base_url,
                "OPENAI_API_KEY": UPSTREAM_KEY,
                "HTTP_PROXY": proxy.url,
                "HTTPS_PROXY": proxy.url,
                "NO_PROXY": "internal.example, 127.0.0.1",
            }
            with running(tmp_path_factory.mktemp("no-proxy"), **env) as service:
                await chat_on_both_endpoints(service)
                log = full_log(service)
            assert len(upstream.requests) == 3
    finally:
        proxy.stop()
    assert proxy.requests == []
    assert "through proxy" not in log


# -- refused credentials ----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_wrong_proxy_password_fails_clearly_without_leaking_it(
    scheme: str, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> None:
    wrong = "wrong-Pa55word-e81d02"
    proxy = HttpProxy(credentials=(PROXY_USER, PROXY_PASSWORD))
    proxy.start()
    cert, key = pki.leaf("refused", "127.0.0.1") if scheme == "https" else (None, None)
    try:
        with FakeUpstream(certfile=cert, keyfile=key) as upstream:
            env = {
                "OPENAI_BASE_URL": upstream.base_url,
                "OPENAI_API_KEY": UPSTREAM_KEY,
                "SSL_CERT_FILE": str(pki.ca_file),
                f"{scheme.upper()}_PROXY": f"http://{PROXY_USER}:{wrong}@127.0.0.1:{proxy.port}",
            }
            with running(tmp_path_factory.mktemp(f"proxy-407-{scheme}"), **env) as service:
                async with client_of(service) as client:
                    answer = await native_chat(client)
                    response = await openai_chat(client)
                    models = await client.get("/v1/models")
                log = full_log(service)
            assert upstream.requests == []
    finally:
        proxy.stop()
    assert answer.status == "failed"
    assert answer.error is not None
    assert answer.error["code"] == "upstream_proxy_error", answer.error
    assert "407" in answer.error["message"]
    assert f"{scheme.upper()}_PROXY" in answer.error["message"]
    assert "gave up after" not in answer.error["message"], "a refused login was retried"
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_proxy_error"
    assert models.status_code == 502, models.text
    assert models.json()["error"]["code"] == "upstream_proxy_error"
    for text in (answer.raw, response.text, models.text, log):
        assert wrong not in text
        assert PROXY_PASSWORD not in text


async def test_proxy_not_listening_is_unreachable_and_named(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = closed.getsockname()[1]
        with FakeUpstream() as upstream:
            env = {
                "OPENAI_BASE_URL": upstream.base_url,
                "OPENAI_API_KEY": UPSTREAM_KEY,
                "ALL_PROXY": f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}",
                "CHATRELAY_UPSTREAM_MAX_RETRIES": "0",
            }
            with running(tmp_path_factory.mktemp("proxy-down"), **env) as service:
                async with client_of(service) as client:
                    answer = await native_chat(client)
                    models = await client.get("/v1/models")
                log = full_log(service)
            assert upstream.requests == []
    assert answer.error is not None
    assert answer.error["code"] == "upstream_unreachable", answer.error
    assert "could not connect to the proxy" in answer.error["message"]
    assert "ALL_PROXY" in answer.error["message"]
    assert models.status_code == 502, models.text
    assert "could not connect to the proxy" in models.json()["error"]["message"]
    for text in (answer.raw, models.text, log):
        assert PROXY_PASSWORD not in text
