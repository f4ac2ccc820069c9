"""`chatrelay chat` and `chatrelay conversations`: the client in a terminal.

The answer is followed with `Client.follow`, so a dropped connection or a restarted service
costs the reader nothing. Ctrl-C while an answer streams: on a terminal it asks once
whether to cancel the generation (`y`, or a second Ctrl-C, cancels; anything else goes on
following from the last event seen, nothing lost); without a terminal (a script, a
pipe) it cancels at once. Either way a cancel exits 130, or, in the interactive loop,
returns to the prompt.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from chatrelay.client.errors import ConflictError
from chatrelay.client.events import Event, EventKind
from chatrelay.client.sync import Client

__all__ = ["EXIT_CANCELLED", "Terminal"]

EXIT_CANCELLED = 130  # the shell's code for "stopped by SIGINT"
TITLE_CHARS = 60


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@dataclass
class Terminal:
    """One terminal session over `client`; `json_output` prints one JSON object per line."""

    client: Client
    conversation_id: str | None = None
    model: str | None = None
    json_output: bool = False
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    read_line: Callable[[str], str] = input

    def ask(self, question: str) -> int:
        """Post `question` and stream its answer; the exit code (0, 1 if it failed, 130)."""
        if self.conversation_id is None:
            conversation = self.client.create_conversation(question[:TITLE_CHARS])
            self.conversation_id = str(conversation["id"])
            self._note(
                f"new conversation {self.conversation_id}"
                f" (continue it with --conversation {self.conversation_id})"
            )
        posted = self.client.post_message(self.conversation_id, question, model=self.model)
        return self.stream(posted.message_id)

    def stream(self, message_id: str) -> int:
        """Print the message's events as they arrive, resuming after each declined Ctrl-C."""
        last: int | None = None
        while True:
            try:
                for event in self.client.follow(message_id, last_event_id=last):
                    self._show(event)
                    last = event.id
                    if event.is_terminal:
                        return self._ended(event)
                return 0  # the 204 of an already finished message
            except KeyboardInterrupt:
                if self._confirm_cancel():
                    return self._cancel(message_id)

    def loop(self) -> int:
        """Read a question a line, answer it, repeat; EOF exits 0, Ctrl-C at the prompt 130."""
        prompt = "you> " if _is_tty(self.stdin) else ""
        while True:
            try:
                line = self.read_line(prompt) if prompt else self.stdin.readline()
            except EOFError:
                line = ""
            except KeyboardInterrupt:
                self._print_err("")
                return EXIT_CANCELLED
            if not line:
                return 0
            if line.strip():
                self.ask(line.strip())

    def list_conversations(self, limit: int) -> int:
        page = self.client.list_conversations(limit=limit)
        if self.json_output:
            self._print({"data": page.data, "next_cursor": page.next_cursor})
            return 0
        for conversation in page.data:
            title = conversation.get("title") or "(untitled)"
            print(
                f"{conversation['id']}  {conversation.get('updated_at')}  {title}", file=self.stdout
            )
        return 0

    def _show(self, event: Event) -> None:
        if self.json_output:
            self._print(_event_object(event))
        elif event.kind is EventKind.DELTA:
            self.stdout.write(event.content)
            self.stdout.flush()
        elif event.is_terminal:
            self.stdout.write("\n")
            self.stdout.flush()

    def _ended(self, event: Event) -> int:
        status = (event.message or {}).get("status")
        if event.kind is EventKind.ERROR:
            self._note(f"the answer {status}: {event.error_code}: {event.error_message}")
            return 1
        if status == "cancelled":
            self._note("the answer was cancelled")
        return 0

    def _confirm_cancel(self) -> bool:
        """Ask once on a terminal; a second Ctrl-C is a yes. Without a terminal: yes."""
        if not (_is_tty(self.stdin) and _is_tty(self.stderr)):
            return True
        try:
            answer = self.read_line("\ncancel the generation? [y/N] ")
        except KeyboardInterrupt:
            return True
        except EOFError:
            return False
        return answer.strip().lower() in ("y", "yes")

    def _cancel(self, message_id: str) -> int:
        try:
            message = self.client.cancel(message_id)
        except ConflictError as exc:  # it ended while we asked
            self._note(f"not cancelled: {exc.message}")
        else:
            if self.json_output:
                self._print({"event": "cancelled", "message": message})
            self._note(f"cancelled {message_id}")
        return EXIT_CANCELLED

    def _note(self, text: str) -> None:
        self._print_err(f"chatrelay: {text}")

    def _print_err(self, text: str) -> None:
        print(text, file=self.stderr, flush=True)

    def _print(self, obj: dict[str, Any]) -> None:
        print(json.dumps(obj, ensure_ascii=False), file=self.stdout, flush=True)


def _event_object(event: Event) -> dict[str, Any]:
    """An event for scripts: what the SSE frame said, with `event` and `id` in it."""
    obj: dict[str, Any] = {"event": str(event.kind), "id": event.id}
    if event.kind in (EventKind.DELTA, EventKind.REASONING):
        obj["content"] = event.content
    if event.error is not None:
        obj["error"] = event.error
    if event.message is not None:
        obj["message"] = event.message
    return obj
