"""An HTTPS upstream signed by a private CA made here (`trustme`), as a corporate gateway is.

Trusted through `SSL_CERT_FILE` (which replaces the public bundle) and, separately, through
`CHATRELAY_UPSTREAM_CA_FILE` (which adds to it), a chat completes on the native API and on
`/v1/chat/completions`. A certificate from a CA nobody trusts, an expired one and one for
another host each fail with `upstream_tls_error` and a message saying which, on both
endpoints and on `GET /v1/models`, after exactly one connection: a certificate that was
refused once is refused every time, so a retry would only delay the answer.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import trustme

from tests.conftest import UPSTREAM_KEY
from tests.fakes.service import ServiceProcess
from tests.fakes.upstream import FakeUpstream
from tests.integration.deployments import (
    Pki,
    TcpCounter,
    client_of,
    full_log,
    native_chat,
    openai_chat,
    running,
    streamed_text,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def https_upstream(pki: Pki) -> Iterator[FakeUpstream]:
    cert, key = pki.leaf("good", "127.0.0.1", "localhost")
    with FakeUpstream(certfile=cert, keyfile=key) as upstream:
        yield upstream


# -- trusted --------------------------------------------------------------------------------

TRUST_WAYS = {
    "SSL_CERT_FILE": "SSL_CERT_FILE",
    "CHATRELAY_UPSTREAM_CA_FILE": "CHATRELAY_UPSTREAM_CA_FILE",
}


@pytest.fixture(scope="module", params=list(TRUST_WAYS), ids=list(TRUST_WAYS))
def trusting(
    request: pytest.FixtureRequest,
    pki: Pki,
    https_upstream: FakeUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    setting: str = request.param
    workdir = tmp_path_factory.mktemp(f"trust-{setting.lower()}")
    env = {
        "OPENAI_BASE_URL": https_upstream.base_url,
        "OPENAI_API_KEY": UPSTREAM_KEY,
        setting: str(pki.ca_file),
    }
    with running(workdir, **env) as service:
        yield service


async def test_trusted_private_ca_serves_both_endpoints(
    trusting: ServiceProcess, https_upstream: FakeUpstream
) -> None:
    before = len(https_upstream.requests)
    async with client_of(trusting) as client:
        native = await native_chat(client)
        assert (native.status, native.content) == ("completed", "Hello, world!"), native.error
        plain = await openai_chat(client)
        assert plain.status_code == 200, plain.text
        assert plain.json()["choices"][0]["message"]["content"] == "Hello, world!"
        streamed = await openai_chat(client, stream=True)
        assert streamed.status_code == 200, streamed.text
        assert streamed_text(streamed) == "Hello, world!"
        models = await client.get("/v1/models")
        assert models.status_code == 200, models.text
        assert [m["id"] for m in models.json()["data"]] == ["fake-model"]
    sent = https_upstream.requests[before:]
    assert len(sent) == 3
    assert all(r.headers["authorization"] == f"Bearer {UPSTREAM_KEY}" for r in sent)


def test_start_up_line_says_https_and_private_ca(trusting: ServiceProcess) -> None:
    log = full_log(trusting)
    assert "upstream default: https://127.0.0.1:" in log
    assert "key set, sent as bearer" in log
    if "CHATRELAY_UPSTREAM_CA_FILE" in trusting.env:
        assert "private CA" in log
    assert UPSTREAM_KEY not in log


# -- refused certificates -------------------------------------------------------------------


@dataclass(frozen=True)
class BadCert:
    says: str  # what the message must name
    host: str  # the host name the relay connects to


BAD_CERTS = {
    "unknown-issuer": BadCert("unknown issuer", "127.0.0.1"),
    "expired": BadCert("expired", "127.0.0.1"),
    "wrong-host-name": BadCert("wrong host", "localhost"),
    "wrong-ip-address": BadCert("wrong host", "127.0.0.1"),
}


@dataclass
class Refusing:
    service: ServiceProcess
    upstream: FakeUpstream
    counter: TcpCounter
    case: BadCert


def bad_leaf(pki: Pki, name: str) -> tuple[str, str]:
    if name == "unknown-issuer":
        return pki.leaf(name, "127.0.0.1", "localhost", ca=trustme.CA())
    if name == "expired":
        now = datetime.datetime.now(datetime.UTC)
        return pki.leaf(
            name,
            "127.0.0.1",
            "localhost",
            not_before=now - datetime.timedelta(days=30),
            not_after=now - datetime.timedelta(days=1),
        )
    if name == "wrong-host-name":
        return pki.leaf(name, "upstream.example")
    return pki.leaf(name, "127.0.0.2", "upstream.example")  # wrong-ip-address


@pytest.fixture(scope="module", params=list(BAD_CERTS), ids=list(BAD_CERTS))
def refusing(
    request: pytest.FixtureRequest, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Refusing]:
    name: str = request.param
    case = BAD_CERTS[name]
    cert, key = bad_leaf(pki, name)
    with FakeUpstream(certfile=cert, keyfile=key) as upstream:
        port = int(upstream.base_url.rsplit(":", 1)[1].split("/")[0])
        counter = TcpCounter(port)
        env = {
            "OPENAI_BASE_URL": f"https://{case.host}:{counter.port}/v1",
            "OPENAI_API_KEY": UPSTREAM_KEY,
            "CHATRELAY_UPSTREAM_CA_FILE": str(pki.ca_file),  # our CA is trusted
        }
        try:
            with running(tmp_path_factory.mktemp(f"refuse-{name}"), **env) as service:
                yield Refusing(service, upstream, counter, case)
        finally:
            counter.close()


def assert_tls_message(message: str, case: BadCert) -> None:
    assert message.startswith("TLS verification of the upstream failed: "), message
    assert case.says in message, message
    assert "gave up after" not in message, f"a TLS failure was retried: {message}"


async def test_refused_certificate_on_the_native_api(refusing: Refusing) -> None:
    before = refusing.counter.connections
    async with client_of(refusing.service) as client:
        answer = await native_chat(client)
    assert answer.status == "failed"
    assert answer.error is not None and answer.error["code"] == "upstream_tls_error"
    assert answer.event_error == answer.error
    assert_tls_message(answer.error["message"], refusing.case)
    assert refusing.counter.connections - before == 1, "one connection: no retry"
    assert refusing.upstream.requests == []


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_refused_certificate_on_chat_completions(refusing: Refusing, stream: bool) -> None:
    before = refusing.counter.connections
    async with client_of(refusing.service) as client:
        response = await openai_chat(client, stream=stream)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "upstream_tls_error"
    assert error["type"] == "server_error"
    assert_tls_message(error["message"], refusing.case)
    assert refusing.counter.connections - before == 1, "one connection: no retry"


async def test_refused_certificate_on_the_model_list(refusing: Refusing) -> None:
    before = refusing.counter.connections
    async with client_of(refusing.service) as client:
        response = await client.get("/v1/models")
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "upstream_tls_error"
    assert_tls_message(error["message"], refusing.case)
    assert refusing.counter.connections - before == 1


async def test_refusals_are_logged_without_retries_or_the_key(refusing: Refusing) -> None:
    async with client_of(refusing.service) as client:
        await native_chat(client)
    log = full_log(refusing.service)
    assert "upstream_tls_error" in log
    assert "retrying" not in log
    assert UPSTREAM_KEY not in log
