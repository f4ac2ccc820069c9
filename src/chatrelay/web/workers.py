"""`chatrelay serve --workers N`: N worker processes behind one listening socket.

The parent binds the socket once (so the port is taken, and queues connections, before any
worker runs), then spawns N workers that each serve it with `DrainingServer`: the kernel
hands every new connection to one of them. The parent serves no request itself. It owns
the signals: the first SIGTERM/SIGINT is passed to every worker as SIGTERM, and each drains
exactly as a single process does (unready, new generations refused, running ones finish
within the grace period, the rest stored `interrupted`); the parent exits 0 once they all
have. A second signal reaches the workers as `EXIT_NOW` (SIGUSR1; a repeated SIGTERM only
drains, since systemd signals every process of the service besides the parent), and each
interrupts what is left and exits at once. A worker that dies while the parent is not
shutting down is logged and restarted (with a growing delay if it keeps dying young); one
that dies before the pool first came up ends the start-up with exit code 1, as a single
process that cannot start does.

Workers ignore SIGINT, so Ctrl-C (sent to the whole process group) reaches them once,
through the parent. Each worker holds one end of a pipe to the parent: it reports there
when it serves, and its end seeing EOF means the parent is gone, so the worker drains
instead of serving on as an orphan.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from chatrelay.config import Settings
from chatrelay.web.server import DrainingServer, server_config

log = logging.getLogger("chatrelay.workers")

_SPAWN = multiprocessing.get_context("spawn")
_BACKLOG = 2048
_READY = b"ready"
_FIRST_RESTART_DELAY = 0.5
_MAX_RESTART_DELAY = 30.0
_HEALTHY_AFTER = 10.0  # a worker that served this long restarts without delay when it dies
_STOP_MARGIN = 30.0  # past the grace, a worker still running after SIGTERM is killed
_FORCED_STOP_WAIT = 10.0  # after a second signal
EXIT_NOW = signal.SIGUSR1  # parent -> worker: the second signal (SIGTERM always drains)


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs, pickled to it: one `Settings` value for the whole pool,
    so a random `CHATRELAY_SECRET` is still one secret."""

    settings: Settings
    host: str
    port: int
    log_level: str
    index: int
    count: int


def bind_listener(host: str, port: int) -> socket.socket:
    """The pool's one listening socket, inheritable by the workers."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


# -- the worker process -------------------------------------------------------------------


def worker_log_config(index: int) -> dict[str, Any]:
    """uvicorn's logging with `[worker N]` in every line, access lines included, so the
    interleaved output of N processes says which one served what."""
    config = copy.deepcopy(LOGGING_CONFIG)
    for formatter in config["formatters"].values():
        formatter["fmt"] = formatter["fmt"].replace(
            "%(levelprefix)s ", f"%(levelprefix)s [worker {index}] ", 1
        )
    return config


class WorkerServer(DrainingServer):
    """`DrainingServer` as one worker of a pool: the parent's SIGTERM is the only signal it
    takes, and it tells the parent when it serves."""

    def __init__(
        self, config: uvicorn.Config, app: Any, grace: float, spec: WorkerSpec, parent: Connection
    ) -> None:
        super().__init__(config, app, grace)
        self._spec = spec
        self._parent = parent
        self._drain_requested = False

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C arrives via the parent
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGTERM, EXIT_NOW)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """SIGTERM drains, however often it comes: the parent passes the first signal on,
        and a supervisor that signals every process of the service (systemd) sends one too.
        Only the parent's `EXIT_NOW` is the second signal."""
        if sig == EXIT_NOW:
            self.exit_now()
        elif not self._drain_requested:
            self._drain_requested = True
            super().handle_exit(sig, frame)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            log.info(
                "worker %d of %d serving (pid %d)", self._spec.index, self._spec.count, os.getpid()
            )
            self._parent.send_bytes(_READY)
            threading.Thread(target=self._watch_parent, name="parent-watch", daemon=True).start()

    def _watch_parent(self) -> None:
        """Blocks until the parent's end of the pipe closes; then drains like on SIGTERM."""
        try:
            while True:
                self._parent.recv_bytes()
        except (EOFError, OSError):
            pass
        if not self.should_exit:
            log.warning("the supervising process is gone: draining")
            os.kill(os.getpid(), signal.SIGTERM)


def _exit_before_serving(sig: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _worker_main(spec: WorkerSpec, sock: socket.socket, parent: Connection) -> None:
    """The worker process: its own logging, app, database connections and mock upstream."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Until the server takes over the signals there is nothing to drain: stop quietly.
    signal.signal(signal.SIGTERM, _exit_before_serving)
    from chatrelay.logs import configure_logging
    from chatrelay.web.log_redaction import QueryRedactionFilter

    configure_logging(
        spec.log_level,
        spec.settings.log_format,
        filters=[QueryRedactionFilter()],
        worker=spec.index,
    )
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from chatrelay import collector
    from chatrelay.web import log_redaction
    from chatrelay.web.app import create_app

    # The parent replayed the spool and recovered orphans before any worker started; a
    # worker doing it again would mark its siblings' running messages `interrupted`.
    app = create_app(spec.settings, prepare_storage=False)
    config = server_config(
        app,
        spec.settings,
        host=spec.host,
        port=spec.port,
        log_level=spec.log_level,
        log_config=worker_log_config(spec.index),
    )
    log_redaction.install()
    server = WorkerServer(config, app, spec.settings.shutdown_grace, spec, parent)
    collector.tune(spec.settings.gc_threshold)
    server.run(sockets=[sock])
    raise SystemExit(0 if server.started else 1)


# -- the parent ---------------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    conn: Connection  # the parent's end of the worker's pipe
    started_at: float
    ready_at: float | None = None
    conn_closed: bool = False


class WorkerPool:
    """Runs N workers on one socket until a signal, restarting those that die."""

    def __init__(
        self, settings: Settings, sock: socket.socket, *, host: str, log_level: str, count: int
    ) -> None:
        self._settings = settings
        self._sock = sock
        self._host = host
        self._port: int = sock.getsockname()[1]
        self._log_level = log_level
        self._count = count
        self._workers: dict[int, _Worker] = {}
        self._restart_at: dict[int, float] = {}
        self._restart_delay: dict[int, float] = {}
        self._signals = 0
        self._handled_signals = 0
        self._stop_deadline: float | None = None
        self._came_up = False
        self._failed = False
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)

    # Signals only count and wake the loop; everything else happens in `run`.
    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self._signals += 1
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")

    def run(self) -> int:
        """Serve until the workers have drained after a signal; the process's exit code."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            for index in range(1, self._count + 1):
                self._spawn(index)
            while self._workers or not self._stopping:
                self._step()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._sock.close()
            self._wake_read.close()
            self._wake_write.close()
        return 1 if self._failed else 0

    @property
    def _stopping(self) -> bool:
        return self._stop_deadline is not None

    def _spawn(self, index: int) -> None:
        spec = WorkerSpec(
            self._settings, self._host, self._port, self._log_level, index, self._count
        )
        ours, theirs = _SPAWN.Pipe()
        process = _SPAWN.Process(
            target=_worker_main, args=(spec, self._sock, theirs), name=f"chatrelay-worker-{index}"
        )
        process.start()
        theirs.close()  # the worker holds the only other end: EOF there means we are gone
        self._workers[index] = _Worker(index, process, ours, time.monotonic())

    def _step(self) -> None:
        now = time.monotonic()
        due = [*self._restart_at.values()]
        if self._stop_deadline is not None:
            due.append(self._stop_deadline)
        timeout = max(0.0, min(due) - now) if due else None
        waitables: list[Any] = [self._wake_read]
        for worker in self._workers.values():
            waitables.append(worker.process.sentinel)
            if worker.ready_at is None and not worker.conn_closed:
                waitables.append(worker.conn)
        ready = wait(waitables, timeout)
        if self._wake_read in ready:
            with contextlib.suppress(OSError):
                while self._wake_read.recv(64):
                    pass
        while self._handled_signals < self._signals:
            self._handled_signals += 1
            self._on_stop_request(first=self._handled_signals == 1)
        for worker in list(self._workers.values()):
            if worker.ready_at is None and worker.conn in ready:
                self._on_ready(worker)
            if worker.process.sentinel in ready:
                self._on_exit(worker)
        now = time.monotonic()
        for index, at in list(self._restart_at.items()):
            if at <= now:
                del self._restart_at[index]
                self._spawn(index)
        if self._stop_deadline is not None and now >= self._stop_deadline and self._workers:
            for worker in self._workers.values():
                log.error(
                    "worker %d (pid %s) still running after the shutdown bound: killing it",
                    worker.index,
                    worker.process.pid,
                )
                worker.process.kill()
            self._failed = True
            self._stop_deadline = now + _FORCED_STOP_WAIT

    def _on_ready(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv_bytes()
        except (EOFError, OSError):
            worker.conn_closed = True  # it died before it served; its sentinel says so
            return
        if message != _READY:
            return
        worker.ready_at = time.monotonic()
        everyone = len(self._workers) == self._count
        if (
            not self._came_up
            and everyone
            and all(w.ready_at is not None for w in self._workers.values())
        ):
            self._came_up = True
            log.info("%d workers serving http://%s:%d", self._count, self._host, self._port)

    def _on_exit(self, worker: _Worker) -> None:
        worker.process.join()
        code = worker.process.exitcode
        worker.conn.close()
        del self._workers[worker.index]
        if self._stopping:
            if code != 0:
                log.error("worker %d exited with code %s while shutting down", worker.index, code)
                self._failed = True
            return
        if not self._came_up and worker.ready_at is None:
            log.error(
                "worker %d (pid %s) failed to start (exit code %s): stopping",
                worker.index,
                worker.process.pid,
                code,
            )
            self._failed = True
            self._begin_stop(forced=False)
            return
        lived = time.monotonic() - (worker.ready_at or worker.started_at)
        if worker.ready_at is not None and lived >= _HEALTHY_AFTER:
            delay = 0.0
        else:
            previous = self._restart_delay.get(worker.index, 0.0)
            delay = min(_MAX_RESTART_DELAY, max(_FIRST_RESTART_DELAY, previous * 2))
        self._restart_delay[worker.index] = delay
        log.warning(
            "worker %d (pid %s) exited unexpectedly (exit code %s): restarting it in %gs",
            worker.index,
            worker.process.pid,
            code,
            delay,
        )
        self._restart_at[worker.index] = time.monotonic() + delay

    def _on_stop_request(self, *, first: bool) -> None:
        if first:
            log.warning(
                "shutting down: %d worker(s) drain running generations for up to %gs",
                len(self._workers),
                self._settings.shutdown_grace,
            )
        else:
            log.warning("second signal: workers interrupt generations and exit now")
        self._begin_stop(forced=not first)

    def _begin_stop(self, *, forced: bool) -> None:
        self._restart_at.clear()
        bound = _FORCED_STOP_WAIT if forced else self._settings.shutdown_grace + _STOP_MARGIN
        self._stop_deadline = time.monotonic() + bound
        for worker in self._workers.values():
            if worker.process.pid is not None and worker.process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, EXIT_NOW if forced else signal.SIGTERM)
