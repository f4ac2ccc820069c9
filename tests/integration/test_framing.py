"""SSE framing details that need a quiet stream: the keep-alive comment."""

from __future__ import annotations

from tests.conftest import Relay
from tests.fakes.sse_client import collect, content_of
from tests.fakes.upstream import Reply
from tests.integration.helpers import new_conversation, post_accepted

BACKENDS = ("sqlite",)  # the HTTP edge only: storage plays no part
RELAY_ENV = {"CHATRELAY_PING_INTERVAL": "0.3"}


async def test_ping_comment_when_quiet(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["before", " after"], first_delay=1.0))
    async with relay.client() as client:
        cid = await new_conversation(client)
        mid = (await post_accepted(client, cid, "quiet"))["assistant_message"]["id"]
        async with client.stream("GET", f"/v1/messages/{mid}/events") as response:
            got = await collect(response)
    pings = [f for f in got if f.comments == ["ping"] and f.event is None]
    assert pings, "a quiet stream must carry ': ping' comments"
    first_event = next(i for i, f in enumerate(got) if f.event == "start")
    first_delta = next(i for i, f in enumerate(got) if f.event == "delta")
    assert any(first_event < got.index(p) < first_delta for p in pings)
    assert content_of(got) == "before after"
