"""A deliberately small, independent SSE reader for tests (LF framing, as chatrelay sends).

It is not chatrelay's parser on purpose: a test of the service's output should not trust
the code under test to read it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Frame:
    event: str | None = None
    id: str | None = None
    data: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        assert self.data is not None
        return json.loads(self.data)


def parse_frame(block: str) -> Frame:
    frame = Frame()
    for line in block.split("\n"):
        if line.startswith(":"):
            frame.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            frame.event = value
        elif name == "id":
            frame.id = value
        elif name == "data":
            frame.data = value if frame.data is None else frame.data + "\n" + value
        elif name == "retry":
            frame.retry = int(value)
    return frame


async def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """Frames as they arrive on the socket."""
    buffer = ""
    async for text in response.aiter_text():
        buffer += text.replace("\r\n", "\n")
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            if block:
                yield parse_frame(block)


async def collect(response: httpx.Response) -> list[Frame]:
    """Every frame until the stream ends (it ends after the terminal event)."""
    return [frame async for frame in frames(response)]


def events(collected: list[Frame]) -> list[Frame]:
    """Only the frames that are events (not `retry:` or comments)."""
    return [f for f in collected if f.event is not None]


def content_of(collected: list[Frame]) -> str:
    return "".join(f.json["content"] for f in collected if f.event == "delta")
