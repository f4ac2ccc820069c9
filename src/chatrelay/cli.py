"""`chatrelay serve` runs the service; `chatrelay chat` and `chatrelay conversations` use it.

`serve` validates configuration, checks the database and runs uvicorn: in this process, or
with `--workers N` in N worker processes behind one port (`chatrelay.web.workers`). `chat`
and `conversations` are thin: their work is in `chatrelay.client.terminal`, over the
official client. `hash-key` turns a client key into its `CHATRELAY_API_KEYS` entry in
hashed form.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys

from chatrelay.config import Settings, load_settings
from chatrelay.errors import ChatRelayError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatrelay", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes behind the one port (default 1: this process serves;"
        " more than 1 needs REDIS_URL)",
    )
    chat = sub.add_parser(
        "chat",
        help="ask a question and stream the answer (no question: an interactive loop)",
        description="Stream an answer from a running chatrelay. Ctrl-C asks whether to cancel the"
        " generation (without a terminal it cancels at once) and exits 130.",
    )
    _client_arguments(chat)
    chat.add_argument("--conversation", metavar="ID", help="continue this conversation")
    chat.add_argument("--model", help="the model for this message")
    chat.add_argument("question", nargs="?", help="the question; omitted: read one per line")
    conversations = sub.add_parser("conversations", help="list recent conversations")
    _client_arguments(conversations)
    conversations.add_argument("--limit", type=int, default=20, help="how many (1-100)")
    hash_key = sub.add_parser(
        "hash-key",
        help="print the hashed CHATRELAY_API_KEYS entry for a key read from stdin",
        description="Reads a client key from stdin (prompting without echo on a terminal) and"
        " prints TENANT:sha256:<hex>, an entry that accepts that key without holding it.",
    )
    hash_key.add_argument("tenant", help="the tenant the key belongs to")
    return parser


def _client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", help="the service (default: $CHATRELAY_URL, else http://127.0.0.1:8000)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def _run_client(args: argparse.Namespace) -> int:
    """`chat` and `conversations`: one line on stderr and exit 1 for any client error."""
    from chatrelay.client import ChatRelayClientError, Client
    from chatrelay.client.terminal import EXIT_CANCELLED, Terminal

    try:
        with Client(args.url) as client:
            terminal = Terminal(client, json_output=args.json)
            if args.command == "conversations":
                return terminal.list_conversations(args.limit)
            terminal.conversation_id = args.conversation
            terminal.model = args.model
            if args.question is None:
                return terminal.loop()
            return terminal.ask(args.question)
    except ChatRelayClientError as exc:
        print(f"chatrelay: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return EXIT_CANCELLED
    except BrokenPipeError:
        # The reader left (`| head`): quiet, and no second error when Python flushes stdout.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


async def _preflight(settings: Settings, *, prepare_storage: bool) -> None:
    """Open the database and apply migrations before binding the port, to fail in one line.

    With `prepare_storage` (a pool of workers) this process also replays the spool and
    recovers orphans, once, before any worker runs: a worker (re)starting later must not.
    """
    from chatrelay.storage.database import Database
    from chatrelay.storage.migrations import apply_migrations

    db = Database(settings.database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    await db.connect()
    try:
        await apply_migrations(db)
        if prepare_storage:
            from chatrelay.generation.startup import prepare_storage as prepare
            from chatrelay.storage.repository import Repository
            from chatrelay.storage.spool import Spool

            await prepare(Repository(db), Spool(settings.data_dir / "spool"))
    finally:
        await db.disconnect()


def _workers_problem(workers: int, settings: Settings) -> str | None:
    """Several workers share generations through Redis; without it they cannot."""
    if workers < 1:
        return f"--workers must be at least 1, got {workers}"
    if workers > 1 and settings.redis_url is None:
        return (
            f"--workers {workers} needs REDIS_URL: worker processes follow, resume and "
            "cancel each other's generations through Redis (or use --workers 1)"
        )
    return None


def _port_problem(host: str, port: int) -> str | None:
    """Why the address cannot be bound (e.g. already in use), checked before start-up."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return exc.strerror or str(exc)
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _warn_about_descriptors(max_connections: int) -> None:
    """The connection cap only holds if the process may open that many sockets: past the
    file-descriptor limit, accepting fails (and is retried) instead of answering 503."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + 64  # the database, Redis, the upstream, logs
    if soft != resource.RLIM_INFINITY and soft < needed:
        logging.getLogger("chatrelay").warning(
            "open-file limit %d is below CHATRELAY_MAX_CONNECTIONS (%d) plus headroom: "
            "raise it (ulimit -n %d) or lower the cap",
            soft,
            max_connections,
            needed,
        )


def _hash_key(tenant: str) -> int:
    """The key comes from stdin, never from argv: a command line shows up in `ps` and history."""
    from chatrelay.keys import hashed_entry

    tenant = tenant.strip()
    if not tenant or any(c in tenant for c in ":,") or not tenant.isprintable():
        print("chatrelay: the tenant must be non-empty, without ':' or ','", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        import getpass

        key = getpass.getpass("client key: ")
    else:
        key = sys.stdin.readline()
    if not key.strip():
        print("chatrelay: no key on stdin", file=sys.stderr)
        return 2
    print(hashed_entry(tenant, key))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "hash-key":
        return _hash_key(args.tenant)
    if args.command != "serve":
        return _run_client(args)
    if not 0 < args.port < 65536:
        print(f"chatrelay: --port must be between 1 and 65535, got {args.port}", file=sys.stderr)
        return 2
    from chatrelay.logs import configure_logging
    from chatrelay.web.log_redaction import QueryRedactionFilter

    try:
        settings = load_settings()
    except ChatRelayError as exc:
        print(f"chatrelay: {exc.message}", file=sys.stderr)
        return 2
    # Every record this handler writes has query credentials redacted, whatever logged it.
    configure_logging(args.log_level, settings.log_format, filters=[QueryRedactionFilter()])
    # httpx logs a line per upstream call, and httpcore's debug lines carry raw headers
    # (which could echo the upstream key): neither goes below WARNING.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    problem = _port_problem(args.host, args.port)
    if problem is not None:
        print(f"chatrelay: cannot listen on {args.host}:{args.port}: {problem}", file=sys.stderr)
        return 1

    workers_problem = _workers_problem(args.workers, settings)
    if workers_problem is not None:
        print(f"chatrelay: {workers_problem}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_preflight(settings, prepare_storage=args.workers > 1))
    except ChatRelayError as exc:
        print(f"chatrelay: {exc.message}", file=sys.stderr)
        return 2 if exc.code == "config_error" else 1
    if args.workers > 1:
        return _serve_workers(args, settings)

    from chatrelay import collector
    from chatrelay.web import log_redaction
    from chatrelay.web.app import create_app
    from chatrelay.web.server import DrainingServer, server_config

    app = create_app(settings)
    config = server_config(app, settings, host=args.host, port=args.port, log_level=args.log_level)
    # After uvicorn.Config, which (re)configures uvicorn's loggers: `?token=` of a
    # stream_url is a credential and must not reach the access log.
    log_redaction.install()
    _warn_about_descriptors(settings.max_connections)
    server = DrainingServer(config, app, settings.shutdown_grace)
    collector.tune(settings.gc_threshold)
    server.run()
    return 0 if server.started else 1


def _serve_workers(args: argparse.Namespace, settings: Settings) -> int:
    """Bind the port here, then run `--workers` processes on it until a signal."""
    from chatrelay.web.workers import WorkerPool, bind_listener

    try:
        sock = bind_listener(args.host, args.port)
    except OSError as exc:
        print(
            f"chatrelay: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    port: int = sock.getsockname()[1]
    logging.getLogger("chatrelay").info(
        "listening on http://%s:%d with %d workers", args.host, port, args.workers
    )
    pool = WorkerPool(settings, sock, host=args.host, log_level=args.log_level, count=args.workers)
    return pool.run()


if __name__ == "__main__":
    raise SystemExit(main())
