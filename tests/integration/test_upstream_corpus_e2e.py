"""The public upstream corpus, end to end: raw provider bytes over HTTP into a running chatrelay.

tests/unit/test_upstream_corpus.py replays each file through the parser and assembler in
process; here the fake upstream serves the same bytes over a real socket, cut into pieces of
a few sizes, to chatrelay running as a process on each backend. What a client sees — the SSE
events and the stored message — must be what manifest.json expects of the provider's stream.

Retries are off in this module: a corpus stream that fails must fail as recorded, not be
replaced by a second answer (the retry policy has its own tests in test_upstream_http.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Relay
from tests.fakes.sse_client import events
from tests.fakes.upstream import Reply
from tests.integration.helpers import new_conversation, post_streaming

CORPUS = Path(__file__).resolve().parents[1] / "data" / "upstream"
ENTRIES: dict[str, dict[str, Any]] = {
    entry["file"]: entry
    for entry in json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
}
# 1 byte: every boundary splits something (CRLF, UTF-8, BOM); 7: an odd size that drifts
# across lines; 0: the whole file in one write.
CHUNK_SIZES = (1, 7, 0)
RELAY_ENV = {"CHATRELAY_UPSTREAM_MAX_RETRIES": "0"}


def test_the_whole_corpus_is_covered() -> None:
    on_disk = {p.name for p in CORPUS.glob("*.sse")}
    assert len(ENTRIES) >= 30
    assert set(ENTRIES) == on_disk


def _calls_from_events(evs: list[Any]) -> list[dict[str, Any]]:
    """The tool calls the `tool_call` events build: each starts with id, type and name, then
    its argument pieces follow, possibly interleaved with other calls' pieces."""
    calls: dict[int, dict[str, Any]] = {}
    for e in evs:
        if e.event != "tool_call":
            continue
        if "arguments" in e.json:
            calls[e.json["index"]]["function"]["arguments"] += e.json["arguments"]
        else:
            assert e.json["index"] not in calls, "a call started twice"
            calls[e.json["index"]] = {
                "id": e.json["id"],
                "type": e.json["type"],
                "function": {"name": e.json["name"], "arguments": ""},
            }
    return [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES, ids=lambda n: f"chunk{n or 'all'}")
@pytest.mark.parametrize("name", sorted(ENTRIES))
async def test_corpus_stream_end_to_end(relay: Relay, name: str, chunk_size: int) -> None:
    expect = ENTRIES[name]["expect"]
    raw = (CORPUS / name).read_bytes()
    before = len(relay.upstream.requests)
    relay.upstream.enqueue(Reply(raw=raw, chunk_size=chunk_size or None))
    async with relay.client() as client:
        cid = await new_conversation(client, title=name)
        _, frames = await post_streaming(client, cid, f"replay {name}")
        evs = events(frames)
        mid = evs[0].json["message"]["id"]
        stored = (await client.get(f"/v1/messages/{mid}")).json()
    assert len(relay.upstream.requests) == before + 1, "exactly one upstream request"

    # The event stream: start, the pieces, one terminal event.
    kinds = [e.event for e in evs]
    assert kinds[0] == "start" and evs[0].json["message"]["status"] == "streaming"
    assert set(kinds[1:-1]) <= {"delta", "reasoning", "tool_call"}, kinds
    streamed = "".join(e.json["content"] for e in evs if e.event == "delta")
    thought = "".join(e.json["content"] for e in evs if e.event == "reasoning")
    assert streamed == expect["content"]
    assert thought == expect["reasoning"]
    pieces = [e for e in evs[1:-1] if e.event != "tool_call" or "arguments" in e.json]
    assert all(e.json.get("content", e.json.get("arguments")) for e in pieces), "an empty piece"
    assert _calls_from_events(evs) == expect["tool_calls"], "tool calls as streamed"

    # The stored message, and the same message in the terminal event.
    assert stored["content"] == expect["content"]
    assert (stored["reasoning"] or "") == expect["reasoning"]
    assert (stored["refusal"] or "") == expect["refusal"]
    assert stored["finish_reason"] == expect["finish_reason"]
    assert stored["usage"] == expect["usage"]
    assert (stored["tool_calls"] or []) == expect["tool_calls"]
    terminal = evs[-1]
    final = terminal.json["message"]
    # GET may add links (a stream_url) to the message; every field of the event must match.
    assert {key: stored.get(key) for key in final} == final
    if expect["outcome"] == "completed":
        assert terminal.event == "done"
        assert stored["status"] == "completed"
        assert stored["error"] is None
    else:
        assert terminal.event == "error"
        assert stored["status"] == "failed"
        assert stored["error"]["code"] == expect["error_code"]
        assert terminal.json["error"] == stored["error"]
        if "error_contains" in expect:
            assert expect["error_contains"] in stored["error"]["message"]
