"""What the mock says and how it behaves: the answer text and the mode a request selects.

A mode is one of the mock's model names (`MockMode`); a `[[fault:NAME]]` marker in the last
user message beats the model name, so a chat UI that cannot pick models can still pick a fault.
The text is assembled from fixed sentences, seeded by a CRC of the message, so the same question
always gets the same answer.
"""

from __future__ import annotations

import re
import zlib
from enum import StrEnum
from typing import Any


class MockMode(StrEnum):
    """The mock's models, each a way to answer (see the package docstring)."""

    MOCK = "mock"
    SLOW = "mock-slow"
    STALL = "mock-stall"
    DROP = "mock-drop"
    ERROR = "mock-error"
    HTTP_500 = "mock-500"
    HTTP_429 = "mock-429"
    LENGTH = "mock-length"


MOCK_MODELS: list[str] = [mode.value for mode in MockMode]

_FAULT_MARKER = re.compile(r"\[\[fault:([A-Za-z0-9_-]+)\]\]")
_OPENERS = (
    'You asked: "{quote}".',
    'Your message starts with "{quote}".',
    'Thanks for writing "{quote}".',
)
_SENTENCES = (
    "This reply comes from chatrelay's built-in mock upstream, so no real model was consulted.",
    "Set OPENAI_API_KEY to talk to a real model instead.",
    "Each word arrives as its own chunk, which makes the streaming easy to watch.",
    "Pick a model such as mock-stall or mock-drop to see how upstream failures look.",
    "The text is deterministic, so the same question always gets the same answer.",
    "Nothing here was written by a language model; it is assembled from a few fixed sentences.",
)


def text_of(content: Any) -> str:
    """Message text, for both plain string content and OpenAI content-part lists."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def mock_answer(last_user_message: str) -> str:
    """The mock's reply: deterministic in the message, quoting its first words, 3-5 sentences."""
    cleaned = " ".join(_FAULT_MARKER.sub(" ", last_user_message).split())
    words = cleaned.split()
    seed = zlib.crc32(cleaned.encode())
    if words:
        quote = " ".join(words[:6]) + ("…" if len(words) > 6 else "")
        opener = _OPENERS[seed % len(_OPENERS)].format(quote=quote)
    else:
        opener = "Your message was empty, so there is nothing to quote."
    count = 2 + (seed >> 4) % 3
    start = (seed >> 8) % len(_SENTENCES)
    rest = [_SENTENCES[(start + i) % len(_SENTENCES)] for i in range(count)]
    return " ".join([opener, *rest])


def select_mode(model: str, last_user_message: str) -> MockMode:
    """A `[[fault:NAME]]` marker beats the model name; anything unknown means plain `mock`."""
    marker = _FAULT_MARKER.search(last_user_message)
    if marker:
        name = marker.group(1).lower()
        name = name if name.startswith("mock") else f"mock-{name}"
        if name in MOCK_MODELS:
            return MockMode(name)
    return MockMode(model) if model in MOCK_MODELS else MockMode.MOCK
