"""`chatrelay serve`: validate configuration, check the database, run uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import logging
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
    return parser


async def _preflight(settings: Settings) -> None:
    """Open the database and apply migrations before binding the port, to fail in one line."""
    from chatrelay.storage.database import Database
    from chatrelay.storage.migrations import apply_migrations

    db = Database(settings.database_url)
    await db.connect()
    try:
        await apply_migrations(db)
    finally:
        await db.disconnect()


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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 0 < args.port < 65536:
        print(f"chatrelay: --port must be between 1 and 65535, got {args.port}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs a line per upstream call, and httpcore's debug lines carry raw headers
    # (which could echo the upstream key): neither goes below WARNING.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    problem = _port_problem(args.host, args.port)
    if problem is not None:
        print(f"chatrelay: cannot listen on {args.host}:{args.port}: {problem}", file=sys.stderr)
        return 1

    try:
        settings = load_settings()
        asyncio.run(_preflight(settings))
    except ChatRelayError as exc:
        print(f"chatrelay: {exc.message}", file=sys.stderr)
        return 2 if exc.code == "config_error" else 1

    import uvicorn

    from chatrelay.web.app import create_app
    from chatrelay.web.server import DrainingServer

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        lifespan="on",
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace) + 5,
    )
    server = DrainingServer(config, app, settings.shutdown_grace)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    raise SystemExit(main())
