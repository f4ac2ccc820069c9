"""Azure OpenAI's shape: a deployment URL with `api-version` in its query and the key in an
`api-key` header, against a fake that refuses a Bearer token and a request without the query.

Configured as an operator would (`OPENAI_BASE_URL=…/openai/deployments/NAME?api-version=…`,
`CHATRELAY_UPSTREAM_AUTH=api-key`), with fixed extra headers (`CHATRELAY_UPSTREAM_HEADERS`,
as OpenRouter wants `HTTP-Referer` and `X-Title`): both endpoints work, every request
carries the query and the headers, and neither the key nor a header value is ever logged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from chatrelay.config_upstreams import AuthStyle
from chatrelay.errors import UpstreamError
from chatrelay.upstream.client import UpstreamClient, UpstreamConfig
from tests.fakes.service import ServiceProcess
from tests.fakes.upstream import FakeUpstream, Reply
from tests.integration.deployments import (
    client_of,
    full_log,
    native_chat,
    openai_chat,
    running,
    streamed_text,
)

AZURE_KEY = "azkey-3f9a0c7d5e1b4a8f9c2d6e0b7a1f3c5d"
API_VERSION = "api-version=2024-10-21"
DEPLOYMENT = "/openai/deployments/gpt-4o-prod"
HEADERS = {
    "HTTP-Referer": "https://relay.example.test/app-7731",
    "X-Title": "chatrelay-title-5b2e",
    "X-Gateway-Token": "gw-SECRET-token-90ab12cd",
}


@dataclass
class Azure:
    service: ServiceProcess
    upstream: FakeUpstream


@pytest.fixture(scope="module")
def azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azure]:
    with FakeUpstream(
        api_root=DEPLOYMENT, require_query=API_VERSION, require_api_key=AZURE_KEY
    ) as upstream:
        env = {
            "OPENAI_BASE_URL": f"{upstream.base_url}?{API_VERSION}",
            "OPENAI_API_KEY": AZURE_KEY,
            "CHATRELAY_UPSTREAM_AUTH": "api-key",
            "CHATRELAY_UPSTREAM_HEADERS": json.dumps(HEADERS),
        }
        with running(tmp_path_factory.mktemp("azure"), **env) as service:
            yield Azure(service, upstream)


async def test_both_endpoints_work_with_the_api_key_and_the_query(azure: Azure) -> None:
    before = len(azure.upstream.requests)
    async with client_of(azure.service) as client:
        native = await native_chat(client)
        assert (native.status, native.content) == ("completed", "Hello, world!"), native.error
        plain = await openai_chat(client)
        assert plain.status_code == 200, plain.text
        assert plain.json()["choices"][0]["message"]["content"] == "Hello, world!"
        streamed = await openai_chat(client, stream=True)
        assert streamed.status_code == 200, streamed.text
        assert streamed_text(streamed) == "Hello, world!"
        models = await client.get("/v1/models")  # refused by the fake without query and key
        assert models.status_code == 200, models.text
        assert [m["id"] for m in models.json()["data"]] == ["fake-model"]
    sent = azure.upstream.requests[before:]
    assert len(sent) == 3
    for request in sent:
        assert request.path == f"{DEPLOYMENT}/chat/completions"
        assert request.query == API_VERSION
        assert request.headers["api-key"] == AZURE_KEY
        assert "authorization" not in request.headers
        for name, value in HEADERS.items():
            assert request.headers[name.lower()] == value
    for text in (native.raw, plain.text, streamed.text, models.text):
        assert AZURE_KEY not in text
        assert HEADERS["X-Gateway-Token"] not in text


def test_start_up_line_names_the_deployment_not_the_secrets(azure: Azure) -> None:
    log = full_log(azure.service)
    line = next(line for line in log.splitlines() if "upstream default:" in line)
    assert f"{DEPLOYMENT}?{API_VERSION}" in line
    assert "key set, sent as api-key" in line
    assert "extra headers HTTP-Referer, X-Gateway-Token, X-Title" in line
    assert AZURE_KEY not in log
    for value in HEADERS.values():
        assert value not in log, f"a header value was logged: {value}"


async def test_header_values_echoed_by_the_upstream_are_redacted(azure: Azure) -> None:
    token = HEADERS["X-Gateway-Token"]
    body = json.dumps({"error": {"message": f"gateway token {token} may not use this model"}})
    azure.upstream.enqueue(Reply(status=400, body=body.encode()))
    async with client_of(azure.service) as client:
        answer = await native_chat(client)
    assert answer.error is not None and answer.error["code"] == "upstream_bad_request"
    assert "may not use this model" in answer.error["message"]
    assert "[redacted]" in answer.error["message"]
    assert token not in answer.raw
    assert token not in full_log(azure.service)


# -- the fake insists, as Azure does ---------------------------------------------------------


async def test_the_fake_refuses_bearer_and_a_missing_query(azure: Azure) -> None:
    """Without this, the tests above would pass against a fake that accepts anything."""
    with_query = f"{azure.upstream.base_url}?{API_VERSION}"
    bearer = UpstreamClient(UpstreamConfig(base_url=with_query, api_key=AZURE_KEY))
    no_query = UpstreamClient(
        UpstreamConfig(base_url=azure.upstream.base_url, api_key=AZURE_KEY, auth=AuthStyle.API_KEY)
    )
    try:
        with pytest.raises(UpstreamError) as refused:
            await bearer.list_models()
        assert refused.value.code == "upstream_auth_failed"
        assert "Bearer tokens are not accepted" in refused.value.message
        with pytest.raises(UpstreamError) as missing:
            await no_query.list_models()
        assert missing.value.code == "upstream_not_found"
        assert f"GET {azure.upstream.base_url}/models" in missing.value.message
        assert "OPENAI_BASE_URL" in missing.value.message
    finally:
        await bearer.aclose()
        await no_query.aclose()
