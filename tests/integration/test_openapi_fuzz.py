"""schemathesis against a live `chatrelay serve`: no 5xx, and every response fits the spec.

Three parts: every operation on its own (25 generated cases each, valid and invalid), then
sequences along the document's links (create a conversation, post into it, read, follow,
cancel, regenerate, edit with real ids), then one native stream read to the end and each
event checked against the documented event schema. Bounded for CI (under 30 s here):
derandomized (the same cases every run), no Hypothesis deadline, no shrinking, the load
health checks off. Runs on SQLite only: this fuzzes the HTTP surface, whose
behaviour the storage suite already checks on both backends. The upstream is the built-in
mock (product code, reached over a real socket), with short timeouts so that a model name
that happens to pick a slow or stalling fault cannot hold the run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import jsonschema_rs
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from chatrelay.config import Settings
from chatrelay.keys import hashed_entry
from chatrelay.web.openapi.document import build_document
from tests.fakes import sse_client
from tests.fakes.service import ServiceProcess

KEY = "fuzz-key-0f1e2d3c4b5a"
FUZZ_ENV = {
    "CHATRELAY_API_KEYS": hashed_entry("fuzz", KEY),
    "CHATRELAY_SECRET": "fuzz-signing-secret",
    "CHATRELAY_MOCK_TOKEN_DELAY": "0",
    "CHATRELAY_UPSTREAM_MAX_RETRIES": "0",
    "CHATRELAY_UPSTREAM_FIRST_BYTE_TIMEOUT": "3",
    "CHATRELAY_UPSTREAM_IDLE_TIMEOUT": "2",
    "CHATRELAY_UPSTREAM_TOTAL_TIMEOUT": "5",
    "CHATRELAY_CHECKPOINT_INTERVAL": "0.2",
    "CHATRELAY_FINISHED_LOG_TTL": "1",
    # Hundreds of cases from one key: the per-minute rate limit would answer most of them
    # 429 (documented on every /v1 route), fuzzing little else, and the stateful run draws
    # its next step from what earlier steps returned, so timing-dependent 429s make its
    # data generation inconsistent. The other quotas keep their defaults.
    "CHATRELAY_RATE_LIMIT_PER_MINUTE": "0",
}
# CI's bound; a deeper local hunt: CHATRELAY_FUZZ_EXAMPLES=300 CHATRELAY_FUZZ_COVERAGE=1.
MAX_EXAMPLES = int(os.environ.get("CHATRELAY_FUZZ_EXAMPLES", "25"))
STATEFUL_EXAMPLES = 2 * MAX_EXAMPLES
COVERAGE_PHASE = os.environ.get("CHATRELAY_FUZZ_COVERAGE") == "1"
# Generation time depends on the machine's load; on a busy CI box it is no failure.
SLOW_MACHINE = [hypothesis.HealthCheck.too_slow, hypothesis.HealthCheck.filter_too_much]
NO_SHRINK = [hypothesis.Phase.explicit, hypothesis.Phase.reuse, hypothesis.Phase.generate]
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


@pytest.fixture(scope="module")
def fuzzed_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    service = ServiceProcess(
        {"DATABASE_URL": f"sqlite:///{workdir / 'chatrelay.db'}", **FUZZ_ENV}, workdir
    )
    service.start()
    try:
        yield service
    finally:
        service.terminate()


# The document as the service builds it for its settings (the default text limit);
# `test_the_service_serves_this_document` checks that `/openapi.json` is exactly this.
DOCUMENT = build_document(max_content_chars=Settings().max_content_chars)
# Loaded eagerly: schemathesis' fixture-based (lazy) loader does not run on pytest 9.
schema = schemathesis.openapi.from_dict(
    DOCUMENT,
    config=SchemathesisConfig.from_dict(
        {
            "headers": {"Authorization": f"Bearer {KEY}"},
            "request-timeout": 15,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "no-shrink": True},
            "phases": {"coverage": {"enabled": COVERAGE_PHASE}},
        }
    ),
)


def test_the_service_serves_this_document(fuzzed_service: ServiceProcess) -> None:
    response = httpx.get(fuzzed_service.base_url + "/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == DOCUMENT


@schema.parametrize()
@hypothesis.settings(
    deadline=None,
    derandomize=True,
    max_examples=MAX_EXAMPLES,
    database=None,
    print_blob=False,
    suppress_health_check=SLOW_MACHINE,
    phases=NO_SHRINK,
)
def test_the_live_service_keeps_to_its_openapi_document(
    case: schemathesis.Case, fuzzed_service: ServiceProcess
) -> None:
    case.call_and_validate(base_url=fuzzed_service.base_url, checks=CHECKS)


def test_sequences_along_the_links_keep_to_the_document(fuzzed_service: ServiceProcess) -> None:
    """Conversation → message → read, follow, cancel, regenerate, edit, with real ids."""

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, object]:
            return {"base_url": fuzzed_service.base_url}

        def validate_response(
            self, response: object, case: schemathesis.Case, **kwargs: object
        ) -> None:
            case.validate_response(response, checks=CHECKS)

    Workflow.run(
        settings=hypothesis.settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=6,
            deadline=None,
            derandomize=True,
            database=None,
            print_blob=False,
            suppress_health_check=SLOW_MACHINE,
            phases=NO_SHRINK,
        )
    )


def _validator(schema: dict[str, object]) -> jsonschema_rs.Validator:
    """A validator for `schema` with the document's components in reach of its `$ref`s."""
    return jsonschema_rs.validator_for({**schema, "components": DOCUMENT["components"]})


def _check_event(event: dict[str, str], branches: list[dict[str, Any]]) -> None:
    """The event's envelope fits one branch of the stream's schema, and its `data` that
    branch's `contentSchema` (JSON Schema validators treat content keywords as notes only)."""
    errors = []
    for branch in branches:
        envelope = {k: v for k, v in branch.items() if k != "properties"}
        envelope["properties"] = {
            name: ({"type": "string"} if name == "data" else prop)
            for name, prop in branch["properties"].items()
        }
        if not _validator(envelope).is_valid(event):
            continue
        data_schema = branch["properties"]["data"]
        if "contentSchema" not in data_schema:
            return
        found = list(
            _validator(data_schema["contentSchema"]).iter_errors(json.loads(event["data"]))
        )
        if not found:
            return
        errors.extend(found)
    raise AssertionError(f"event {event} fits no documented kind: {errors}")


async def test_a_native_stream_fits_the_documented_events(fuzzed_service: ServiceProcess) -> None:
    """Live and replayed: the fuzz rarely reaches a 200 stream, so this reads one for sure."""
    branches = DOCUMENT["components"]["schemas"]["MessageEvent"]["anyOf"]
    headers = {"Authorization": f"Bearer {KEY}", "Accept": "text/event-stream"}
    async with httpx.AsyncClient(
        base_url=fuzzed_service.base_url, headers=headers, timeout=20
    ) as client:
        created = await client.post("/v1/conversations", json={"title": "spec"})
        cid = created.json()["id"]
        async with client.stream(
            "POST", f"/v1/conversations/{cid}/messages", json={"content": "Hello, spec"}
        ) as live:
            assert live.status_code == 200
            mid = live.headers["x-message-id"]
            live_frames = sse_client.events(await sse_client.collect(live))
        async with client.stream("GET", f"/v1/messages/{mid}/events") as replay:
            replay_frames = sse_client.events(await sse_client.collect(replay))
    assert live_frames[0].event == "start"
    assert live_frames[-1].event == "done"
    assert len(live_frames) > 2
    for frame in [*live_frames, *replay_frames]:
        assert frame.event is not None and frame.id is not None and frame.data is not None
        _check_event({"event": frame.event, "id": frame.id, "data": frame.data}, branches)


def test_the_stream_check_would_refuse_an_undocumented_event() -> None:
    branches = DOCUMENT["components"]["schemas"]["MessageEvent"]["anyOf"]
    with pytest.raises(AssertionError, match="fits no documented kind"):
        _check_event({"event": "delta", "id": "2", "data": '{"content": 5}'}, branches)
    with pytest.raises(AssertionError, match="fits no documented kind"):
        _check_event({"event": "surprise", "id": "2", "data": '{"content": "x"}'}, branches)


_MID = "msg_01M8A35AS3EA7THF9MWVAC7EA8"
_CID = "conv_01M8A35AMZ5AJ70R01TJZXV6PJ"


@pytest.mark.parametrize(
    ("method", "path", "shape"),
    [
        ("PUT", "/v1/models", "openai"),
        ("GET", "/v1/chat/completions", "openai"),
        ("DELETE", "/v1/chat/completions", "openai"),
        ("PUT", "/v1/conversations", "native"),
        ("PATCH", f"/v1/conversations/{_CID}", "native"),
        ("PUT", f"/v1/conversations/{_CID}/messages", "native"),
        ("PATCH", f"/v1/messages/{_MID}", "native"),
        ("PUT", "/openapi.json", "native"),
    ],
)
def test_a_method_the_document_does_not_list_is_a_405_allowing_those_it_does(
    fuzzed_service: ServiceProcess, method: str, path: str, shape: str
) -> None:
    template = path.replace(_MID, "{mid}").replace(_CID, "{cid}")
    documented = {m.upper() for m in DOCUMENT["paths"][template] if m != "parameters"}
    assert method not in documented
    if "GET" in documented:
        documented.add("HEAD")
    response = httpx.request(
        method,
        fuzzed_service.base_url + path,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    assert response.status_code == 405
    assert response.headers["allow"] == ", ".join(sorted(documented))
    error = response.json()["error"]
    assert error["code"] == "method_not_allowed"
    if shape == "openai":
        assert error["type"] == "invalid_request_error" and error["param"] is None
    else:
        assert set(error) == {"code", "message"}
