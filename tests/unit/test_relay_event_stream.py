"""`RelayEventStream`'s own path (one sender task, the request's task listening) over a
real loopback socket, against sse-starlette's own path for the same frames; and under
`StreamHolder`, which holds the stream once the framework's frames have returned.

What must not change: the bytes and headers a client gets, the body generator's cleanup
when the client leaves, and a clean end of the chunked body when the server ends the
stream (`end_open_streams`) — also for a stream that starts after the server began to stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sse_starlette import EventSourceResponse
from sse_starlette.sse import AppStatus
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chatrelay.embedded_server import EmbeddedServer, bind_localhost
from chatrelay.errors import TooManyRequests
from chatrelay.slots import KeyedLimit
from chatrelay.web.app import RelayApp
from chatrelay.web.sse import (
    RelayEventStream,
    SlottedEventStream,
    StreamHolder,
    end_open_streams,
)

FRAMES = [b"id: 1\nevent: delta\ndata: {}\n\n", b"id: 2\nevent: done\ndata: {}\n\n"]
OPTIONS = {"headers": {"Cache-Control": "no-cache"}, "ping": 0, "sep": "\n"}


class Probe:
    """A body that yields `FRAMES`, then (when `hold`) waits; records how it ended."""

    def __init__(self, *, hold: bool = False) -> None:
        self.hold = hold
        self.sent = asyncio.Event()
        self.closed = asyncio.Event()

    async def frames(self) -> AsyncIterator[bytes]:
        try:
            for frame in FRAMES:
                yield frame
            self.sent.set()
            if self.hold:
                await asyncio.Event().wait()
        finally:
            self.closed.set()


@asynccontextmanager
async def serving_app(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """`app` served by uvicorn on 127.0.0.1; yields a client for it."""
    sock, port = bind_localhost()
    server = EmbeddedServer(app)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn sets a flag, not an event
        await asyncio.sleep(0.005)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@asynccontextmanager
async def serving(
    make: Callable[[], EventSourceResponse], raised: list[BaseException] | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, asyncio.Event]]:
    """An ASGI app answering every request with `make()`, on 127.0.0.1; yields a client for
    it and an event set when the app's call has returned (what it raised goes to `raised`)."""
    returned = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await make()(scope, receive, send)
        except Exception as exc:
            if raised is None:
                raise
            raised.append(exc)
        finally:
            returned.set()

    async with serving_app(app) as client:
        yield client, returned


@pytest.fixture(autouse=True)
def _exit_flag() -> Iterator[None]:
    yield None
    AppStatus.should_exit = False


def _wire_headers(response: httpx.Response) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in response.headers.items() if k not in ("date",))


async def test_same_bytes_and_headers_as_sse_starlettes_own_path() -> None:
    answers = []
    for kind in (EventSourceResponse, RelayEventStream):
        async with serving(lambda kind=kind: kind(Probe().frames(), **OPTIONS)) as (client, _):
            answers.append(await client.get("/"))
    theirs, ours = answers
    assert ours.status_code == theirs.status_code == 200
    assert ours.content == theirs.content == b"".join(FRAMES)
    assert _wire_headers(ours) == _wire_headers(theirs)


async def test_client_leaving_ends_the_body_and_the_call() -> None:
    probe = Probe(hold=True)
    async with serving(lambda: RelayEventStream(probe.frames(), **OPTIONS)) as (client, returned):
        async with client.stream("GET", "/") as response:
            received = b""
            async for chunk in response.aiter_bytes():
                received += chunk
                if received == b"".join(FRAMES):
                    break
        # The connection is closed; the generator, parked waiting for more, is ended.
        await asyncio.wait_for(probe.closed.wait(), 5)
        await asyncio.wait_for(returned.wait(), 5)


async def test_end_open_streams_ends_the_body_cleanly() -> None:
    probe = Probe(hold=True)
    async with serving(lambda: RelayEventStream(probe.frames(), **OPTIONS)) as (client, returned):

        async def stop_when_sent() -> None:
            await probe.sent.wait()
            end_open_streams()

        stopper = asyncio.create_task(stop_when_sent())
        response = await asyncio.wait_for(client.get("/"), 5)  # a complete chunked body
        await stopper
        assert response.content == b"".join(FRAMES)
        assert probe.closed.is_set()
        await asyncio.wait_for(returned.wait(), 5)


async def test_a_stream_opened_while_stopping_is_an_empty_finished_body() -> None:
    probe = Probe()
    AppStatus.should_exit = True
    async with serving(lambda: RelayEventStream(probe.frames(), **OPTIONS)) as (client, _):
        response = await asyncio.wait_for(client.get("/"), 5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content == b""


async def test_a_failing_body_fails_the_response() -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield FRAMES[0]
        raise RuntimeError("the body broke")

    raised: list[BaseException] = []
    make = lambda: RelayEventStream(failing(), **OPTIONS)  # noqa: E731
    async with serving(make, raised) as (client, returned):
        async with client.stream("GET", "/") as response:
            received = b""
            with pytest.raises(httpx.RemoteProtocolError):  # no clean end of the body
                async for chunk in response.aiter_bytes():
                    received += chunk
        await asyncio.wait_for(returned.wait(), 5)
    assert received == FRAMES[0]
    assert [str(exc) for exc in raised] == ["the body broke"]


class Returned:
    """A pure ASGI middleware (as Starlette's own are) noting when its call returned."""

    def __init__(self, app: ASGIApp, event: asyncio.Event) -> None:
        self.app, self.event = app, event

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            self.event.set()


@asynccontextmanager
async def serving_relay_app(
    make: Callable[[], EventSourceResponse],
) -> AsyncIterator[tuple[httpx.AsyncClient, asyncio.Event, asyncio.Event]]:
    """`make()` answering `/` as chatrelay's app is stacked: `RelayApp`, a middleware
    outside `StreamHolder` (as Instrumentation is) and one inside it; yields a client, an
    event set when the inner middleware's call returned, and one set when the outer's
    did."""
    framework_returned, returned = asyncio.Event(), asyncio.Event()

    async def endpoint(request: Request) -> EventSourceResponse:
        return make()

    app = RelayApp(
        routes=[Route("/", endpoint)],
        middleware=[
            Middleware(Returned, event=returned),
            Middleware(StreamHolder),
            Middleware(Returned, event=framework_returned),
        ],
    )
    async with serving_app(app) as client:
        yield client, framework_returned, returned


def _refuse(key: str, limit: int) -> TooManyRequests:
    return TooManyRequests(f"{key} is full", code="too_many_subscribers")


async def test_under_relay_app_the_framework_returns_while_the_stream_is_held() -> None:
    """The request's dozen framework frames are not kept for the life of a stream; the
    slot, the body's cleanup and the app's own call still last until the client leaves."""
    probe = Probe(hold=True)
    limit = KeyedLimit(1, _refuse)
    make = lambda: SlottedEventStream(  # noqa: E731
        probe.frames(), slot=limit.acquire("m"), **OPTIONS
    )
    async with serving_relay_app(make) as (client, framework_returned, returned):
        async with client.stream("GET", "/") as response:
            received = b""
            async for chunk in response.aiter_bytes():
                received += chunk
                if received == b"".join(FRAMES):
                    break
            await asyncio.wait_for(framework_returned.wait(), 5)
            assert not returned.is_set(), (
                "outside StreamHolder the call lasts as long as the stream"
            )
            assert limit.count("m") == 1, "the subscriber's slot is held while it streams"
            assert not probe.closed.is_set()
        await asyncio.wait_for(probe.closed.wait(), 5)
        await asyncio.wait_for(returned.wait(), 5)
        assert limit.count("m") == 0, "the slot is released when the response has ended"


async def test_under_relay_app_a_server_ended_stream_ends_cleanly_and_runs_background() -> None:
    probe = Probe(hold=True)
    ran = asyncio.Event()

    async def background() -> None:
        ran.set()

    def make() -> EventSourceResponse:
        stream = RelayEventStream(probe.frames(), **OPTIONS)
        stream.background = background  # type: ignore[assignment]
        return stream

    async with serving_relay_app(make) as (client, framework_returned, returned):

        async def stop_when_sent() -> None:
            await probe.sent.wait()
            assert framework_returned.is_set() and not ran.is_set()
            end_open_streams()

        stopper = asyncio.create_task(stop_when_sent())
        response = await asyncio.wait_for(client.get("/"), 5)  # a complete chunked body
        await stopper
        assert response.content == b"".join(FRAMES)
        await asyncio.wait_for(returned.wait(), 5)
        assert ran.is_set(), "the background task runs once the stream has ended"
