"""Telling a misconfigured upstream from a broken one, as an operator first sees it.

The start-up line names the upstream (no credentials) and whether a key is set; a wrong
base URL path gives errors naming the URL requested and `OPENAI_BASE_URL`, on both
endpoints and the model list, where an upstream 404 otherwise reads like an unknown model;
`CHATRELAY_UPSTREAM_CHECK=true` lists the models once at start-up and reports what is wrong
in the log and in `/readyz` (which then answers 503), while `/healthz`, liveness, stays 200.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import UPSTREAM_KEY
from tests.fakes.service import ServiceProcess
from tests.fakes.upstream import FakeUpstream
from tests.integration.deployments import client_of, full_log, native_chat, openai_chat, running


@dataclass(frozen=True)
class Case:
    check: str  # what /readyz's upstream check must start with
    says: str  # and contain


CASES = {
    "healthy": Case("ok", "ok"),
    "nothing-listening": Case("upstream_unreachable: ", "could not reach the upstream"),
    "wrong-path": Case("upstream_not_found: ", "check OPENAI_BASE_URL"),
    "wrong-key": Case("upstream_auth_failed: ", "HTTP 401"),
}


@dataclass
class Checked:
    name: str
    case: Case
    service: ServiceProcess
    base_url: str  # as configured


@pytest.fixture(scope="module", params=list(CASES), ids=list(CASES))
def checked(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Checked]:
    name: str = request.param
    workdir = tmp_path_factory.mktemp(f"check-{name}")
    env = {"CHATRELAY_UPSTREAM_CHECK": "true", "OPENAI_API_KEY": UPSTREAM_KEY}
    with (
        socket.socket() as closed,
        FakeUpstream(require_api_key="the-right-key" if name == "wrong-key" else None) as fake,
    ):
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        if name == "nothing-listening":
            url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
        elif name == "wrong-path":
            url = fake.base_url.removesuffix("/v1") + "/api"  # forgot the /v1
        else:
            url = fake.base_url
        if name == "wrong-key":
            env["CHATRELAY_UPSTREAM_AUTH"] = "api-key"
        with running(workdir, OPENAI_BASE_URL=url, **env) as service:
            yield Checked(name, CASES[name], service, url)


def test_readiness_reports_the_upstream_check_and_liveness_stays_up(checked: Checked) -> None:
    ready = httpx.get(checked.service.base_url + "/readyz", timeout=10)
    live = httpx.get(checked.service.base_url + "/healthz", timeout=10)
    assert live.status_code == 200
    body = ready.json()
    assert body["checks"]["database"] == "ok"
    result = body["checks"]["upstream"]
    assert result.startswith(checked.case.check), result
    assert checked.case.says in result, result
    assert ready.status_code == (200 if checked.name == "healthy" else 503), body
    assert UPSTREAM_KEY not in ready.text


def test_the_log_says_what_the_check_found(checked: Checked) -> None:
    log = full_log(checked.service)
    if checked.name == "healthy":
        assert "upstream default answered its model list" in log
    else:
        line = next(line for line in log.splitlines() if "upstream default check failed" in line)
        assert checked.case.check.rstrip(": ") in line
    assert f"upstream default: {checked.base_url} (key set, sent as " in log
    assert UPSTREAM_KEY not in log


@pytest.mark.parametrize("checked", ["wrong-path"], indirect=True)
async def test_a_wrong_path_names_the_url_and_the_setting(checked: Checked) -> None:
    async with client_of(checked.service) as client:
        native = await native_chat(client)
        plain = await openai_chat(client)
        models = await client.get("/v1/models")
    assert native.error is not None and native.error["code"] == "upstream_not_found"
    chat_url = f"POST {checked.base_url}/chat/completions"
    for message in (native.error["message"], plain.json()["error"]["message"]):
        assert chat_url in message and "OPENAI_BASE_URL" in message, message
    assert plain.status_code == 404
    assert models.status_code == 404, models.text
    message = models.json()["error"]["message"]
    assert f"GET {checked.base_url}/models" in message and "OPENAI_BASE_URL" in message


async def test_start_up_line_for_a_keyless_local_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A local server (vLLM, Ollama) through a routes file without a key: "no key", no
    `Authorization` header, and no built-in mock although `OPENAI_API_KEY` is unset."""
    workdir = tmp_path_factory.mktemp("keyless")
    with FakeUpstream() as fake:
        routes = workdir / "routes.toml"
        routes.write_text(
            f'[[upstream]]\nname = "ollama"\nbase_url = "{fake.base_url}"\ndefault = true\n'
        )
        with running(workdir, CHATRELAY_UPSTREAMS=str(routes)) as service:
            async with client_of(service) as client:
                answer = await native_chat(client, model="llama3.2")
            log = full_log(service)
        assert "authorization" not in fake.requests[0].headers
    assert answer.status == "completed", answer.error
    assert f"upstream ollama: {fake.base_url} (no key)" in log
    assert "upstream ollama serves: (default)" in log
    assert "MOCK" not in log
