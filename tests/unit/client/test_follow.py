"""The resume loop without a network: frames in, events and waits out."""

from __future__ import annotations

import json

import pytest

from chatrelay.client import (
    AuthenticationError,
    EventKind,
    NotFoundError,
    ProtocolError,
    StreamInterruptedError,
)
from chatrelay.client.follow import FollowLoop, ReconnectPolicy

PATH = "/v1/messages/msg_X/events"
MESSAGE = {"id": "msg_X", "content": "", "status": "streaming"}


def frame(position: int, kind: str, payload: object) -> bytes:
    return f"id: {position}\nevent: {kind}\ndata: {json.dumps(payload)}\n\n".encode()


def stream() -> bytes:
    return b"".join(
        [
            b"retry: 2000\n\n",
            frame(1, "start", {"message": MESSAGE}),
            frame(2, "delta", {"content": "Hel"}),
            b": ping\n\n",
            frame(3, "reasoning", {"content": "hmm"}),
            frame(4, "delta", {"content": "lo"}),
            frame(5, "done", {"message": {**MESSAGE, "content": "Hello", "status": "completed"}}),
        ]
    )


def opened(loop: FollowLoop) -> FollowLoop:
    loop.opened("text/event-stream; charset=utf-8")
    return loop


def test_typed_events_in_order_and_the_terminal_one_finishes() -> None:
    loop = opened(FollowLoop(PATH, None))
    events = loop.feed(stream())
    assert [e.kind for e in events] == ["start", "delta", "reasoning", "delta", "done"]
    assert [e.id for e in events] == [1, 2, 3, 4, 5]
    assert "".join(e.content for e in events if e.kind is EventKind.DELTA) == "Hello"
    assert events[0].message == MESSAGE
    assert events[-1].message is not None and events[-1].message["content"] == "Hello"
    assert loop.finished and loop.last_event_id == 5


def test_split_anywhere_gives_the_same_events() -> None:
    data = stream()
    for size in (1, 2, 7, 50):
        loop = opened(FollowLoop(PATH, None))
        events = [e for i in range(0, len(data), size) for e in loop.feed(data[i : i + size])]
        assert [e.id for e in events] == [1, 2, 3, 4, 5], size


def test_headers_carry_the_cursor() -> None:
    assert "Last-Event-ID" not in FollowLoop(PATH, None).request_headers()
    loop = FollowLoop(PATH, 7)
    assert loop.request_headers()["Last-Event-ID"] == "7"
    assert loop.request_headers()["Accept"] == "text/event-stream"


def test_events_at_or_before_the_cursor_are_never_yielded() -> None:
    loop = opened(FollowLoop(PATH, 3))
    assert [e.id for e in loop.feed(stream())] == [4, 5]


def test_reconnect_resends_the_last_id_and_drops_a_half_frame() -> None:
    loop = opened(FollowLoop(PATH, None, ReconnectPolicy(max_reconnects=3)))
    data = stream()
    cut = data.index(b"id: 3")
    assert [e.id for e in loop.feed(data[: cut + 20])] == [1, 2]
    assert loop.interrupted(None) == 2.0  # the server's retry: 2000
    assert loop.request_headers()["Last-Event-ID"] == "2"
    loop.opened("text/event-stream")
    assert [e.id for e in loop.feed(data)] == [3, 4, 5]  # a server replaying too much


def test_the_server_retry_field_sets_the_wait_capped() -> None:
    loop = opened(FollowLoop(PATH, None, ReconnectPolicy(max_delay=0.5)))
    loop.feed(b"retry: 250\n\n")
    assert loop.interrupted(None) == 0.25
    loop.feed(b"retry: 9000\n\n")
    assert loop.interrupted(None) == 0.5


def test_default_wait_is_two_seconds_before_any_retry_field() -> None:
    assert FollowLoop(PATH, None).interrupted(OSError()) == 2.0


def test_attempts_are_bounded_and_reset_by_events() -> None:
    loop = opened(FollowLoop(PATH, None, ReconnectPolicy(max_reconnects=2)))
    loop.interrupted(None)
    loop.interrupted(None)
    loop.opened("text/event-stream")
    loop.feed(frame(1, "start", {"message": MESSAGE}))  # progress: the count restarts
    loop.interrupted(None)
    loop.interrupted(None)
    with pytest.raises(StreamInterruptedError) as caught:
        loop.interrupted(OSError("reset"))
    assert caught.value.last_event_id == 1
    assert isinstance(caught.value.__cause__, OSError)


def test_204_ends_the_follow() -> None:
    loop = FollowLoop(PATH, 5)
    assert loop.refused(204, {}, b"") is None
    assert loop.finished


def test_503_and_429_wait_their_retry_after_and_5xx_the_retry_field() -> None:
    loop = FollowLoop(PATH, None)
    body = b'{"error": {"code": "shutting_down", "message": "bye"}}'
    assert loop.refused(503, {"retry-after": "3"}, body) == 3.0
    assert loop.refused(429, {"retry-after": "1"}, b"") == 1.0
    assert loop.refused(502, {}, b"bad gateway") == 2.0


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [(401, AuthenticationError, "unauthorized"), (404, NotFoundError, "not_found")],
)
def test_other_errors_raise_at_once(status: int, error: type[Exception], code: str) -> None:
    body = json.dumps({"error": {"code": code, "message": "no"}}).encode()
    with pytest.raises(error) as caught:
        FollowLoop(PATH, None).refused(status, {}, body)
    assert getattr(caught.value, "code", None) == code


def test_not_an_event_stream_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        FollowLoop(PATH, None).opened("application/json")


def test_an_error_event_carries_its_code_and_the_message() -> None:
    loop = opened(FollowLoop(PATH, None))
    failed = {**MESSAGE, "status": "failed"}
    payload = {"error": {"code": "upstream_timeout_idle", "message": "silent"}, "message": failed}
    (event,) = loop.feed(frame(9, "error", payload))
    assert event.kind is EventKind.ERROR and event.is_terminal
    assert (event.error_code, event.error_message) == ("upstream_timeout_idle", "silent")
    assert event.message == failed


def test_an_unknown_kind_moves_the_cursor_but_is_not_yielded() -> None:
    loop = opened(FollowLoop(PATH, None))
    assert loop.feed(frame(1, "future_kind", {"x": 1})) == []
    assert loop.last_event_id == 1


def test_nothing_after_the_terminal_event() -> None:
    loop = opened(FollowLoop(PATH, None))
    data = stream() + frame(6, "delta", {"content": "late"})
    assert [e.id for e in loop.feed(data)][-1] == 5
