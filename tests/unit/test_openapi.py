"""The OpenAPI document describes exactly the app's routes, and is a valid 3.1 document."""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import schemathesis
from schemathesis.specs.openapi import definitions
from starlette.routing import BaseRoute, Mount, Route

from chatrelay.config import Settings
from chatrelay.models import Status
from chatrelay.web.app import create_app
from chatrelay.web.openapi.document import build_document

_NOT_METHODS = {"parameters", "summary", "description", "servers"}


def _routed(routes: list[BaseRoute], prefix: str = "") -> set[tuple[str, str]]:
    """(METHOD, path) of every route in the table; HEAD is implied by GET (Starlette adds it)."""
    found: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Route):
            methods = set(route.methods or ())
            if "GET" in methods:
                methods.discard("HEAD")
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", prefix + route.path)  # {id:path} → {id}
            found |= {(method, path) for method in methods}
        elif isinstance(route, Mount):
            if route.routes:
                found |= _routed(list(route.routes), prefix + route.path)
            else:
                found.add(("*", prefix + route.path + "/{path}"))
        else:
            raise AssertionError(f"a route of a kind this test does not know: {route!r}")
    return found


def _documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method not in _NOT_METHODS
    }


def _document() -> dict[str, Any]:
    return build_document(max_content_chars=Settings().max_content_chars)


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    routed = _routed(create_app(Settings()).routes)
    documented = _documented(_document())
    missing = sorted(routed - documented)
    extra = sorted(documented - routed)
    assert not missing, "routes missing from the OpenAPI document (add them to " + (
        "src/chatrelay/web/openapi/paths.py): " + ", ".join(f"{m} {p}" for m, p in missing)
    )
    assert not extra, "documented but not routed: " + ", ".join(f"{m} {p}" for m, p in extra)


def test_the_comparison_would_name_a_missing_route() -> None:
    async def endpoint(request: Any) -> Any:
        raise NotImplementedError

    app = create_app(Settings())
    app.router.routes.append(Route("/v1/new-thing", endpoint, methods=["GET"]))
    app.router.routes.append(Mount("/v1/mounted", routes=[Route("/x", endpoint, methods=["PUT"])]))
    missing = _routed(app.routes) - _documented(_document())
    assert missing == {("GET", "/v1/new-thing"), ("PUT", "/v1/mounted/x")}


def test_it_is_an_openapi_3_1_document_schemathesis_loads() -> None:
    document = _document()
    assert document["openapi"].startswith("3.1.")
    # The official OpenAPI 3.1 meta-schema, as schemathesis ships it.
    errors = [str(e) for e in definitions.OPENAPI_31_VALIDATOR.iter_errors(document)]
    assert not errors, errors[:3]
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(_documented(document))


def test_every_component_schema_is_a_valid_json_schema() -> None:
    for name, schema in _document()["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name


def test_the_message_schema_follows_the_code() -> None:
    schemas = _document()["components"]["schemas"]
    assert schemas["Message"]["properties"]["status"]["enum"] == [str(s) for s in Status]
    # The text limit is this process's setting, not a copy of the default.
    custom = build_document(max_content_chars=77)["components"]["schemas"]
    assert custom["MessagePost"]["properties"]["content"]["maxLength"] == 77


def test_auth_is_bearer_and_the_probes_need_none() -> None:
    document = _document()
    assert document["components"]["securitySchemes"]["bearer"] == {
        **document["components"]["securitySchemes"]["bearer"],
        "type": "http",
        "scheme": "bearer",
    }
    assert document["security"] == [{"bearer": []}]
    assert document["paths"]["/healthz"]["get"]["security"] == [{}]


def test_operation_ids_are_unique_and_links_name_real_operations() -> None:
    document = _document()
    operations = [
        operation
        for item in document["paths"].values()
        for method, operation in item.items()
        if method not in _NOT_METHODS
    ]
    ids = [operation["operationId"] for operation in operations]
    assert len(ids) == len(set(ids))
    linked = {
        link["operationId"]
        for operation in operations
        for response in operation["responses"].values()
        for link in response.get("links", {}).values()
    }
    assert linked and linked <= set(ids)
