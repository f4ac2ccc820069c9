"""Replays the public corpus of raw upstream streams through `SSEParser` + `ChunkAssembler`.

Each file in tests/data/upstream/ holds the bytes one provider sends for one quirk, as its
docs, SDK tests or bug reports show them (sources in manifest.json). Network reads split a
stream anywhere, so every file is replayed whole, one byte at a time, and at random split
points: all three must yield the same ChunkDeltas and end state, and that end state must be
the message and outcome the manifest records for the provider's stream.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatrelay.errors import UpstreamError, UpstreamTruncated
from chatrelay.sse.parser import SSEParser
from chatrelay.upstream.assembler import ChunkAssembler, ChunkDelta

CORPUS = Path(__file__).resolve().parents[1] / "data" / "upstream"
MANIFEST = CORPUS / "manifest.json"
OUTCOMES = {"completed", "truncated", "error"}
EXPECT_KEYS = {"content", "reasoning", "refusal", "finish_reason", "usage", "tool_calls", "outcome"}


def _load_manifest() -> list[dict[str, Any]]:
    if not MANIFEST.is_file():
        return []
    entries: list[dict[str, Any]] = json.loads(MANIFEST.read_text(encoding="utf-8"))
    return entries


ENTRIES = {entry["file"]: entry for entry in _load_manifest()}
ON_DISK = sorted(p.name for p in CORPUS.glob("*.sse")) if CORPUS.is_dir() else []
FILES = sorted(ENTRIES)


@dataclass(frozen=True)
class Replay:
    """Everything a replay produced, comparable as a whole."""

    deltas: tuple[ChunkDelta, ...]
    content: str
    reasoning: str
    refusal: str
    finish_reason: str | None
    usage: dict[str, Any] | None
    tool_calls: tuple[dict[str, Any], ...]
    done: bool
    outcome: str
    error_code: str | None
    error_message: str | None


def replay(pieces: Iterable[bytes]) -> Replay:
    """Feed the pieces as network reads, the way the upstream client does, then end the stream."""
    parser = SSEParser()
    assembler = ChunkAssembler()
    deltas: list[ChunkDelta] = []
    outcome, code, message = "completed", None, None
    try:
        for piece in pieces:
            for event in parser.feed(piece):
                delta = assembler.feed(event)
                if delta is not None:
                    deltas.append(delta)
        for event in parser.close():
            delta = assembler.feed(event)
            if delta is not None:
                deltas.append(delta)
        assembler.finish(parser.error_field)
    except UpstreamTruncated as exc:
        outcome, code, message = "truncated", exc.code, exc.message
    except UpstreamError as exc:
        outcome, code, message = "error", exc.code, exc.message
    return Replay(
        deltas=tuple(deltas),
        content=assembler.content,
        reasoning=assembler.reasoning,
        refusal=assembler.refusal,
        finish_reason=assembler.finish_reason,
        usage=assembler.usage,
        tool_calls=tuple(call.to_dict() for call in assembler.tool_calls),
        done=assembler.done,
        outcome=outcome,
        error_code=code,
        error_message=message,
    )


def raw(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


@cache
def whole(name: str) -> Replay:
    return replay([raw(name)])


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


# -- the corpus itself --------------------------------------------------------------------


def test_corpus_is_present() -> None:
    # Guards the parametrised tests below, which would otherwise pass by running on nothing
    # (e.g. a fresh clone where an ignore rule kept tests/data/ out of git).
    assert MANIFEST.is_file(), f"{MANIFEST} is missing (is tests/data/ ignored by git?)"
    assert len(ENTRIES) >= 15
    assert {entry["expect"]["outcome"] for entry in ENTRIES.values()} == OUTCOMES


@pytest.mark.parametrize("name", sorted(set(ON_DISK) | set(ENTRIES)))
def test_every_file_is_in_the_manifest_and_vice_versa(name: str) -> None:
    assert name in ON_DISK, f"manifest lists {name}, which is not in {CORPUS}"
    assert name in ENTRIES, f"{name} is not listed in manifest.json"


@pytest.mark.parametrize("name", FILES)
def test_manifest_entry_is_complete(name: str) -> None:
    entry = ENTRIES[name]
    assert entry["quirk"].strip()
    assert entry["source"].startswith("https://")
    expect = entry["expect"]
    assert set(expect) >= EXPECT_KEYS
    assert expect["outcome"] in OUTCOMES
    assert ("error_code" in expect) == (expect["outcome"] != "completed")


# -- replays ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_whole_stream_gives_the_expected_message(name: str) -> None:
    expect = ENTRIES[name]["expect"]
    got = whole(name)
    assert got.outcome == expect["outcome"], got.error_message
    assert got.error_code == expect.get("error_code")
    if "error_contains" in expect:
        assert got.error_message is not None
        assert expect["error_contains"] in got.error_message
    assert got.content == expect["content"]
    assert got.reasoning == expect["reasoning"]
    assert got.refusal == expect["refusal"]
    assert got.finish_reason == expect["finish_reason"]
    assert got.usage == expect["usage"]
    assert list(got.tool_calls) == expect["tool_calls"]


@pytest.mark.parametrize("name", FILES)
def test_deltas_add_up_to_the_message(name: str) -> None:
    """What the caller re-emits token by token is exactly the assembled message."""
    got = whole(name)
    assert "".join(d.content for d in got.deltas) == got.content
    assert "".join(d.reasoning for d in got.deltas) == got.reasoning
    assert "".join(d.refusal for d in got.deltas) == got.refusal
    reasons = [d.finish_reason for d in got.deltas if d.finish_reason is not None]
    assert (reasons[-1] if reasons else None) == got.finish_reason
    usages = [d.usage for d in got.deltas if d.usage is not None]
    assert (usages[-1] if usages else None) == got.usage
    assert all(d.chunk is not None for d in got.deltas)
    assert any(d.tool_calls for d in got.deltas) == bool(got.tool_calls)


@pytest.mark.parametrize("name", FILES)
def test_one_byte_reads_give_the_same_result(name: str) -> None:
    data = raw(name)
    assert replay(data[i : i + 1] for i in range(len(data))) == whole(name)


@pytest.mark.parametrize("name", FILES)
@settings(max_examples=50, deadline=None)
@given(draw=st.data())
def test_random_split_points_give_the_same_result(name: str, draw: st.DataObject) -> None:
    data = raw(name)
    cuts = draw.draw(st.lists(st.integers(min_value=1, max_value=len(data) - 1), max_size=24))
    assert replay(split(data, cuts)) == whole(name)
