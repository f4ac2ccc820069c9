"""The Ctrl-C rule of `chatrelay chat`: ask once on a terminal, cancel at once without one."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest

from chatrelay.client import Client
from chatrelay.client.terminal import Terminal


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def answering(reply: str | type[BaseException]) -> Callable[[str], str]:
    def read_line(prompt: str) -> str:
        assert "cancel the generation? [y/N]" in prompt
        if isinstance(reply, str):
            return reply
        raise reply

    return read_line


@pytest.mark.parametrize(
    ("reply", "cancels"),
    [("y", True), ("YES\n", True), ("", False), ("n", False), (KeyboardInterrupt, True)],
)
def test_on_a_terminal_it_asks_once(reply: str | type[BaseException], cancels: bool) -> None:
    with Client("http://127.0.0.1:9") as client:
        terminal = Terminal(client, stdin=TTY(), stderr=TTY(), read_line=answering(reply))
        assert terminal._confirm_cancel() is cancels


def test_eof_at_the_question_keeps_following() -> None:
    with Client("http://127.0.0.1:9") as client:
        terminal = Terminal(client, stdin=TTY(), stderr=TTY(), read_line=answering(EOFError))
        assert terminal._confirm_cancel() is False


def test_without_a_terminal_it_cancels_at_once() -> None:
    def never(prompt: str) -> str:
        raise AssertionError("asked without a terminal")

    with Client("http://127.0.0.1:9") as client:
        terminal = Terminal(client, stdin=io.StringIO(), stderr=io.StringIO(), read_line=never)
        assert terminal._confirm_cancel() is True
