"""`GET /` and `/static/…`: the page's files with their security headers, nothing else."""

from __future__ import annotations

import httpx

from tests.conftest import Relay

BACKENDS = ("sqlite",)  # static files: storage plays no part


def test_index_is_served_with_a_strict_policy(relay: Relay) -> None:
    response = httpx.get(relay.url + "/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    policy = response.headers["content-security-policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'"):
        assert directive in policy
    assert "frame-ancestors 'none'" in policy and "base-uri 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert '<script type="module" src="/static/app.js">' in response.text


def test_static_files_have_their_types(relay: Relay) -> None:
    script = httpx.get(relay.url + "/static/app.js")
    assert script.status_code == 200
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert script.headers["x-content-type-options"] == "nosniff"
    style = httpx.get(relay.url + "/static/style.css")
    assert style.headers["content-type"] == "text/css; charset=utf-8"


def test_anything_else_is_the_json_404(relay: Relay) -> None:
    for path in ("/static/index.html", "/static/nope.js", "/static/..%2Fconfig.py", "/nope"):
        response = httpx.get(relay.url + path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found", path
    assert httpx.post(relay.url + "/").status_code == 405
