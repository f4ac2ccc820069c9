"""Keeping the upstream key out of every message: redaction, and the length limit it protects.

Upstreams echo keys ("Incorrect API key provided: sk-…"), whole, masked or cut short, and
chatrelay carries the upstream's own words into errors that reach clients, the database and
the log. Everything upstream-derived goes through `redact` (or `scrub`, for an error already
raised) on its way out of the client; `shorten` bounds a message after redaction, never before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from chatrelay.errors import UpstreamError

# The upstream key, or every secret of an upstream: its key, its extra headers' values, its
# proxy's password.
Secrets = str | Sequence[str] | None

_MAX_ERROR_MESSAGE = 300  # characters of the upstream's own message we carry
_REDACTED = "[redacted]"
_FRAGMENT = 8  # a run of this many characters of the key is treated as the key
_TOKEN = re.compile(r"[A-Za-z0-9_\-.~+/=*•…]+")
_MASK = re.compile(r"[*•…]|\.{3}")


def redact(text: str, secret: Secrets) -> str:
    """`text` with each secret removed: whole, any `_FRAGMENT`-long piece, or masked."""
    if not secret:
        return text
    if isinstance(secret, str):
        return _redact_one(text, secret)
    for one in secret:
        text = _redact_one(text, one)
    return text


def _redact_one(text: str, secret: str) -> str:
    """`text` with the secret removed: whole, any `_FRAGMENT`-long piece, or masked.

    Upstreams echo keys in several shapes: whole ("Incorrect API key provided: sk-…"),
    masked ("sk-proj-****…KwQA", OpenAI), or cut short (a prefix, by them or by our own
    truncation of a body). Every token of key-like characters is checked.
    """
    if not secret:
        return text
    text = text.replace(secret, _REDACTED)
    if len(secret) < _FRAGMENT:
        return text
    pieces = {secret[i : i + _FRAGMENT] for i in range(len(secret) - _FRAGMENT + 1)}

    def scrub_token(match: re.Match[str]) -> str:
        token = match.group(0)
        return _REDACTED if _leaks(token, secret, pieces) else token

    return _TOKEN.sub(scrub_token, text)


def _leaks(token: str, secret: str, pieces: set[str]) -> bool:
    parts = _MASK.split(token)  # the visible runs of a masked token (one run if unmasked)
    for part in parts:
        for i in range(len(part) - _FRAGMENT + 1):
            if part[i : i + _FRAGMENT] in pieces:
                return True
    if len(parts) > 1:
        # Masked: a visible head that starts the key or a visible tail that ends it.
        head, tail = parts[0], parts[-1].rstrip(".,;:")
        if len(head) >= 3 and secret.startswith(head):
            return True
        if len(tail) >= 4 and secret.endswith(tail):
            return True
    return False


def scrub(exc: UpstreamError, secret: Secrets) -> None:
    """Redact an error in place (the chunk assembler's in-band errors are not redacted)."""
    clean = redact(exc.message, secret)
    if clean != exc.message:
        exc.message = clean
        exc.args = (clean,)


def shorten(text: str, limit: int = _MAX_ERROR_MESSAGE) -> str:
    """Whitespace runs collapsed to one space, and at most `limit` characters (then `…`)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
