"""`Http11Transport`, chatrelay's own HTTP/1.1 connections to a direct upstream, against raw
servers on loopback sockets: how it frames requests and responses, when it keeps a
connection and when it drops one, and which httpx error each failure is (the classes
`http_errors` maps to chatrelay's codes)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from chatrelay.upstream.body import body_chunks
from chatrelay.upstream.http11 import Http11Transport
from tests.fakes.raw_http import answering, raw_server, read_request


@asynccontextmanager
async def _client(keepalive_expiry: float = 60.0) -> AsyncIterator[httpx.AsyncClient]:
    transport = Http11Transport(ssl.create_default_context(), keepalive_expiry=keepalive_expiry)
    async with httpx.AsyncClient(transport=transport) as client:
        yield client


def _answer(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def test_request_goes_out_whole_and_a_content_length_answer_is_read() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(_answer(b'{"ok": true}', b"content-type: application/json", b"x-a: 1"))
        await writer.drain()
        await reader.read()

    async with raw_server(handler) as (url, _), _client() as client:
        response = await client.post(f"{url}/v1/x?api-version=2", json={"a": 1})
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert response.headers["x-a"] == "1"
    assert response.reason_phrase == "OK"
    head, body = seen[0]
    assert head.startswith(b"POST /v1/x?api-version=2 HTTP/1.1\r\n")
    assert b"\r\nHost: 127.0.0.1:" in head
    assert body == b'{"a":1}'


async def test_a_streamed_request_body_goes_out_chunked() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(_answer(b"ok"))
        await writer.drain()

    async def parts() -> AsyncIterator[bytes]:
        yield b"one "
        yield b"two"

    async with raw_server(handler) as (url, _), _client() as client:
        response = await client.post(f"{url}/v1/x", content=parts())
    assert response.status_code == 200
    assert b"transfer-encoding: chunked" in seen[0][0].lower()
    assert seen[0][1] == b"one two"


async def test_chunks_arrive_as_the_server_sends_them_and_the_connection_is_reused() -> None:
    go_on = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(3):
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            await go_on.wait()
            writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
            await writer.drain()
        await reader.read()

    async with raw_server(handler) as (url, connections), _client() as client:
        for _ in range(3):
            go_on.clear()
            async with client.stream("POST", f"{url}/v1/x", json={}) as response:
                chunks = body_chunks(response)
                assert await asyncio.wait_for(anext(chunks), 5) == b"first"
                go_on.set()
                assert b"".join([c async for c in chunks]) == b"second"
    assert len(connections) == 1


async def test_a_body_left_unread_closes_its_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()

    async with raw_server(handler) as (url, connections), _client() as client:
        for _ in range(2):
            async with client.stream("POST", f"{url}/v1/x", json={}) as response:
                assert await anext(body_chunks(response)) == b"first"
    assert len(connections) == 2  # the first stream's connection could not be trusted again


async def test_a_body_delimited_by_the_end_of_the_connection_is_whole() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: a\n\n")
        await writer.drain()
        writer.write(b"data: b\n\n")
        await writer.drain()

    async with raw_server(handler) as (url, connections), _client() as client:
        for _ in range(2):
            async with client.stream("POST", f"{url}/v1/x", json={}) as response:
                body = b"".join([c async for c in body_chunks(response)])
            assert body == b"data: a\n\ndata: b\n\n"
    assert len(connections) == 2  # such a connection is never reused


async def test_an_interim_answer_is_skipped() -> None:
    async with (
        raw_server(answering(b"HTTP/1.1 100 Continue\r\n\r\n" + _answer(b"real"))) as (url, _),
        _client() as client,
    ):
        response = await client.post(f"{url}/v1/x", json={})
    assert (response.status_code, response.content) == (200, b"real")


async def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    # `answering` closes the connection after its answer: the client's pooled one is dead.
    async with raw_server(answering(_answer(b"once"))) as (url, connections), _client() as client:
        assert (await client.post(f"{url}/v1/x", json={})).content == b"once"
        await asyncio.sleep(0.05)  # the close reaches the client
        assert (await client.post(f"{url}/v1/x", json={})).content == b"once"
    assert len(connections) == 2


async def test_bytes_on_an_idle_connection_retire_it() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(_answer(b"first"))
        writer.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")  # unasked
        await writer.drain()
        await reader.read()

    async with raw_server(handler) as (url, connections), _client() as client:
        assert (await client.post(f"{url}/v1/x", json={})).content == b"first"
        await asyncio.sleep(0.05)
        async with asyncio.timeout(5):
            second = await client.post(f"{url}/v1/x", json={})
        assert second.content == b"first"
    assert len(connections) == 2


async def test_idle_connections_expire() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(_answer(b"ok"))
            await writer.drain()

    async with raw_server(handler) as (url, connections), _client(keepalive_expiry=0.1) as client:
        await client.post(f"{url}/v1/x", json={})
        await client.post(f"{url}/v1/x", json={})
        assert len(connections) == 1
        await asyncio.sleep(0.3)
        await client.post(f"{url}/v1/x", json={})
    assert len(connections) == 2


async def test_a_large_body_read_slowly_arrives_whole() -> None:
    body = bytes(range(256)) * 8192  # 2 MiB, well over the point where reading pauses

    async with (
        raw_server(answering(_answer(body))) as (url, _),
        _client() as client,
        client.stream("POST", f"{url}/v1/x", json={}) as response,
    ):
        received = bytearray()
        async for chunk in body_chunks(response):
            received += chunk
            await asyncio.sleep(0)  # a slow reader
    assert bytes(received) == body


async def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    async with _client() as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(f"http://127.0.0.1:{port}/v1/x", json={})


@pytest.mark.parametrize(
    "answer",
    [
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: zebra\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (70 * 1024) + b"\r\n\r\n",
    ],
    ids=["not-http", "bad-length", "huge-headers"],
)
async def test_an_answer_that_is_not_http_is_a_protocol_error(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        await reader.read()

    async with raw_server(handler) as (url, _), _client() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(f"{url}/v1/x", json={})


async def test_server_gone_before_answering_is_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with raw_server(handler) as (url, _), _client() as client:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client.post(f"{url}/v1/x", json={})


async def test_a_reset_mid_body_is_a_read_or_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()  # RST

    async with (
        raw_server(handler) as (url, _),
        _client() as client,
        client.stream("POST", f"{url}/v1/x", json={}) as response,
    ):
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            async for _ in body_chunks(response):
                pass


async def test_read_timeout_applies_to_the_answer_and_to_each_read() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(1)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        await writer.drain()
        await reader.read()

    async with raw_server(handler) as (url, _), _client() as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"{url}/v1/x", json={}, timeout=0.2)
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"{url}/v1/x", json={}, timeout=1.5)  # head in time, body not


async def test_a_header_with_a_line_break_is_refused_before_sending() -> None:
    async with raw_server(answering(_answer(b"ok"))) as (url, connections), _client() as client:
        request = httpx.Request("POST", f"{url}/v1/x", headers={"x-a": "b\r\nx-evil: 1"})
        with pytest.raises(httpx.LocalProtocolError):
            await client.send(request)
    assert connections == []


async def test_the_trace_hears_when_the_request_goes_out() -> None:
    heard: list[str] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        heard.append("server read the request")
        writer.write(_answer(b"ok"))
        await writer.drain()

    async def trace(name: str, info: dict[str, object]) -> None:
        heard.append(name)

    async with raw_server(handler) as (url, _), _client() as client:
        request = httpx.Request("POST", f"{url}/v1/x", extensions={"trace": trace})
        await client.send(request)
    assert heard == ["http11.send_request_headers.started", "server read the request"]


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (  # chunk extensions and trailers, which HTTP/1.1 allows
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5;name=value\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n",
            b"hello",
        ),
        (  # an HTTP/1.0 server: the body ends with the connection
            b"HTTP/1.0 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: old\n\n",
            b"data: old\n\n",
        ),
    ],
    ids=["chunk-extensions-and-trailers", "http-1.0"],
)
async def test_older_and_rarer_framings_are_read(answer: bytes, body: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        if b"HTTP/1.0" not in answer:
            await reader.read()

    async with raw_server(handler) as (url, _), _client() as client:
        async with asyncio.timeout(5):
            response = await client.post(f"{url}/v1/x", json={})
    assert (response.status_code, response.content) == (200, body)


def _early_request(url: str, body: bytes) -> httpx.Request:
    request = httpx.Request(
        "POST",
        f"{url}/v1/chat",
        headers={"Content-Length": str(len(body))},
        stream=httpx.ByteStream(body),
    )
    request.read()
    return request


async def test_send_early_writes_at_once_on_an_idle_connection_the_answer_awaited_later() -> None:
    arrived: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            arrived.put_nowait(await read_request(reader))
            writer.write(_answer(b"answer"))
            await writer.drain()

    transport = Http11Transport(ssl.create_default_context())
    async with raw_server(handler) as (url, connections):
        request = _early_request(url, b"first")
        assert not transport.send_early(request), "no idle connection yet: nothing sent"
        response = await transport.handle_async_request(request)
        await response.aread()
        await response.aclose()  # read to its end: the connection is idle in the pool
        assert (await arrived.get())[1] == b"first"

        early = _early_request(url, b"second")
        assert transport.send_early(early)
        # The server has it before anyone asks for the answer.
        head, body = await asyncio.wait_for(arrived.get(), 5)
        assert body == b"second" and head.startswith(b"POST /v1/chat HTTP/1.1\r\n")
        response = await transport.handle_async_request(early)
        assert response.status_code == 200
        assert await response.aread() == b"answer"
        await response.aclose()
        await asyncio.sleep(0.05)
        assert arrived.empty(), "the early request went out once"
        assert len(connections) == 1, "on the pooled connection"
    await transport.aclose()


async def test_discard_early_closes_the_connection_whose_answer_nobody_waits_for() -> None:
    closed = asyncio.Event()
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_request(reader)
        writer.write(_answer(b"one"))
        await writer.drain()
        await read_request(reader)  # the early request
        served += 1
        await reader.read()  # until the client closes
        closed.set()

    transport = Http11Transport(ssl.create_default_context())
    async with raw_server(handler) as (url, connections):
        request = _early_request(url, b"first")
        response = await transport.handle_async_request(request)
        await response.aread()
        await response.aclose()
        early = _early_request(url, b"dropped")
        assert transport.send_early(early)
        transport.discard_early(early)
        await asyncio.wait_for(closed.wait(), 5)
        assert served == 1
        # The pool no longer holds it: the next request opens a new connection.
        assert not transport.send_early(_early_request(url, b"next"))
        assert len(connections) == 1
    await transport.aclose()
