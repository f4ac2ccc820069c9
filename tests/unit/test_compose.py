"""`docker-compose.yml` against the Compose Specification, and against what chatrelay needs.

No Docker engine runs here, so the file is checked the way Compose reads it: YAML (merge
keys resolved) validated by the specification's JSON schema (vendored in
`tests/data/compose-spec/`, see its SOURCE.md), then the properties docs/deploy.md
promises: two instances on PostgreSQL and Redis with one secret, healthchecks everywhere,
start-up ordered by health, and a proxy that does not buffer streams.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from chatrelay.cli import _parser
from chatrelay.config import Settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "tests" / "data" / "compose-spec" / "compose-spec.json"
INSTANCES = ("chatrelay-1", "chatrelay-2")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_the_schema_rejects_what_compose_rejects() -> None:
    """The validator is not vacuous: a typo'd key and a bad condition fail it."""
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    bad_key = {"services": {"a": {"image": "x", "helthcheck": {}}}}
    bad_condition = {
        "services": {
            "a": {"image": "x", "depends_on": {"b": {"condition": "healthy"}}},
            "b": {"image": "x"},
        }
    }
    assert list(validator.iter_errors(bad_key))
    assert list(validator.iter_errors(bad_condition))


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), name


def test_start_up_waits_for_healthy_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "nginx", *INSTANCES} <= set(services)
    for name in INSTANCES:
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }
    assert services["nginx"]["depends_on"] == {
        name: {"condition": "service_healthy"} for name in INSTANCES
    }


def test_instances_share_the_database_redis_and_secret(compose: dict[str, Any]) -> None:
    services = compose["services"]
    environments = [services[name]["environment"] for name in INSTANCES]
    assert environments[0] == environments[1]
    env = environments[0]
    assert env["DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    # From .env (or the shell), and refused when missing rather than random per instance.
    assert re.fullmatch(r"\$\{CHATRELAY_SECRET:\?[^}]+\}", env["CHATRELAY_SECRET"])
    for name in INSTANCES:
        assert services[name]["env_file"] == ".env"


def test_each_instance_keeps_its_own_spool(compose: dict[str, Any]) -> None:
    mounts = [compose["services"][name]["volumes"][0] for name in INSTANCES]
    assert all(m.endswith(":/app/data") for m in mounts)
    assert len(set(mounts)) == len(INSTANCES)


def test_stop_grace_outlasts_the_drain(compose: dict[str, Any]) -> None:
    grace = Settings().shutdown_grace
    for name in INSTANCES:
        period = compose["services"][name]["stop_grace_period"]
        assert period.endswith("s") and float(period[:-1]) > grace + 5


def test_the_instances_run_the_images_serve_command(compose: dict[str, Any]) -> None:
    """No `command` override: the Dockerfile's CMD is what runs, and the CLI accepts it."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert cmd is not None
    argv = json.loads(cmd.group(1))
    assert argv[:2] == ["chatrelay", "serve"]
    args = _parser().parse_args(argv[1:])
    assert (args.host, args.port, args.workers) == ("0.0.0.0", 8000, 1)
    for name in INSTANCES:
        assert "command" not in compose["services"][name]
        probe = " ".join(compose["services"][name]["healthcheck"]["test"])
        assert "http://127.0.0.1:8000/readyz" in probe


def _nginx_directives() -> list[list[str]]:
    text = re.sub(r"#.*", "", (ROOT / "deploy" / "nginx.conf").read_text())
    return [shlex.split(part.strip()) for part in re.split(r"[;{}]", text) if part.strip()]


def test_the_proxy_streams_without_buffering_to_both_instances(compose: dict[str, Any]) -> None:
    mount = compose["services"]["nginx"]["volumes"][0]
    assert mount.startswith("./deploy/nginx.conf:")
    directives = {d[0]: d[1:] for d in _nginx_directives()}
    servers = [d[1] for d in _nginx_directives() if d[0] == "server" and len(d) > 1]
    assert servers == [f"{name}:8000" for name in INSTANCES]
    assert directives["proxy_buffering"] == ["off"]
    assert directives["proxy_http_version"] == ["1.1"]
    headers = [d[1:] for d in _nginx_directives() if d[0] == "proxy_set_header"]
    assert ["Connection", ""] in headers, "keep-alive to the instances needs Connection cleared"
    assert int(directives["proxy_read_timeout"][0].removesuffix("s")) >= 600
    assert "keepalive" in directives
    assert "ip_hash" not in directives and "sticky" not in directives


def test_env_example_names_what_compose_needs() -> None:
    example = (ROOT / ".env.example").read_text()
    assert re.search(r"^CHATRELAY_SECRET=\S*$", example, re.MULTILINE), (
        "docker-compose.yml requires CHATRELAY_SECRET: .env.example should show it set"
    )
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in ignored
