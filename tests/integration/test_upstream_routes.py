"""Several upstreams behind a routes file (`CHATRELAY_UPSTREAMS=routes.toml`).

A cloud upstream (Bearer key from another variable, `gpt-*` and `o3-mini`) and a local one
(`api-key` auth, its own header, `qwen*` and `llama3.2`), plus a route whose base URL has a
wrong path: each model reaches its own upstream with its own credentials, the model list
merges both (the broken one only logged), an unknown model is a clear 4xx naming what is
known and stores nothing, and a wrong path names the URL and the route to fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

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

CLOUD_KEY = "sk-cloud-7d1f0a9e3b5c42e8a6f1"
LOCAL_KEY = "local-key-c4e2a91b77d3"


@dataclass
class Routed:
    service: ServiceProcess
    cloud: FakeUpstream
    local: FakeUpstream
    routes_file: Path


def routes_toml(cloud: FakeUpstream, local: FakeUpstream) -> str:
    origin = cloud.base_url.removesuffix("/v1")
    return f"""
[[upstream]]
name = "cloud"
base_url = "{cloud.base_url}"
api_key_env = "CLOUD_UPSTREAM_KEY"
prefixes = ["gpt-"]
models = ["o3-mini"]

[[upstream]]
name = "local"
base_url = "{local.base_url}/"
api_key = "{LOCAL_KEY}"
auth = "api-key"
headers = {{ X-Route = "local" }}
prefixes = ["qwen"]
models = ["llama3.2"]
max_retries = 0
first_byte_timeout = 30

[[upstream]]
name = "typo"
base_url = "{origin}/wrong/v1"
models = ["typo-model"]
"""


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routed]:
    workdir = tmp_path_factory.mktemp("routes")
    with FakeUpstream() as cloud, FakeUpstream() as local:
        cloud.models = ["gpt-4o", "gpt-4o-mini", "o3-mini"]
        local.models = ["llama3.2", "qwen2.5:7b"]
        routes_file = workdir / "routes.toml"
        routes_file.write_text(routes_toml(cloud, local))
        env = {
            "CHATRELAY_UPSTREAMS": str(routes_file),
            "CLOUD_UPSTREAM_KEY": CLOUD_KEY,
            "CHATRELAY_DEFAULT_MODEL": "gpt-4o-mini",
            "CHATRELAY_UPSTREAM_CHECK": "true",
        }
        with running(workdir, **env) as service:
            yield Routed(service, cloud, local, routes_file)


@pytest.mark.parametrize(
    ("model", "where"),
    [
        ("gpt-4o", "cloud"),
        ("o3-mini", "cloud"),
        ("llama3.2", "local"),
        ("qwen2.5:7b", "local"),
    ],
)
async def test_each_model_reaches_its_own_upstream(routed: Routed, model: str, where: str) -> None:
    target, other = (
        (routed.cloud, routed.local) if where == "cloud" else (routed.local, routed.cloud)
    )
    target_before, other_before = len(target.requests), len(other.requests)
    async with client_of(routed.service) as client:
        native = await native_chat(client, model=model)
        assert native.status == "completed", native.error
        plain = await openai_chat(client, model=model)
        assert plain.status_code == 200, plain.text
        streamed = await openai_chat(client, model=model, stream=True)
        assert streamed_text(streamed) == "Hello, world!"
    sent = target.requests[target_before:]
    assert len(other.requests) == other_before, f"{model} also went to the other upstream"
    assert [r.body["model"] for r in sent] == [model] * 3
    for request in sent:
        if where == "cloud":
            assert request.headers["authorization"] == f"Bearer {CLOUD_KEY}"
            assert "api-key" not in request.headers
            assert "x-route" not in request.headers
        else:
            assert request.headers["api-key"] == LOCAL_KEY
            assert "authorization" not in request.headers
            assert request.headers["x-route"] == "local"


async def test_the_default_model_follows_the_routes(routed: Routed) -> None:
    before = len(routed.cloud.requests)
    async with client_of(routed.service) as client:
        answer = await native_chat(client)  # no model: CHATRELAY_DEFAULT_MODEL, gpt-4o-mini
    assert answer.status == "completed", answer.error
    assert routed.cloud.requests[before].body["model"] == "gpt-4o-mini"


async def test_model_list_merges_the_upstreams(routed: Routed) -> None:
    async with client_of(routed.service) as client:
        listed = await client.get("/v1/models")
        one = await client.get("/v1/models/qwen2.5:7b")
    assert listed.status_code == 200, listed.text
    ids = [m["id"] for m in listed.json()["data"]]
    assert ids == ["gpt-4o", "gpt-4o-mini", "o3-mini", "llama3.2", "qwen2.5:7b"]
    assert one.status_code == 200, one.text
    log = full_log(routed.service)
    assert "upstream typo did not list its models" in log  # the broken route, logged


KNOWN = "gpt-*, qwen*, llama3.2, o3-mini, typo-model"


async def test_unknown_model_is_refused_naming_what_is_known(routed: Routed) -> None:
    requests_before = len(routed.cloud.requests) + len(routed.local.requests)
    async with client_of(routed.service) as client:
        listed_before = (await client.get("/v1/conversations", params={"limit": 100})).json()
        cid = (await client.post("/v1/conversations", json={})).json()["id"]
        native = await client.post(
            f"/v1/conversations/{cid}/messages", json={"content": "hi", "model": "mistral-large"}
        )
        created = await client.post("/v1/conversations", json={"model": "mistral-large"})
        plain = await openai_chat(client, model="mistral-large")
        streamed = await openai_chat(client, model="mistral-large", stream=True)
        conversation = (await client.get(f"/v1/conversations/{cid}")).json()
        listed_after = (await client.get("/v1/conversations", params={"limit": 100})).json()
    for response in (native, created):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "unknown_model"
        assert "mistral-large" in error["message"] and KNOWN in error["message"]
    for response in (plain, streamed):
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert (error["code"], error["type"]) == ("unknown_model", "invalid_request_error")
        assert "mistral-large" in error["message"] and KNOWN in error["message"]
    assert conversation["messages"] == [], "the refused message was stored"
    before_ids = {c["id"] for c in listed_before["data"]} | {cid}
    assert {c["id"] for c in listed_after["data"]} == before_ids, "a conversation was stored"
    assert len(routed.cloud.requests) + len(routed.local.requests) == requests_before


async def test_wrong_route_path_names_the_url_and_the_route(routed: Routed) -> None:
    async with client_of(routed.service) as client:
        native = await native_chat(client, model="typo-model")
        plain = await openai_chat(client, model="typo-model")
    origin = routed.cloud.base_url.removesuffix("/v1")
    url = f"POST {origin}/wrong/v1/chat/completions"
    setting = f"base_url of upstream 'typo' in {routed.routes_file}"
    assert native.error is not None and native.error["code"] == "upstream_not_found"
    assert url in native.error["message"] and setting in native.error["message"]
    assert plain.status_code == 404, plain.text
    message = plain.json()["error"]["message"]
    assert url in message and setting in message


def test_start_up_names_each_upstream_and_its_key_without_secrets(routed: Routed) -> None:
    log = full_log(routed.service)
    assert f"upstream cloud: {routed.cloud.base_url} (key set, sent as bearer)" in log
    assert (
        f"upstream local: {routed.local.base_url} (key set, sent as api-key, extra headers X-Route)"
        in log
    )
    assert f"upstream typo: {routed.cloud.base_url.removesuffix('/v1')}/wrong/v1 (no key)" in log
    assert "upstream cloud serves: o3-mini, gpt-*" in log
    assert "upstream local serves: llama3.2, qwen*" in log
    assert CLOUD_KEY not in log and LOCAL_KEY not in log


async def test_each_route_keeps_its_own_retry_setting(routed: Routed) -> None:
    """`max_retries = 0` on the local route: a 500 there is final at once; the cloud
    route (the relay-wide 2) retries it."""
    routed.local.enqueue(Reply(status=500))
    routed.cloud.enqueue(Reply(status=500))
    async with client_of(routed.service) as client:
        local = await native_chat(client, model="llama3.2")
        cloud = await native_chat(client, model="gpt-4o")
    assert local.error is not None and local.error["code"] == "upstream_unavailable"
    assert "gave up after" not in local.error["message"]
    assert cloud.status == "completed", cloud.error  # the retry got the default answer


def test_readiness_checks_each_route(routed: Routed) -> None:
    ready = httpx.get(routed.service.base_url + "/readyz", timeout=10)
    checks = ready.json()["checks"]
    assert (checks["upstream:cloud"], checks["upstream:local"]) == ("ok", "ok")
    assert checks["upstream:typo"].startswith("upstream_not_found: "), checks
    assert ready.status_code == 503
    assert httpx.get(routed.service.base_url + "/healthz", timeout=10).status_code == 200
    assert "upstream typo check failed: upstream_not_found" in full_log(routed.service)
