"""The upstream body as `body_chunks` reads it, over a real loopback socket, through both
transports: chatrelay's own HTTP/1.1 connections (`Http11Transport`, direct upstreams) and
aiohttp's (`UpstreamTransport`, behind a proxy).

An event stream with no content coding is read from the transport's own stream directly
(not through httpx's `aiter_bytes`); these check that this shortcut still streams, still
undoes nothing it should undo, maps a broken body like the rest of the transport, and
leaves the connection reusable.
"""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import Callable

import httpx
import pytest

from chatrelay.upstream.body import body_chunks
from chatrelay.upstream.http11 import Http11Transport
from chatrelay.upstream.transport import UpstreamTransport
from tests.fakes.raw_http import raw_server, read_request


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"


PATH = "/v1/chat/completions"


TRANSPORTS: dict[str, Callable[[ssl.SSLContext], httpx.AsyncBaseTransport]] = {
    "http11": Http11Transport,
    "aiohttp": UpstreamTransport,
}


@pytest.fixture(params=sorted(TRANSPORTS))
def transport_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def make_client(transport_name: str) -> Callable[[], httpx.AsyncClient]:
    def make() -> httpx.AsyncClient:
        transport = TRANSPORTS[transport_name](ssl.create_default_context())
        return httpx.AsyncClient(transport=transport)

    return make


async def test_plain_stream_is_read_chunk_by_chunk_from_the_transport(
    make_client: Callable[[], httpx.AsyncClient],
) -> None:
    second_may_go = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(HEAD + b"\r\n" + _chunk(b"data: one\n\n"))
        await writer.drain()
        await asyncio.wait_for(second_may_go.wait(), 10)
        writer.write(_chunk(b"data: two\n\n") + b"0\r\n\r\n")
        await writer.drain()

    async with (
        raw_server(handler) as (base, _),
        make_client() as client,
        client.stream("POST", base + PATH, json={}) as response,
    ):
        chunks = body_chunks(response)
        # The transport's own reader, not httpx's re-chunking generators.
        assert getattr(chunks, "__qualname__", "") in ("_Body.__aiter__", "_Connection.body")
        first = await asyncio.wait_for(anext(chunks), 10)
        assert first == b"data: one\n\n"  # arrived while the server still waits
        second_may_go.set()
        rest = [chunk async for chunk in chunks]
    assert b"".join(rest) == b"data: two\n\n"


async def test_compressed_stream_is_still_decoded(
    make_client: Callable[[], httpx.AsyncClient],
) -> None:
    raw = b"data: zipped\n\n" * 50

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(HEAD + b"content-encoding: gzip\r\n\r\n" + _chunk(gzip.compress(raw)))
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with (
        raw_server(handler) as (base, _),
        make_client() as client,
        client.stream("POST", base + PATH, json={}) as response,
    ):
        body = b"".join([chunk async for chunk in body_chunks(response)])
    assert body == raw


async def test_body_cut_short_is_an_httpx_protocol_error(
    make_client: Callable[[], httpx.AsyncClient],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(HEAD + b"\r\n" + _chunk(b"data: one\n\n") + b"40\r\npartial")
        await writer.drain()
        writer.transport.abort()

    async with (
        raw_server(handler) as (base, _),
        make_client() as client,
        client.stream("POST", base + PATH, json={}) as response,
    ):
        received = []
        with pytest.raises(httpx.RemoteProtocolError):
            async for chunk in body_chunks(response):
                received.append(chunk)
    assert b"".join(received).startswith(b"data: one\n\n")  # what came before the cut


async def test_connection_is_reused_once_the_body_is_read(
    make_client: Callable[[], httpx.AsyncClient],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await read_request(reader)
            writer.write(HEAD + b"\r\n" + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            await writer.drain()
        await reader.read()

    async with raw_server(handler) as (base, connections), make_client() as client:
        for _ in range(2):
            async with client.stream("POST", base + PATH, json={}) as response:
                body = b"".join([chunk async for chunk in body_chunks(response)])
            assert body == b"data: [DONE]\n\n"
    assert len(connections) == 1
