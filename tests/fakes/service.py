"""chatrelay itself, run as a real subprocess (`python -m chatrelay serve`) on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.fakes import secret_scan

_HOST_SETTINGS = frozenset(
    {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR"}
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServiceProcess:
    """Starts the service with an explicit environment; logs go to a file for diagnosis.

    `args` are extra `serve` arguments, e.g. `["--workers", "2"]`.
    """

    def __init__(self, env: dict[str, str], workdir: Path, args: Sequence[str] = ()) -> None:
        self.env = env
        self.workdir = workdir
        self.args = list(args)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"service-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        # The service reads these; a test sets what it needs (the machine's own proxy or CA
        # settings would otherwise route or trust the fake upstreams differently).
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OPENAI_", "CHATRELAY_", "DATABASE_URL", "REDIS_URL"))
            and k.upper() not in _HOST_SETTINGS
        }
        env.update(self.env)
        secret_scan.register(self.log_path, self.env)
        self._log = open(self.log_path, "ab")  # noqa: SIM115  # closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chatrelay",
                "serve",
                "--port",
                str(self.port),
                "--log-level",
                "info",
                *self.args,
            ],
            cwd=self.workdir,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"service did not become healthy:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        finally:
            self._close_log()
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()
