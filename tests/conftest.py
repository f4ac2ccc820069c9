"""Shared fixtures: a fake upstream and chatrelay itself as a real process, per backend.

Every integration test runs once on SQLite and once on PostgreSQL. Without a reachable
PostgreSQL the PostgreSQL half is skipped with a clear reason — unless
CHATRELAY_REQUIRE_POSTGRES=1 (CI), where a missing server is a failure. Redis the same
way (`require_redis`, CHATRELAY_REQUIRE_REDIS=1).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.fakes import secret_scan
from tests.fakes.service import ServiceProcess
from tests.fakes.upstream import FakeUpstream

POSTGRES_URL = os.environ.get(
    "CHATRELAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("CHATRELAY_REQUIRE_POSTGRES") == "1"
REDIS_URL = os.environ.get("CHATRELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_REDIS = os.environ.get("CHATRELAY_REQUIRE_REDIS") == "1"
UPSTREAM_KEY = "sk-test-UPSTREAM-SECRET-0123456789"
CLIENT_KEYS = {"acme": "key-acme-123", "globex": "key-globex-456"}

_postgres_state: dict[str, str | None] = {}


def postgres_problem() -> str | None:
    """None when PostgreSQL answers, else why not (checked once per session)."""
    if "problem" not in _postgres_state:

        async def probe() -> None:
            conn = await asyncpg.connect(POSTGRES_URL, timeout=3)
            await conn.close()

        try:
            asyncio.run(probe())
            _postgres_state["problem"] = None
        except Exception as exc:
            _postgres_state["problem"] = f"{type(exc).__name__}: {exc}"
    return _postgres_state["problem"]


def require_postgres() -> None:
    problem = postgres_problem()
    if problem is None:
        return
    message = f"PostgreSQL not reachable at {POSTGRES_URL} ({problem})"
    if REQUIRE_POSTGRES:
        pytest.fail(message + " and CHATRELAY_REQUIRE_POSTGRES=1", pytrace=False)
    pytest.skip(message + ": PostgreSQL tests skipped")


_redis_state: dict[str, str | None] = {}


def redis_problem() -> str | None:
    """None when Redis answers PING, else why not (checked once per session)."""
    if "problem" not in _redis_state:
        import redis

        try:
            client = redis.Redis.from_url(REDIS_URL, socket_timeout=3, socket_connect_timeout=3)
            client.ping()
            client.close()
            _redis_state["problem"] = None
        except Exception as exc:
            _redis_state["problem"] = f"{type(exc).__name__}: {exc}"
    return _redis_state["problem"]


def require_redis() -> str:
    """The test Redis URL; skips (fails under CHATRELAY_REQUIRE_REDIS=1) when it is down."""
    problem = redis_problem()
    if problem is None:
        return REDIS_URL
    message = f"Redis not reachable at {REDIS_URL} ({problem})"
    if REQUIRE_REDIS:
        pytest.fail(message + " and CHATRELAY_REQUIRE_REDIS=1", pytrace=False)
    pytest.skip(message + ": Redis tests skipped")


class PostgresDatabase:
    """A throw-away database on the test server, so runs never see each other's rows."""

    def __init__(self) -> None:
        self.name = f"chatrelay_test_{uuid.uuid4().hex[:12]}"
        base, _, _ = POSTGRES_URL.rpartition("/")
        self.url = f"{base}/{self.name}"

    def _admin(self, sql: str) -> None:
        async def run() -> None:
            conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(run())

    def create(self) -> str:
        self._admin(f'CREATE DATABASE "{self.name}"')
        return self.url

    def drop(self) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def database_url(backend: str, workdir: Path) -> tuple[str, PostgresDatabase | None]:
    if backend == "sqlite":
        return f"sqlite:///{workdir / 'chatrelay.db'}", None
    require_postgres()
    pg = PostgresDatabase()
    return pg.create(), pg


@dataclass
class Relay:
    """A running chatrelay and the fake upstream it talks to."""

    service: ServiceProcess
    upstream: FakeUpstream
    backend: str
    database_url: str

    @property
    def url(self) -> str:
        return self.service.base_url

    def client(
        self, tenant: str = "acme", *, service: ServiceProcess | None = None, **kwargs: object
    ) -> httpx.AsyncClient:
        """A client of this relay (or of `service`, another process on its database)."""
        headers = {"Authorization": f"Bearer {CLIENT_KEYS[tenant]}"}
        base_url = (service or self.service).base_url
        return httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=httpx.Timeout(20.0), **kwargs
        )

    def second_service(self) -> ServiceProcess:
        """Another chatrelay process on the same database and upstream (not started)."""
        return ServiceProcess(base_env(self.database_url, self.upstream), self.service.workdir)


def base_env(relay_db_url: str, upstream: FakeUpstream) -> dict[str, str]:
    return {
        "DATABASE_URL": relay_db_url,
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "CHATRELAY_API_KEYS": ",".join(f"{t}:{k}" for t, k in CLIENT_KEYS.items()),
        "CHATRELAY_SECRET": "test-signing-secret",
        "CHATRELAY_UPSTREAM_MAX_RETRIES": "1",
        "CHATRELAY_CHECKPOINT_INTERVAL": "0.2",
        "CHATRELAY_FINISHED_LOG_TTL": "1",
        # A module shares one relay (and one tenant) across many tests, some leaving stalled
        # generations behind: the per-tenant quotas are off here and tested on their own,
        # with small values, in tests/integration/test_quotas.py.
        "CHATRELAY_RATE_LIMIT_PER_MINUTE": "0",
        "CHATRELAY_MAX_GENERATIONS_PER_TENANT": "0",
        "CHATRELAY_MAX_SUBSCRIBERS_PER_MESSAGE": "0",
    }


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module whose behaviour does not touch the storage backend (HTTP limits, say)
    declares `BACKENDS = ("sqlite",)` and its `relay`/`stack` tests run once, not once
    per database: the storage suites cover both."""
    backends = getattr(metafunc.module, "BACKENDS", None)
    if backends is None:
        return
    for name, scope in (("relay", "module"), ("stack", "function")):
        if name in metafunc.fixturenames:
            # As a marker, which pytest lets take precedence over the fixture's own params.
            mark = pytest.mark.parametrize(name, list(backends), indirect=True, scope=scope)
            metafunc.definition.add_marker(mark)


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def relay(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Relay]:
    """chatrelay on `backend`, module-scoped: tests share it and offset by what they add."""
    backend: str = request.param
    workdir = tmp_path_factory.mktemp(f"relay-{backend}")
    url, pg = database_url(backend, workdir)
    upstream = FakeUpstream()
    upstream.start()
    extra = getattr(request.module, "RELAY_ENV", {})
    service = ServiceProcess({**base_env(url, upstream), **extra}, workdir)
    try:
        service.start()
        yield Relay(service=service, upstream=upstream, backend=backend, database_url=url)
    finally:
        service.terminate() if service.proc is not None else None
        upstream.stop()
        if pg is not None:
            pg.drop()


@dataclass
class Stack:
    """A fake upstream and a database, for tests that start and stop chatrelay themselves."""

    upstream: FakeUpstream
    backend: str
    database_url: str
    workdir: Path
    services: list[ServiceProcess]

    def service(self, **env: str) -> ServiceProcess:
        service = ServiceProcess(
            {**base_env(self.database_url, self.upstream), **env}, self.workdir
        )
        self.services.append(service)
        service.start()
        return service

    def client(self, service: ServiceProcess, tenant: str = "acme") -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {CLIENT_KEYS[tenant]}"}
        return httpx.AsyncClient(base_url=service.base_url, headers=headers, timeout=20)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    backend: str = request.param
    url, pg = database_url(backend, tmp_path)
    upstream = FakeUpstream()
    upstream.start()
    made = Stack(upstream, backend, url, tmp_path, [])
    try:
        yield made
    finally:
        for service in made.services:
            service.kill()
        upstream.stop()
        if pg is not None:
            pg.drop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when any chatrelay process logged a secret it was given
    (`tests/fakes/secret_scan.py`)."""
    problems = secret_scan.leaks()
    if not problems:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", "secrets found in service logs", red=True)
        for line in problems:
            reporter.write_line(line)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
