"""Dependencies point one way, and each outside library stays in the module that owns it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "chatrelay"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules() -> dict[str, set[str]]:
    return {str(p.relative_to(PACKAGE)): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _importers(prefix: str) -> set[str]:
    return {
        module
        for module, names in _modules().items()
        if any(n == prefix or n.startswith(prefix + ".") for n in names)
    }


def test_databases_only_in_storage_database() -> None:
    assert _importers("databases") == {"storage/database.py"}


def test_httpx_only_in_upstream_and_the_client() -> None:
    # Two separate edges: the service's own upstream client, and the official client of
    # the service (which the service never uses).
    assert _importers("httpx")
    assert all(module.startswith(("upstream/", "client/")) for module in _importers("httpx"))


def test_aiohttp_only_in_the_proxy_transport() -> None:
    # A direct upstream goes through `http11`; aiohttp is for proxies, imported when one is
    # configured (`UpstreamClient`), so the rest of the service never loads it.
    assert _importers("aiohttp") | _importers("httpx_aiohttp") == {"upstream/transport.py"}
    assert "chatrelay.upstream.transport" not in _modules()["upstream/http11.py"]


def test_direct_upstreams_do_not_load_aiohttp() -> None:
    import subprocess

    code = "import sys, chatrelay.web.app, chatrelay.cli; print('aiohttp' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


def test_nothing_of_the_service_imports_the_client() -> None:
    # Only the terminal commands (cli.py) use the client; the service must not depend on it.
    outside = {m for m in _importers("chatrelay.client") if not m.startswith("client/")}
    assert outside <= {"cli.py"}


def test_the_client_imports_only_the_sse_parser() -> None:
    # The client talks to the service over HTTP only; it reads events with the one parser.
    for module, names in _modules().items():
        if module.startswith("client/"):
            ours = {n for n in names if n == "chatrelay" or n.startswith("chatrelay.")}
            assert all(n.startswith(("chatrelay.client", "chatrelay.sse")) for n in ours), (
                module,
                ours,
            )


def test_core_never_imports_the_web_edge() -> None:
    core = ("generation/", "storage/", "upstream/", "sse/", "service.py", "models.py")
    offenders = {
        module
        for module in _importers("chatrelay.web") | _importers("starlette.requests")
        if module.startswith((*core, "mock_upstream/"))
    }
    # The mock upstream is an HTTP server of its own (it stands in for OpenAI), not a
    # part of chatrelay's edge; it must still not reach into chatrelay.web.
    assert all(module.startswith("mock_upstream/") for module in offenders)
    assert not any(m.startswith("mock_upstream/") for m in _importers("chatrelay.web"))


def _imports_of(prefix: str) -> set[str]:
    """Every chatrelay module imported by the modules under `prefix`."""
    return {
        name
        for module, names in _modules().items()
        if module.startswith(prefix)
        for name in names
        if name.startswith("chatrelay.")
    }


def test_broker_depends_only_on_the_leaves() -> None:
    leaves = {"chatrelay.models", "chatrelay.errors", "chatrelay.json_values"}
    assert {n for n in _imports_of("broker/") if not n.startswith("chatrelay.broker")} <= leaves


def test_generation_never_imports_the_edges_above_it() -> None:
    above = ("chatrelay.web", "chatrelay.service", "chatrelay.completions")
    assert not {n for n in _imports_of("generation/") if n.startswith(above)}


def test_storage_and_upstream_never_import_generation_or_broker() -> None:
    for layer in ("storage/", "upstream/"):
        reached = _imports_of(layer)
        assert not {
            n for n in reached if n.startswith(("chatrelay.generation", "chatrelay.broker"))
        }


def test_completions_never_imports_the_web_edge_or_starlette() -> None:
    edge = _importers("chatrelay.web") | _importers("starlette") | _importers("sse_starlette")
    assert not {module for module in edge if module.startswith("completions/")}


def test_chunks_imports_only_the_standard_library() -> None:
    # So that a server of its own (the mock upstream) can build its chunks with it
    # without pulling in the rest of chatrelay.
    names = _modules()["completions/chunks.py"]
    assert {n.split(".")[0] for n in names} <= sys.stdlib_module_names


def test_only_the_lifespan_starts_the_mock_upstream() -> None:
    # The mock upstream is an HTTP server of its own (it stands in for OpenAI), not a part
    # of chatrelay: only web/app.py's lifespan starts it, and the real client never uses it.
    outside = {
        m for m in _importers("chatrelay.mock_upstream") if not m.startswith("mock_upstream/")
    }
    assert outside == {"web/app.py"}
    assert not {m for m in _importers("chatrelay.mock_upstream") if m.startswith("upstream/")}


def test_the_mock_upstream_uses_only_the_encoders_and_the_embedded_server() -> None:
    allowed = (
        "chatrelay.mock_upstream",
        "chatrelay.sse.framing",
        "chatrelay.embedded_server",
        "chatrelay.completions.chunks",
    )
    for module, names in _modules().items():
        if module.startswith("mock_upstream/"):
            ours = {n for n in names if n == "chatrelay" or n.startswith("chatrelay.")}
            assert all(n.startswith(allowed) for n in ours), (module, ours)


def test_aiohttp_only_as_the_upstream_transport() -> None:
    assert _importers("aiohttp") | _importers("httpx_aiohttp") == {"upstream/transport.py"}


def test_prometheus_only_in_metrics() -> None:
    # The core reports through `observe.Observer`; only `metrics.py` knows Prometheus.
    assert _importers("prometheus_client") == {"metrics.py"}


def test_the_core_reports_only_through_the_observer_seam() -> None:
    core = ("generation/", "upstream/", "storage/", "broker/")
    offenders = {
        module
        for module in _importers("chatrelay.metrics") | _importers("chatrelay.outcome_log")
        if module.startswith(core)
    }
    assert not offenders


def test_middleware_acts_on_the_response_start_only() -> None:
    # Event streams write their events past the middleware, with the server's own `send`
    # (RelayEventStream._send_events): only middleware that looks at nothing but the
    # response's start (and the request) may be in the stack. One that rewrote bodies
    # (compression, say) would silently miss every event.
    from dataclasses import replace

    from starlette.middleware.cors import CORSMiddleware

    from chatrelay.config import Settings
    from chatrelay.web.app import RelayApp, create_app
    from chatrelay.web.instrumentation import Instrumentation
    from chatrelay.web.sse import StreamHolder

    settings = replace(Settings(), cors_origins=("https://example.test",))
    app = create_app(settings)
    assert isinstance(app, RelayApp)
    # Instrumentation outside StreamHolder: it must see each stream's whole life.
    assert [m.cls for m in app.user_middleware] == [Instrumentation, StreamHolder, CORSMiddleware]
