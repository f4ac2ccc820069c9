"""The upstream's host name resolved once per TTL and shared by concurrent connections, and
a host with several addresses connected to through the first that answers. The event
loop's `getaddrinfo` is replaced where a test needs a name that does not exist here."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import httpx
import pytest

from chatrelay.upstream.http11 import Http11Transport
from chatrelay.upstream.resolver import Resolver
from tests.fakes.raw_http import answering, raw_server


class CountingLookups:
    """Stands in for the loop's resolver: answers a fixed list, counts the calls."""

    def __init__(self, answer: list[tuple[Any, ...]] | Exception, delay: float = 0.05) -> None:
        self.answer = answer
        self.delay = delay
        self.calls = 0

    async def __call__(self, host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _info(ip: str, port: int) -> tuple[Any, ...]:
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port))


@pytest.fixture
async def lookups(monkeypatch: pytest.MonkeyPatch) -> CountingLookups:
    fake = CountingLookups([_info("127.0.0.1", 80)])
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake)
    return fake


async def test_an_ip_address_is_not_looked_up(lookups: CountingLookups) -> None:
    infos = await Resolver().resolve("127.0.0.1", 8080)
    assert [info[4] for info in infos] == [("127.0.0.1", 8080)]
    infos = await Resolver().resolve("::1", 8080)
    assert infos[0][0] == socket.AF_INET6
    assert lookups.calls == 0


async def test_concurrent_lookups_of_one_name_share_one(lookups: CountingLookups) -> None:
    resolver = Resolver()
    answers = await asyncio.gather(*(resolver.resolve("upstream.test", 80) for _ in range(50)))
    assert lookups.calls == 1
    assert all(answer == answers[0] for answer in answers)


async def test_an_answer_is_kept_for_the_ttl(lookups: CountingLookups) -> None:
    resolver = Resolver(ttl=0.2)
    await resolver.resolve("upstream.test", 80)
    await resolver.resolve("upstream.test", 80)
    assert lookups.calls == 1
    await asyncio.sleep(0.3)
    await resolver.resolve("upstream.test", 80)
    assert lookups.calls == 2


async def test_a_failed_lookup_reaches_every_waiter_and_is_not_kept(
    lookups: CountingLookups,
) -> None:
    lookups.answer = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    resolver = Resolver()
    results = await asyncio.gather(
        *(resolver.resolve("nowhere.test", 80) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, socket.gaierror) for r in results)
    assert lookups.calls == 1
    with pytest.raises(socket.gaierror):
        await resolver.resolve("nowhere.test", 80)
    assert lookups.calls == 2  # a failure is asked again, not remembered


async def test_a_caller_that_gives_up_leaves_the_lookup_to_the_others(
    lookups: CountingLookups,
) -> None:
    lookups.delay = 0.2
    resolver = Resolver()
    impatient = asyncio.ensure_future(resolver.resolve("upstream.test", 80))
    patient = asyncio.ensure_future(resolver.resolve("upstream.test", 80))
    await asyncio.sleep(0.05)
    impatient.cancel()
    assert [info[4] for info in await patient] == [("127.0.0.1", 80)]
    assert lookups.calls == 1


async def test_a_name_with_several_addresses_connects_through_one_that_answers(
    lookups: CountingLookups,
) -> None:
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    async with raw_server(answering(ok)) as (base, _):
        port = int(base.rsplit(":", 1)[1])
        # 127.0.0.2 is loopback too, but nothing listens there: refused, then the next.
        lookups.answer = [_info("127.0.0.2", port), _info("127.0.0.1", port)]
        transport = Http11Transport(ssl.create_default_context())
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.get(f"http://upstream.test:{port}/v1/models")
    assert (response.status_code, response.content) == (200, b"ok")
    assert lookups.calls == 1


async def test_a_name_that_does_not_resolve_is_a_connect_error(lookups: CountingLookups) -> None:
    lookups.answer = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    transport = Http11Transport(ssl.create_default_context())
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError, match="Name or service not known"):
            await client.get("http://nowhere.test/v1/models")
