"""chatrelay.client against the real service: exact text across drops and a restart, and
typed errors; a 429 comes from a tiny fake server, since the service does not limit yet."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chatrelay.client import (
    AsyncClient,
    AuthenticationError,
    Client,
    ConflictError,
    Event,
    EventKind,
    NotFoundError,
    RateLimitedError,
)
from tests.conftest import CLIENT_KEYS, Relay, Stack
from tests.fakes.tcp_proxy import TcpProxy
from tests.fakes.upstream import Reply
from tests.integration.helpers import stored_row

KEY = CLIENT_KEYS["acme"]
UNKNOWN_MESSAGE = "msg_" + "0" * 26


def deltas(events: list[Event]) -> str:
    return "".join(e.content for e in events if e.kind is EventKind.DELTA)


def assert_exactly_once(events: list[Event], first_id: int = 1) -> None:
    assert [e.id for e in events] == list(range(first_id, first_id + len(events)))
    assert events[-1].is_terminal
    assert not any(e.is_terminal for e in events[:-1])


@pytest.fixture
def proxy(relay: Relay) -> Iterator[TcpProxy]:
    made = TcpProxy(relay.service.port).start()
    try:
        yield made
    finally:
        made.stop()


async def test_follow_through_dropped_connections_yields_the_stored_text(
    relay: Relay, proxy: TcpProxy
) -> None:
    tokens = [f" w{i}" for i in range(150)]
    relay.upstream.enqueue(Reply(tokens=tokens, delay=0.01))
    async with AsyncClient(proxy.base_url, KEY, max_reconnect_delay=0.05) as client:
        conversation = await client.create_conversation("drops")
        posted = await client.post_message(conversation["id"], "a long answer, please")
        seen: list[Event] = []
        async for event in client.follow(posted.message_id):
            seen.append(event)
            if event.kind is EventKind.DELTA and event.id % 25 == 0:
                assert proxy.drop() >= 1
        final = await client.get_message(posted.message_id)
    assert proxy.drops == 6 and proxy.accepted >= 7
    assert_exactly_once(seen)
    assert seen[0].kind is EventKind.START and seen[-1].kind is EventKind.DONE
    stored = await stored_row(relay.database_url, posted.message_id)
    assert deltas(seen) == "".join(tokens) == stored["content"] == final["content"]
    assert seen[-1].message is not None and seen[-1].message["status"] == "completed"


def test_follow_through_a_service_restart_of_a_finished_message(stack: Stack) -> None:
    first = stack.service()
    tokens = [f" r{i}" for i in range(200)]
    stack.upstream.enqueue(Reply(tokens=tokens))
    # Paced: the finished message's stream is still on the wire when the service dies.
    proxy = TcpProxy(first.port, pace=(256, 0.01)).start()

    def restart() -> None:
        first.kill()  # SIGKILL: only the database knows the message now
        proxy.drop()  # and what was still in flight is lost
        proxy.retarget(stack.service().port)

    restarter = threading.Thread(target=restart)
    try:
        with Client(proxy.base_url, KEY, max_reconnects=40, max_reconnect_delay=0.25) as client:
            cid = client.create_conversation("restart")["id"]
            mid = client.post_message(cid, "then restart").message_id
            while client.get_message(mid)["status"] == "streaming":
                time.sleep(0.05)
            seen: list[Event] = []
            for event in client.follow(mid):
                seen.append(event)
                if len(seen) == 40:
                    restarter.start()  # while the client keeps reading and reconnecting
    finally:
        restarter.join(30)
        proxy.stop()
    assert len(seen) > 40 and proxy.drops == 1
    assert proxy.attempts >= 3  # the client tried at least once while no service was up
    assert_exactly_once(seen)
    stored = asyncio.run(stored_row(stack.database_url, mid))
    assert stored["status"] == "completed"
    assert deltas(seen) == "".join(tokens) == stored["content"]


async def test_follow_from_a_persisted_cursor(relay: Relay) -> None:
    tokens = ["one", " two", " three", " four", " five", " six"]
    relay.upstream.enqueue(Reply(tokens=tokens))
    async with AsyncClient(relay.url, KEY) as client:
        cid = (await client.create_conversation("cursor"))["id"]
        mid = (await client.post_message(cid, "count")).message_id
        whole = [event async for event in client.follow(mid)]
        tail = [event async for event in client.follow(mid, last_event_id=4)]
        after_end = [event async for event in client.follow(mid, last_event_id=whole[-1].id)]
    assert_exactly_once(tail, first_id=5)
    assert tail == whole[4:]
    assert deltas(tail) == " four five six"
    assert after_end == []  # the terminal event's id: 204, a clean end


def test_sync_client_posts_lists_cancels(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=[f" s{i}" for i in range(400)], delay=0.02))
    with Client(relay.url, KEY) as client:
        conversation = client.create_conversation("sync", metadata={"from": "test"})
        posted = client.post_message(conversation["id"], "slow", params={"temperature": 0.1})
        assert posted.user_message is not None and posted.user_message["content"] == "slow"
        assert "token=" in posted.stream_url
        seen: list[Event] = []
        for event in client.follow(posted.message_id):
            seen.append(event)
            if len(seen) == 5:
                assert client.cancel(posted.message_id)["status"] == "cancelled"
        listed = client.list_conversations(limit=100)
        read = client.get_conversation(conversation["id"])
        with pytest.raises(ConflictError) as conflict:
            client.cancel(posted.message_id)
    assert conflict.value.code == "message_finished" and conflict.value.status == 409
    assert conversation["id"] in [c["id"] for c in listed.data]
    assert [m["role"] for m in read["messages"]] == ["user", "assistant"]
    assert seen[-1].kind is EventKind.DONE
    assert seen[-1].message is not None and seen[-1].message["status"] == "cancelled"
    assert deltas(seen) == seen[-1].message["content"] == read["messages"][1]["content"]


async def test_typed_errors_401_and_404(relay: Relay) -> None:
    async with AsyncClient(relay.url, "not-a-key") as stranger:
        with pytest.raises(AuthenticationError) as unauthorized:
            await stranger.list_conversations()
    assert (unauthorized.value.status, unauthorized.value.code) == (401, "unauthorized")
    async with AsyncClient(relay.url, KEY) as client:
        with pytest.raises(NotFoundError) as missing:
            await client.get_message(UNKNOWN_MESSAGE)
        with pytest.raises(NotFoundError):
            await client.get_conversation("conv_" + "0" * 26)
        with pytest.raises(NotFoundError):  # at once, not after reconnects
            [event async for event in client.follow(UNKNOWN_MESSAGE)]
    assert (missing.value.status, missing.value.code) == (404, "not_found")


class _Limited(BaseHTTPRequestHandler):
    """Answers `429 Retry-After: 1` to the first `limited` requests, then a conversation."""

    limited = 0
    seen: list[float] = []

    def do_GET(self) -> None:
        type(self).seen.append(time.monotonic())
        if len(type(self).seen) <= type(self).limited:
            self._answer(429, {"error": {"code": "rate_limited", "message": "slow down"}})
        elif self.path.endswith("/events"):
            self.send_response(204)
            self.end_headers()
        else:
            self._answer(200, {"id": "conv_1", "messages": []})

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 429:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def limited_server() -> Iterator[tuple[str, type[_Limited]]]:
    handler = type("Handler", (_Limited,), {"limited": 1, "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_429_waits_retry_after_then_succeeds(limited_server: tuple[str, type[_Limited]]) -> None:
    url, handler = limited_server
    with Client(url, "k") as client:
        assert client.get_conversation("conv_1")["id"] == "conv_1"
    first, second = handler.seen
    assert second - first >= 1.0


def test_429_raises_rate_limited_when_out_of_retries(
    limited_server: tuple[str, type[_Limited]],
) -> None:
    url, handler = limited_server
    with Client(url, "k", max_retries=0) as client, pytest.raises(RateLimitedError) as caught:
        client.get_conversation("conv_1")
    assert (caught.value.status, caught.value.code, caught.value.retry_after) == (
        429,
        "rate_limited",
        1.0,
    )
    assert len(handler.seen) == 1


async def test_follow_waits_out_a_429(limited_server: tuple[str, type[_Limited]]) -> None:
    url, handler = limited_server
    async with AsyncClient(url, "k") as client:
        assert [event async for event in client.follow("msg_1", last_event_id=3)] == []
    first, second = handler.seen
    assert second - first >= 1.0
