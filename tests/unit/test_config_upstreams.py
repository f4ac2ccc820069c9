"""The upstreams as configured: proxy choice by the usual variables, routes files, and the
routes example in docs/upstream.md, which must load and route as the text says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trustme

from chatrelay.config_upstreams import (
    AuthStyle,
    UpstreamSettings,
    UpstreamTimeouts,
    load_upstreams,
)
from chatrelay.errors import ConfigError, UnknownModel
from chatrelay.upstream.client import UpstreamClient, UpstreamConfig
from chatrelay.upstream.router import UpstreamRouter

DOC = Path(__file__).resolve().parents[2] / "docs" / "upstream.md"
PROXY = "http://u:p@proxy.corp.example:3128"


def load(env: dict[str, str], base_url: str = "https://api.openai.com/v1") -> UpstreamSettings:
    return load_upstreams(
        env, base_url_value=base_url, api_key="sk-x", timeouts=UpstreamTimeouts(), max_retries=2
    )


# -- proxies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "env", "proxy", "setting"),
    [
        ("https://api.openai.com/v1", {"HTTPS_PROXY": PROXY}, PROXY, "HTTPS_PROXY"),
        ("https://api.openai.com/v1", {"https_proxy": PROXY}, PROXY, "HTTPS_PROXY"),
        ("https://api.openai.com/v1", {"HTTP_PROXY": PROXY}, None, None),
        ("http://10.0.0.5:8000/v1", {"HTTP_PROXY": PROXY}, PROXY, "HTTP_PROXY"),
        ("http://10.0.0.5:8000/v1", {"ALL_PROXY": PROXY}, PROXY, "ALL_PROXY"),
        (
            "https://api.openai.com/v1",
            {"ALL_PROXY": "http://all:3128", "HTTPS_PROXY": PROXY},
            PROXY,
            "HTTPS_PROXY",
        ),
        ("https://api.openai.com/v1", {"HTTPS_PROXY": "proxy:3128"}, "http://proxy:3128", None),
        ("https://api.openai.com/v1", {"HTTPS_PROXY": PROXY, "NO_PROXY": "*"}, None, None),
        (
            "https://api.openai.com/v1",
            {"HTTPS_PROXY": PROXY, "NO_PROXY": "openai.com"},
            None,
            None,
        ),
        (
            "https://api.openai.com/v1",
            {"HTTPS_PROXY": PROXY, "NO_PROXY": ".openai.com"},
            None,
            None,
        ),
        (
            "https://api.openai.com/v1",
            {"HTTPS_PROXY": PROXY, "NO_PROXY": "i.openai.com"},  # not a domain suffix
            PROXY,
            "HTTPS_PROXY",
        ),
        (
            "http://10.0.0.5:8000/v1",
            {"HTTP_PROXY": PROXY, "no_proxy": "localhost, 10.0.0.5:8000"},
            None,
            None,
        ),
        (
            "http://10.0.0.5:8000/v1",
            {"HTTP_PROXY": PROXY, "NO_PROXY": "10.0.0.5:9000"},  # another port
            PROXY,
            "HTTP_PROXY",
        ),
    ],
)
def test_the_proxy_follows_the_usual_variables(
    url: str, env: dict[str, str], proxy: str | None, setting: str | None
) -> None:
    route = load(env, url).routes[0]
    assert route.proxy == proxy
    if setting is not None:
        assert route.proxy_setting == setting


@pytest.mark.parametrize("proxy", ["https://proxy:3128", "socks5://proxy:1080"])
def test_a_proxy_the_client_cannot_use_stops_start_up(proxy: str) -> None:
    with pytest.raises(ConfigError, match="must be an http:// proxy"):
        load({"HTTPS_PROXY": proxy})


def test_proxy_credentials_stay_out_of_repr() -> None:
    route = load({"HTTPS_PROXY": PROXY}).routes[0]
    assert "u:p@" not in repr(route)


# -- single-upstream settings -----------------------------------------------------------------


def test_auth_headers_and_query_of_the_single_upstream() -> None:
    route = load(
        {
            "CHATRELAY_UPSTREAM_AUTH": "api-key",
            "CHATRELAY_UPSTREAM_HEADERS": '{"X-Title": "app"}',
        },
        "https://r.openai.azure.com/openai/deployments/d/?api-version=2024-10-21",
    ).routes[0]
    assert route.auth is AuthStyle.API_KEY
    assert dict(route.headers) == {"X-Title": "app"}
    assert (
        route.base_url == "https://r.openai.azure.com/openai/deployments/d?api-version=2024-10-21"
    )
    config = UpstreamConfig.for_route(route)
    assert config.endpoint("models") == (
        "https://r.openai.azure.com/openai/deployments/d/models?api-version=2024-10-21"
    )


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"CHATRELAY_UPSTREAM_AUTH": "basic"}, "must be 'bearer' or 'api-key'"),
        ({"CHATRELAY_UPSTREAM_HEADERS": "X-Title: app"}, "must be a JSON object"),
        ({"CHATRELAY_UPSTREAM_HEADERS": '{"Authorization": "x"}'}, "set by chatrelay itself"),
        ({"CHATRELAY_UPSTREAM_HEADERS": '{"X-A": "a\\nb"}'}, "one-line string"),
        ({"CHATRELAY_UPSTREAM_CA_FILE": "/nonexistent.pem"}, "names no readable file"),
        ({"CHATRELAY_UPSTREAM_CHECK": "maybe"}, "must be true or false"),
        ({"CHATRELAY_UPSTREAMS": "/nonexistent.toml"}, "cannot read"),
    ],
)
def test_bad_settings_stop_start_up(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load(env)


# -- routes files -----------------------------------------------------------------------------


def routes(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> UpstreamSettings:
    path = tmp_path / "routes.toml"
    path.write_text(text)
    return load({"CHATRELAY_UPSTREAMS": str(path), **(env or {})})


ONE = '[[upstream]]\nname = "a"\nbase_url = "http://127.0.0.1:1/v1"\n'


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (ONE, "serves no model"),
        (ONE + "models = ['m']\ncolour = 'red'\n", "unknown keys: colour"),
        (ONE + "models = ['m']\napi_key_env = 'NOT_SET_ANYWHERE'\n", "is not set"),
        (ONE + "models = ['m']\napi_key = 'k'\napi_key_env = 'K'\n", "not both"),
        (ONE + "default = true\n" + ONE.replace('"a"', '"b"') + "default = true\n", "at most one"),
        (ONE + "models = ['m']\n" + ONE + "models = ['n']\n", "names must be unique"),
        (ONE + "models = ['m']\n" + ONE.replace('"a"', '"b"') + "models = ['m']\n", "is listed by"),
        ("[[upstream]]\nname = 'x'\nbase_url = 'ftp://h/'\ndefault = true\n", "http(s) URL"),
        ("upstream = 3\n", "at least one [[upstream]]"),
        ("[[upstream]\n", "not valid TOML"),
    ],
)
def test_bad_routes_files_stop_start_up(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        routes(tmp_path, text)


def doc_example() -> str:
    text = DOC.read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.DOTALL)
    assert len(blocks) == 1, "docs/upstream.md should hold one TOML routes example"
    return blocks[0]


async def test_the_routes_example_in_the_docs_loads_and_routes(tmp_path: Path) -> None:
    ca = tmp_path / "corp-root-ca.pem"
    trustme.CA().cert_pem.write_to_path(ca)
    text = doc_example().replace("/etc/chatrelay/corp-root-ca.pem", str(ca))
    env = {"OPENAI_API_KEY": "sk-o", "AZURE_OPENAI_KEY": "az", "OPENROUTER_API_KEY": "sk-or"}
    settings = routes(tmp_path, text, env)
    by_name = {route.name: route for route in settings.routes}
    assert list(by_name) == ["openai", "azure-4o", "azure-mini", "openrouter", "vllm", "ollama"]
    assert by_name["azure-4o"].auth is AuthStyle.API_KEY
    assert by_name["azure-4o"].base_url.endswith("?api-version=2024-10-21")
    assert by_name["openrouter"].headers["X-Title"] == "Example Chat"
    assert by_name["vllm"].trust.ca_file == str(ca)
    assert (by_name["vllm"].timeouts.first_byte, by_name["vllm"].max_retries) == (180.0, 0)
    assert by_name["ollama"].api_key is None
    clients = [(r, UpstreamClient(UpstreamConfig.for_route(r))) for r in settings.routes]
    router = UpstreamRouter(clients, routed=settings.routed)
    try:
        chosen = {
            model: router.client_for(model).config.name
            for model in (
                "gpt-4o",
                "o3-mini",
                "azure-gpt-4o",
                "azure-gpt-4o-mini",
                "anthropic/claude-3.5-sonnet",
                "Qwen/Qwen2.5-7B-Instruct",
                "llama3.2",
                "anything-else",
            )
        }
        assert chosen == {
            "gpt-4o": "openai",
            "o3-mini": "openai",
            "azure-gpt-4o": "azure-4o",
            "azure-gpt-4o-mini": "azure-mini",
            "anthropic/claude-3.5-sonnet": "openrouter",
            "Qwen/Qwen2.5-7B-Instruct": "vllm",
            "llama3.2": "ollama",
            "anything-else": "ollama",
        }
    finally:
        await router.aclose()


async def test_without_a_default_an_unknown_model_names_what_is_known(tmp_path: Path) -> None:
    settings = routes(
        tmp_path,
        ONE + "prefixes = ['gpt-', 'o3']\nmodels = ['llama3.2']\n",
    )
    route = settings.routes[0]
    router = UpstreamRouter([(route, UpstreamClient(UpstreamConfig.for_route(route)))], routed=True)
    try:
        with pytest.raises(UnknownModel) as refused:
            router.check_model("mistral-large")
        assert refused.value.message == (
            "no upstream serves model 'mistral-large'; known models and prefixes: "
            "gpt-*, o3*, llama3.2"
        )
    finally:
        await router.aclose()
