"""`chatrelay chat` and `chatrelay conversations` as subprocesses against the real service."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

from chatrelay.client import Client
from tests.conftest import CLIENT_KEYS, Relay
from tests.fakes.upstream import Reply
from tests.integration.helpers import stored_row

KEY = CLIENT_KEYS["acme"]


def cli_env(key: str = KEY) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CHATRELAY_", "OPENAI_"))}
    return {**clean, "CHATRELAY_API_KEY": key}


def run_cli(
    relay: Relay, *args: str, stdin: str = "", key: str = KEY
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatrelay", *args, "--url", relay.url],
        env=cli_env(key),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_chat_prints_the_streamed_answer(relay: Relay) -> None:
    tokens = ["The", " answer", " is", " 42", "."]
    relay.upstream.enqueue(Reply(tokens=tokens, delay=0.01))
    result = run_cli(relay, "chat", "What is the answer?")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "The answer is 42.\n"
    assert "new conversation conv_" in result.stderr


def test_chat_json_prints_one_object_per_event(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["a", "b", "c"]))
    with Client(relay.url, KEY) as client:
        cid = client.create_conversation("json")["id"]
    result = run_cli(relay, "chat", "--json", "--conversation", cid, "letters")
    assert result.returncode == 0, result.stderr
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["event"] for o in objects] == ["start", "delta", "delta", "delta", "done"]
    assert [o["id"] for o in objects] == [1, 2, 3, 4, 5]
    assert objects[-1]["message"]["content"] == "abc"
    assert objects[-1]["message"]["conversation_id"] == cid
    assert result.stderr == ""  # an existing conversation: nothing to announce


def test_chat_without_a_question_answers_each_line(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["first"]), Reply(tokens=["second"]))
    result = run_cli(relay, "chat", stdin="one\n\ntwo\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "first\nsecond\n"
    cid = result.stderr.split("new conversation ")[1].split()[0]
    with Client(relay.url, KEY) as client:
        messages = client.get_conversation(cid)["messages"]
    assert [m["content"] for m in messages] == ["one", "first", "two", "second"]


def test_sigint_cancels_the_generation_and_exits_130(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=[f" t{i}" for i in range(400)], delay=0.05))
    with Client(relay.url, KEY) as client:
        cid = client.create_conversation("interrupted")["id"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "chatrelay",
            "chat",
            "--url",
            relay.url,
            "--conversation",
            cid,
            "go",
        ],
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.read(3)  # the answer has started streaming
        assert first == b" t0"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert b"cancelled msg_" in err and b"Traceback" not in err
    with Client(relay.url, KEY) as client:
        answer = client.get_conversation(cid)["messages"][1]
    assert answer["status"] == "cancelled"
    printed = (first + out).decode()
    assert printed.startswith(answer["content"][:3])
    assert len(answer["content"]) < len("".join(f" t{i}" for i in range(400)))
    assert asyncio.run(stored_row(relay.database_url, answer["id"]))["status"] == "cancelled"


def test_conversations_lists_recent_ones(relay: Relay) -> None:
    with Client(relay.url, KEY) as client:
        cid = client.create_conversation("listed here")["id"]
    plain = run_cli(relay, "conversations")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines()[0].startswith(cid)
    assert plain.stdout.splitlines()[0].endswith("listed here")
    as_json = run_cli(relay, "conversations", "--json", "--limit", "1")
    assert [c["id"] for c in json.loads(as_json.stdout)["data"]] == [cid]


def test_a_bad_key_is_one_line_and_exit_1(relay: Relay) -> None:
    result = run_cli(relay, "conversations", key="wrong")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("chatrelay: 401 unauthorized: "), lines
    assert "Traceback" not in result.stderr
