"""The CLI fails in one clear line, no traceback: `serve` on bad settings, `chat` with no server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CHATRELAY_", "OPENAI_"))}
    clean.pop("DATABASE_URL", None)
    clean.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "chatrelay", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({"DATABASE_URL": "mysql://nope/db"}, ["serve"], "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://127.0.0.1:notaport/db"}, ["serve"], "port"),
        ({"CHATRELAY_SHUTDOWN_GRACE": "later"}, ["serve"], "CHATRELAY_SHUTDOWN_GRACE"),
        ({}, ["serve", "--port", "70000"], "--port"),
        ({"CHATRELAY_CORS_ORIGINS": "localhost:3000"}, ["serve"], "CHATRELAY_CORS_ORIGINS"),
        ({}, ["serve", "--workers", "2"], "--workers 2 needs REDIS_URL"),
        ({"REDIS_URL": ""}, ["serve", "--workers", "3"], "--workers 3 needs REDIS_URL"),
        ({"REDIS_URL": "redis://127.0.0.1:6379/0"}, ["serve", "--workers", "0"], "--workers"),
    ],
)
def test_bad_configuration_is_one_line(
    tmp_path: Path, env: dict[str, str], args: list[str], expected: str
) -> None:
    result = run_cli(args, env, tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    result = run_cli(["serve"], {"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/db"}, tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "database" in result.stderr.lower()


def test_env_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=oracle://from-dotenv\n")
    result = run_cli(["serve"], {}, tmp_path)
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(["serve", "--port", str(port)], {}, tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"chatrelay: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_help_names_the_commands(tmp_path: Path) -> None:
    result = run_cli(["--help"], {}, tmp_path)
    assert result.returncode == 0
    for command in ("serve", "chat", "conversations"):
        assert command in result.stdout


def test_chat_without_a_service_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_cli(["chat", "--url", f"http://127.0.0.1:{port}", "Hello"], {}, tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"chatrelay: cannot reach http://127.0.0.1:{port} (POST ")


def test_hash_key_reads_the_key_from_stdin_and_prints_the_entry(tmp_path: Path) -> None:
    import hashlib

    done = subprocess.run(
        [sys.executable, "-m", "chatrelay", "hash-key", "acme"],
        input="  s3cret-key  \n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    # Blanks around the key are dropped, as they are from a presented key.
    assert done.stdout == f"acme:sha256:{hashlib.sha256(b's3cret-key').hexdigest()}\n"


@pytest.mark.parametrize(
    ("tenant", "stdin", "expected"),
    [("acme", "\n", "no key on stdin"), ("a:b", "k\n", "without ':' or ','"), (" ", "k\n", "")],
)
def test_hash_key_refuses_what_no_entry_could_hold(
    tmp_path: Path, tenant: str, stdin: str, expected: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chatrelay", "hash-key", tenant],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1
