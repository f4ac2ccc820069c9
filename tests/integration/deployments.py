"""Shared pieces of the deployment-shape tests: a chatrelay process per configuration, and the
two ways of asking it for an answer (the native API and `/v1/chat/completions`).

These tests are about how the upstream is reached (TLS trust, proxies, provider shapes,
routes), which does not depend on the database, so they run on SQLite only; every other
integration file covers the storage backends. One process per configuration, module-scoped
where a module's tests share it.
"""

from __future__ import annotations

import contextlib
import datetime
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trustme

from tests.conftest import CLIENT_KEYS
from tests.fakes.service import ServiceProcess
from tests.fakes.sse_client import events
from tests.integration.helpers import new_conversation, post_streaming, wait_final

CLIENT_KEY = CLIENT_KEYS["acme"]


def relay_env(workdir: Path, **env: str) -> dict[str, str]:
    """What every deployment here has: its own SQLite file, client keys, a signing secret."""
    base = {
        "DATABASE_URL": f"sqlite:///{workdir / 'chatrelay.db'}",
        "CHATRELAY_API_KEYS": ",".join(f"{t}:{k}" for t, k in CLIENT_KEYS.items()),
        "CHATRELAY_SECRET": "test-signing-secret",
        "CHATRELAY_UPSTREAM_MAX_RETRIES": "2",
        "CHATRELAY_UPSTREAM_CONNECT_TIMEOUT": "5",
        "CHATRELAY_CHECKPOINT_INTERVAL": "0.2",
    }
    return {**base, **env}


@contextlib.contextmanager
def running(workdir: Path, **env: str) -> Iterator[ServiceProcess]:
    """A started chatrelay with `relay_env(workdir, **env)`, stopped on the way out."""
    workdir.mkdir(parents=True, exist_ok=True)
    service = ServiceProcess(relay_env(workdir, **env), workdir)
    try:
        service.start()
        yield service
    finally:
        service.kill()


def client_of(service: ServiceProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=service.base_url,
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        timeout=httpx.Timeout(20.0),
    )


def full_log(service: ServiceProcess) -> str:
    return service.log_path.read_text(errors="replace")


@dataclass
class NativeAnswer:
    status: str  # the stored message's status
    content: str
    error: dict[str, Any] | None  # the stored error
    event_error: dict[str, Any] | None  # the SSE terminal `error` event's error, if any
    raw: str  # everything a client saw, for leak checks


async def native_chat(
    client: httpx.AsyncClient, content: str = "hi", *, model: str | None = None
) -> NativeAnswer:
    """One message on the native API, its stream read to the end, then the stored message."""
    fields: dict[str, Any] = {"model": model} if model else {}
    cid = await new_conversation(client)
    _, frames = await post_streaming(client, cid, content, **fields)
    seen = events(frames)
    mid = seen[0].json["message"]["id"]
    stored = await wait_final(client, mid)
    terminal = seen[-1]
    event_error = terminal.json.get("error") if terminal.event == "error" else None
    raw = "\n".join(f.data for f in frames) + str(stored)
    return NativeAnswer(stored["status"], stored["content"], stored.get("error"), event_error, raw)


async def openai_chat(
    client: httpx.AsyncClient, *, model: str = "fake-model", stream: bool = False
) -> httpx.Response:
    """One `/v1/chat/completions` call, the body read whole (a stream as its raw text)."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    response = await client.post("/v1/chat/completions", json=body)
    await response.aread()
    return response


def streamed_text(response: httpx.Response) -> str:
    """The content of an OpenAI-shaped event stream, chunk by chunk."""
    import json

    text = ""
    for line in response.text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices", []):
                text += choice.get("delta", {}).get("content") or ""
    return text


@dataclass(frozen=True)
class Pki:
    """A private CA made for the test (`trustme`), and server certificates it issues."""

    ca_file: Path  # the private CA, PEM
    directory: Path
    ca: trustme.CA

    @classmethod
    def create(cls, directory: Path) -> Pki:
        ca = trustme.CA()
        ca_file = directory / "private-ca.pem"
        ca.cert_pem.write_to_path(ca_file)
        return cls(ca_file, directory, ca)

    def leaf(
        self,
        name: str,
        *identities: str,
        ca: trustme.CA | None = None,
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> tuple[str, str]:
        """A server certificate and its key as files, issued by `ca` (ours by default)."""
        issuer = ca or self.ca
        cert = issuer.issue_cert(*identities, not_before=not_before, not_after=not_after)
        cert_path, key_path = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(cert_path)
        cert.private_key_pem.write_to_path(key_path)
        return str(cert_path), str(key_path)


class TcpCounter:
    """A loopback TCP forwarder that counts the connections made through it.

    In front of a TLS upstream it tells how many times the relay tried to connect: a TLS
    failure never reaches the upstream's HTTP layer, so its request log stays empty either
    way, and only the connection count says whether the relay retried.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._listener.settimeout(0.2)  # so that close() is noticed
        self._closed = threading.Event()
        self._count = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="tcp-counter", daemon=True)
        self._thread.start()

    @property
    def connections(self) -> int:
        with self._lock:
            return self._count

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                self._count += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)
        self._listener.close()
