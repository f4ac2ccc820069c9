"""Client keys on a live service: hashed entries, rotation, refusal of bad ones, no leaks.

SQLite only: this is about the HTTP edge and start-up, not storage.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.service import ServiceProcess, free_port

OLD_KEY = "acme-old-key-5a4b3c2d1e"
NEW_KEY = "acme-new-key-9f8e7d6c5b"
GLOBEX_KEY = "globex-key-0a1b2c3d4e"
SECRET = "keys-signing-secret"


def _hash_key(tenant: str, key: str) -> str:
    """The entry as operators make it: `chatrelay hash-key TENANT` with the key on stdin."""
    done = subprocess.run(
        [sys.executable, "-m", "chatrelay", "hash-key", tenant],
        input=key + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def entries() -> dict[str, str]:
    return {"new": _hash_key("acme", NEW_KEY), "globex": _hash_key("globex", GLOBEX_KEY)}


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, entries: dict[str, str]
) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("keys")
    # Mid-rotation: acme's old key in plain form, its new one and globex's hashed.
    api_keys = f"acme:{OLD_KEY}, {entries['new']}, {entries['globex']}"
    env = {
        "DATABASE_URL": f"sqlite:///{workdir / 'chatrelay.db'}",
        "CHATRELAY_API_KEYS": api_keys,
        "CHATRELAY_SECRET": SECRET,
        "CHATRELAY_MOCK_TOKEN_DELAY": "0",
    }
    running = ServiceProcess(env, workdir)
    running.start()
    try:
        yield running
    finally:
        running.terminate()


def _get(service: ServiceProcess, path: str, key: str | None) -> httpx.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return httpx.get(service.base_url + path, headers=headers, timeout=20)


def test_hash_key_prints_the_sha256_entry(entries: dict[str, str]) -> None:
    assert entries["new"] == "acme:sha256:" + hashlib.sha256(NEW_KEY.encode()).hexdigest()


def test_old_and_new_keys_both_work_and_name_one_tenant(service: ServiceProcess) -> None:
    made = httpx.post(
        service.base_url + "/v1/conversations",
        json={"title": "rotation"},
        headers={"Authorization": f"Bearer {OLD_KEY}"},
        timeout=20,
    )
    assert made.status_code == 201
    cid = made.json()["id"]
    for key in (OLD_KEY, NEW_KEY):
        assert _get(service, f"/v1/conversations/{cid}", key).status_code == 200
    # Another tenant's hashed key works too, for its own tenant only.
    assert _get(service, "/v1/conversations", GLOBEX_KEY).status_code == 200
    assert _get(service, f"/v1/conversations/{cid}", GLOBEX_KEY).status_code == 404


def test_wrong_keys_and_the_digest_itself_are_refused(
    service: ServiceProcess, entries: dict[str, str]
) -> None:
    digest = entries["new"].rsplit(":", 1)[1]
    for key in (None, "acme-new-key", NEW_KEY + "x", digest, f"sha256:{digest}", entries["new"]):
        response = _get(service, "/v1/conversations", key)
        assert response.status_code == 401, key
        assert response.json()["error"]["code"] == "unauthorized"


def _legacy_token(tenant: str, message_id: str) -> str:
    payload = f"{int(time.time()) + 600}.{tenant}"
    text = f"{message_id}.{payload}".encode()
    mac = hmac.new(SECRET.encode(), text, hashlib.sha256).hexdigest()[:32]
    return base64.urlsafe_b64encode(f"{payload}.{mac}".encode()).decode().rstrip("=")


def test_stream_tokens_name_no_tenant_and_old_ones_still_open_their_stream(
    service: ServiceProcess,
) -> None:
    auth = {"Authorization": f"Bearer {NEW_KEY}"}
    with httpx.Client(base_url=service.base_url, headers=auth, timeout=20) as client:
        cid = client.post("/v1/conversations", json={}).json()["id"]
        posted = client.post(f"/v1/conversations/{cid}/messages", json={"content": "hi"})
        assert posted.status_code == 202
        stream_url = posted.json()["stream_url"]
        mid = posted.json()["assistant_message"]["id"]
    token = stream_url.split("token=", 1)[1]
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert b"acme" not in raw
    with httpx.Client(base_url=service.base_url, timeout=20) as anonymous:
        opened = anonymous.get(stream_url)
        assert opened.status_code == 200 and "event: done" in opened.text
        # A token made before the upgrade (it named its tenant) opens the same stream.
        legacy = anonymous.get(f"/v1/messages/{mid}/events?token={_legacy_token('acme', mid)}")
        assert legacy.status_code == 200 and "event: done" in legacy.text
        # ...and names the tenant it was issued to: another tenant's gets nothing.
        other = anonymous.get(f"/v1/messages/{mid}/events?token={_legacy_token('globex', mid)}")
        assert other.status_code == 404


def test_no_key_or_config_value_reaches_the_log(
    service: ServiceProcess, entries: dict[str, str]
) -> None:
    _get(service, "/v1/conversations", NEW_KEY)
    _get(service, "/v1/conversations", "a-wrong-key-123456")
    log = service.log_path.read_text(errors="replace")
    assert "GET /v1/conversations" in log
    for secret in (OLD_KEY, NEW_KEY, GLOBEX_KEY, "a-wrong-key-123456", SECRET):
        assert secret not in log
    for entry in entries.values():
        assert entry.rsplit(":", 1)[1] not in log


@pytest.mark.parametrize(
    ("api_keys", "fragment"),
    [
        ("acme:sha256:deadbeef", "entry 1 starts a hashed key"),
        (f"acme:{OLD_KEY},acme", "entry 2 must look like tenant:key"),
        (f"acme:{OLD_KEY},globex:{OLD_KEY}", "entry 2 repeats a key"),
    ],
)
def test_a_malformed_entry_stops_start_up_with_one_line(
    tmp_path: Path, api_keys: str, fragment: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATRELAY_", "OPENAI_"))}
    env |= {"CHATRELAY_API_KEYS": api_keys, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    done = subprocess.run(
        [sys.executable, "-m", "chatrelay", "serve", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], done.stderr
    assert OLD_KEY not in done.stderr and "deadbeef" not in done.stderr
