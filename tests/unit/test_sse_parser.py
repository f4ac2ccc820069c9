"""Tests for the incremental SSE parser against the WHATWG event-stream rules."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatrelay.errors import UpstreamProtocolError
from chatrelay.sse.event import SSEEvent
from chatrelay.sse.parser import SSEEventTooLarge, SSEParser

BOM = b"\xef\xbb\xbf"


def parse(stream: bytes, **kwargs: int) -> list[SSEEvent]:
    """Feed the whole stream at once, then close."""
    parser = SSEParser(**kwargs)
    return parser.feed(stream) + parser.close()


def parse_chunks(chunks: Iterable[bytes], **kwargs: int) -> list[SSEEvent]:
    parser = SSEParser(**kwargs)
    events: list[SSEEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events + parser.close()


def bytewise(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


def split_at(stream: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(points)]


def datas(events: list[SSEEvent]) -> list[str]:
    return [e.data for e in events]


# --- the spec's own examples (WHATWG HTML, "Interpreting an event stream") ---------------


def test_spec_example_multiline_data_joined_with_lf() -> None:
    events = parse(b"data: YHOO\ndata: +2\ndata: 10\n\n")
    assert events == [SSEEvent("YHOO\n+2\n10")]


def test_spec_example_four_blocks_ids_and_leading_space() -> None:
    stream = (
        b": test stream\n\n"
        b"data: first event\nid: 1\n\n"
        b"data:second event\nid\n\n"
        b"data:  third event\n\n"
    )
    assert parse(stream) == [
        SSEEvent("first event", id="1"),
        SSEEvent("second event", id=""),  # `id` without a value resets it to ""
        SSEEvent(" third event", id=""),  # only one leading space is stripped
    ]


def test_spec_example_empty_data_and_single_newline_and_discarded_last_block() -> None:
    # "The following stream fires two events": "" and "\n"; the last block has no
    # terminating blank line and is discarded.
    events = parse(b"data\n\ndata\ndata\n\ndata:")
    assert datas(events) == ["", "\n"]


def test_spec_example_space_after_colon_is_optional() -> None:
    events = parse(b"data:test\n\ndata: test\n\n")
    assert events == [SSEEvent("test"), SSEEvent("test")]


def test_wpt_field_parsing_example() -> None:
    # web-platform-tests eventsource/format-field-parsing: NUL kept in data, names are
    # case-sensitive, "data\0" and "da-ta" are unknown fields, " data" is unknown too.
    stream = (
        b"data:\x00\ndata:  2\rData:1\ndata\x00:2\ndata:1\r\x00data:4\nda-ta:3\r"
        b"data_5\ndata:3\rdata:\r\n data:32\ndata:4\n\n"
    )
    assert datas(parse(stream)) == ["\x00\n 2\n1\n3\n\n4"]


# --- line endings -------------------------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_each_line_ending_is_accepted(eol: bytes) -> None:
    stream = eol.join([b"event: add", b"data: a", b"data: b", b"", b"data: c", b"", b""])
    assert parse(stream) == [SSEEvent("a\nb", event="add"), SSEEvent("c")]


def test_mixed_line_endings_in_one_stream() -> None:
    assert datas(parse(b"data: a\rdata: b\r\ndata: c\n\r\n")) == ["a\nb\nc"]


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    # If the LF were taken as a second line end it would be a blank line and dispatch "a".
    events = parse_chunks([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert datas(events) == ["a\nb"]


def test_cr_then_lf_across_an_empty_chunk_is_still_one_line_end() -> None:
    events = parse_chunks([b"data: a\r", b"", b"\ndata: b\n\n"])
    assert datas(events) == ["a\nb"]


def test_lf_after_cr_is_swallowed_only_once() -> None:
    # CR LF LF: the first LF pairs with the CR, the second is a blank line.
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\n") == [SSEEvent("a")]


def test_trailing_cr_does_not_hold_back_dispatch() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r\r") == [SSEEvent("a")]
    parser = SSEParser()
    assert parser.feed(b"data: b\n\r") == [SSEEvent("b")]


def test_lone_cr_chunks_dispatch_without_waiting() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a") == []
    assert parser.feed(b"\r") == []
    assert parser.feed(b"\r") == [SSEEvent("a")]


def test_only_cr_and_lf_end_lines_not_other_unicode_breaks() -> None:
    # str.splitlines() splits at all of these (so does httpx's aiter_lines); the spec ends
    # lines at CR and LF only, and U+2028/U+2029/U+0085 are legal unescaped in JSON.
    payload = "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg\x1dh\x1ei"
    assert datas(parse(b"data: " + payload.encode() + b"\n\n")) == [payload]


# --- BOM -----------------------------------------------------------------------------------


def test_leading_bom_is_dropped() -> None:
    assert datas(parse(BOM + b"data: x\n\n")) == ["x"]


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_leading_bom_split_across_chunks_is_dropped(cut: int) -> None:
    stream = BOM + b"data: x\n\n"
    assert datas(parse_chunks(split_at(stream, [cut]))) == ["x"]
    assert datas(parse_chunks(bytewise(stream))) == ["x"]


def test_only_one_bom_is_dropped() -> None:
    # The second BOM belongs to the first line, whose field name is then not "data".
    assert parse(BOM + BOM + b"data: x\n\ndata: y\n\n") == [SSEEvent("y")]


def test_bom_inside_data_is_kept() -> None:
    assert datas(parse(b"data: \xef\xbb\xbfx\n\n")) == ["\ufeffx"]


def test_bom_prefix_that_is_not_a_bom_is_not_lost() -> None:
    # EF BB then "data: x": the two bytes stay in front of the field name, so the first
    # line is an unknown field; dropping them as if they were a BOM would yield "x".
    assert parse_chunks([b"\xef", b"\xbb", b"data: x\n\ndata: ok\n\n"]) == [SSEEvent("ok")]
    # "d" could not start a BOM: it is parsed, not swallowed.
    assert parse_chunks([b"d", b"ata: ok\n\n"]) == [SSEEvent("ok")]


def test_bom_after_first_line_is_not_stripped() -> None:
    assert parse(b"\n" + BOM + b"data: x\n\n") == []


# --- fields --------------------------------------------------------------------------------


def test_comment_lines_are_ignored() -> None:
    stream = b": keep-alive\n:data: not data\ndata: x\n:\n\n"
    assert parse(stream) == [SSEEvent("x")]


def test_comment_only_block_dispatches_nothing() -> None:
    assert parse(b": ping\n\n: ping\n\n") == []


def test_only_one_leading_space_is_stripped() -> None:
    assert datas(parse(b"data:   x  \n\n")) == ["  x  "]


def test_leading_tab_is_not_stripped() -> None:
    assert datas(parse(b"data:\tx\n\n")) == ["\tx"]


def test_colon_inside_value_is_kept() -> None:
    assert datas(parse(b'data: {"a": "b:c"}\n\n')) == ['{"a": "b:c"}']


def test_line_without_colon_is_field_with_empty_value() -> None:
    assert parse(b"data\n\n") == [SSEEvent("")]
    assert parse(b"event\ndata: x\n\n") == [SSEEvent("x", event="message")]


def test_empty_data_buffer_is_not_dispatched_but_type_is_reset() -> None:
    events = parse(b"event: add\n\ndata: x\n\n")
    assert events == [SSEEvent("x", event="message")]


def test_event_type() -> None:
    stream = b"event: add\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\n"
    assert [(e.event, e.data) for e in parse(stream)] == [
        ("add", "1"),  # set by the field
        ("message", "2"),  # reset after dispatch
        ("message", "3"),  # empty type means "message"
    ]


def test_last_event_field_wins() -> None:
    assert parse(b"event: a\nevent: b\ndata: x\n\n")[0].event == "b"


def test_unknown_fields_are_ignored_and_names_are_case_sensitive() -> None:
    stream = b"foo: bar\nData: no\nDATA: no\nid : no\ndata: yes\nx\n\n"
    assert parse(stream) == [SSEEvent("yes")]


def test_nul_in_data_is_kept() -> None:
    assert datas(parse(b"data: a\x00b\n\n")) == ["a\x00b"]


# --- id --------------------------------------------------------------------------------------


def test_id_is_none_until_the_stream_sets_one() -> None:
    events = parse(b"data: a\n\nid: 7\ndata: b\n\n")
    assert [e.id for e in events] == [None, "7"]


def test_id_persists_across_events_until_changed() -> None:
    events = parse(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n")
    assert [e.id for e in events] == ["1", "1", "2"]


def test_empty_id_resets_to_empty_string_not_none() -> None:
    events = parse(b"id: 1\ndata: a\n\nid:\ndata: b\n\nid\ndata: c\n\n")
    assert [e.id for e in events] == ["1", "", ""]


def test_id_containing_nul_is_ignored() -> None:
    parser = SSEParser()
    events = parser.feed(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")
    assert [e.id for e in events] == ["1", "1"]
    assert parser.last_event_id == "1"


def test_id_with_only_nul_never_sets_an_id() -> None:
    assert parse(b"id: \x00\ndata: a\n\n") == [SSEEvent("a", id=None)]


def test_id_later_in_the_block_applies_to_its_event() -> None:
    assert parse(b"data: a\nid: 5\n\n")[0].id == "5"


def test_last_event_id_property_updates_at_blank_lines_only() -> None:
    parser = SSEParser()
    assert parser.last_event_id == ""
    parser.feed(b"id: 1\ndata: a\n")
    assert parser.last_event_id == ""  # the event has not been dispatched yet
    parser.feed(b"\n")
    assert parser.last_event_id == "1"
    parser.feed(b"id: 2\n\n")  # no data: nothing dispatched, but the id string is set
    assert parser.last_event_id == "2"
    assert parser.feed(b"data: b\n\n") == [SSEEvent("b", id="2")]
    parser.feed(b"id: 3\ndata: c\n")
    assert parser.close() == []
    assert parser.last_event_id == "2"  # the truncated event's id never took effect


# --- retry ------------------------------------------------------------------------------------


def test_retry_digits_are_reported_with_their_event_and_kept_on_the_parser() -> None:
    parser = SSEParser()
    assert parser.retry is None
    events = parser.feed(b"retry: 3000\ndata: a\n\ndata: b\n\n")
    assert [e.retry for e in events] == [3000, None]
    assert parser.retry == 3000


def test_retry_only_block_sets_parser_retry_without_an_event() -> None:
    parser = SSEParser()
    assert parser.feed(b"retry: 1500\n\ndata: a\n\n") == [SSEEvent("a")]
    assert parser.retry == 1500


@pytest.mark.parametrize(
    "value",
    [b"10a", b"-1", b"+1", b"1.5", b"", b" 100", b"1 ", b"1e3", "\u0661\u0662".encode()],
)
def test_retry_with_anything_but_ascii_digits_is_ignored(value: bytes) -> None:
    parser = SSEParser()
    events = parser.feed(b"retry: 5\n\nretry: " + value + b"\ndata: x\n\n")
    assert events == [SSEEvent("x", retry=None)]
    assert parser.retry == 5


def test_retry_leading_zeros_and_overflow() -> None:
    parser = SSEParser()
    assert parser.feed(b"retry: 007\ndata: x\n\n")[0].retry == 7
    huge = b"9" * 5000  # int() would refuse this many digits; the field is ignored
    assert parser.feed(b"retry: " + huge + b"\ndata: y\n\n")[0].retry is None
    assert parser.feed(b"retry: 9223372036854775808\ndata: z\n\n")[0].retry is None
    assert parser.retry == 7
    assert parser.feed(b"retry: 9223372036854775807\ndata: z\n\n")[0].retry == 2**63 - 1


# --- end of stream ------------------------------------------------------------------------------


def test_close_discards_an_unterminated_event() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\ndata: partial\n") == [SSEEvent("a")]
    assert parser.close() == []


def test_close_discards_an_unterminated_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: partial") == []
    assert parser.close() == []


def test_close_is_idempotent_and_feed_after_close_raises() -> None:
    parser = SSEParser()
    assert parser.close() == []
    assert parser.close() == []
    with pytest.raises(RuntimeError):
        parser.feed(b"data: x\n\n")


def test_empty_chunk_is_a_no_op() -> None:
    parser = SSEParser()
    assert parser.feed(b"") == []
    assert parser.feed(b"data: a") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\n\n") == [SSEEvent("a")]


# --- UTF-8 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["😀 done", "中文字符", "é", "a😀b中c", "🏳️‍🌈"])
def test_multibyte_characters_split_at_every_byte(text: str) -> None:
    stream = b"event: " + text.encode() + b"\nid: " + text.encode()
    stream += b"\ndata: " + text.encode() + b"\n\n"
    expected = [SSEEvent(text, event=text, id=text)]
    assert parse(stream) == expected
    assert parse_chunks(bytewise(stream)) == expected
    for cut in range(1, len(stream)):
        assert parse_chunks(split_at(stream, [cut])) == expected, cut


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    stream = (
        b"data: \xff\xfe ok\n\n"  # bytes that never occur in UTF-8
        b"data: \xe2\x82\n\n"  # a sequence cut short by the line end
        b"event: \xc3\n"
        b"id: \x80\n"
        b"data: \xed\xa0\x80\n\n"  # an encoded surrogate
    )
    assert parse(stream) == [
        SSEEvent("\ufffd\ufffd ok"),
        SSEEvent("\ufffd", id=None),
        SSEEvent("\ufffd\ufffd\ufffd", event="\ufffd", id="\ufffd"),
    ]
    assert parse_chunks(bytewise(stream)) == parse(stream)


# --- size limits ----------------------------------------------------------------------------------


def test_line_at_the_limit_is_accepted() -> None:
    line = b"data: " + b"x" * 94  # 100 bytes
    assert datas(parse(line + b"\n\n", max_line_bytes=100)) == ["x" * 94]
    assert datas(parse_chunks(bytewise(line + b"\n\n"), max_line_bytes=100)) == ["x" * 94]


def test_complete_line_over_the_limit_raises() -> None:
    parser = SSEParser(max_line_bytes=100)
    with pytest.raises(SSEEventTooLarge) as info:
        parser.feed(b"data: " + b"s3cr3t" * 20 + b"\n\n")
    exc = info.value
    assert isinstance(exc, UpstreamProtocolError)
    assert exc.code == "upstream_event_too_large"
    assert exc.limit == 100
    assert "100 bytes" in str(exc)
    assert "s3cr3t" not in str(exc)


def test_comment_line_over_the_limit_raises_too() -> None:
    with pytest.raises(SSEEventTooLarge):
        parse(b":" + b"x" * 101 + b"\n", max_line_bytes=100)


def test_partial_line_over_the_limit_raises_before_its_end_arrives() -> None:
    parser = SSEParser(max_line_bytes=100)
    parser.feed(b"data: ")
    for _ in range(9):
        parser.feed(b"x" * 10)
    with pytest.raises(SSEEventTooLarge):
        parser.feed(b"x" * 10)  # 106 bytes buffered, no line end in sight


def test_partial_line_over_the_limit_raises_when_its_end_arrives() -> None:
    parser = SSEParser(max_line_bytes=100)
    parser.feed(b"data: " + b"x" * 90)
    with pytest.raises(SSEEventTooLarge):
        parser.feed(b"x" * 10 + b"\n\n")


def test_event_data_over_the_limit_raises() -> None:
    parser = SSEParser(max_line_bytes=100)
    with pytest.raises(SSEEventTooLarge) as info:
        for _ in range(20):
            parser.feed(b"data: " + b"y" * 20 + b"\n")
    assert "100 bytes" in str(info.value)


def test_event_data_exactly_at_the_limit_is_accepted() -> None:
    # 4 lines of 24 bytes joined by 3 LFs: 99 bytes; one more byte makes 100.
    stream = b"data: " + b"z" * 25 + b"\n" + b"data: " + b"z" * 24 + b"\n"
    stream += (b"data: " + b"z" * 24 + b"\n") * 2 + b"\n"
    assert len(datas(parse(stream, max_line_bytes=100))[0]) == 100
    with pytest.raises(SSEEventTooLarge):
        parse(stream.replace(b"z\n\n", b"zz\n\n"), max_line_bytes=100)


def test_limit_error_carries_earlier_events_and_spends_the_parser() -> None:
    parser = SSEParser(max_line_bytes=100)
    with pytest.raises(SSEEventTooLarge) as info:
        parser.feed(b"data: a\n\ndata: b\n\ndata: " + b"x" * 200 + b"\n\n")
    assert info.value.events == (SSEEvent("a"), SSEEvent("b"))
    with pytest.raises(RuntimeError):
        parser.feed(b"data: c\n\n")


def test_max_line_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SSEParser(max_line_bytes=0)


def test_long_line_in_small_chunks_is_linear_time() -> None:
    # An 8 MiB line in 512-byte chunks: re-joining or re-scanning the growing buffer on
    # every chunk would copy ~64 GB; a linear parser finishes in well under a second.
    parser = SSEParser(max_line_bytes=16 << 20)
    piece = b"x" * 512
    start = time.perf_counter()
    parser.feed(b"data: ")
    for _ in range((8 << 20) // 512):
        parser.feed(piece)
    events = parser.feed(b"\n\n")
    elapsed = time.perf_counter() - start
    assert len(events[0].data) == 8 << 20
    assert elapsed < 3.0


# --- property tests -------------------------------------------------------------------------------


def reference_parse(stream: bytes) -> tuple[list[SSEEvent], str, int | None]:
    """A literal, whole-stream transcription of the spec, as an independent oracle.

    Decodes everything first (utf-8-sig drops one leading BOM), splits with a regex and
    walks the steps in order. Returns the events, the last event ID string and the retry.
    """
    lines = re.split("\r\n|\r|\n", stream.decode("utf-8-sig", "replace"))
    lines.pop()  # whatever follows the last line ending is an unfinished line
    events: list[SSEEvent] = []
    data, event_type, id_buffer, id_set = "", "", "", False
    last_id = ""
    retry: int | None = None
    event_retry: int | None = None
    for line in lines:
        if line == "":
            last_id = id_buffer
            if data:
                events.append(
                    SSEEvent(
                        data[:-1],
                        event_type or "message",
                        id_buffer if id_set else None,
                        event_retry,
                    )
                )
            data, event_type, event_retry = "", "", None
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event_type = value
        elif name == "data":
            data += value + "\n"
        elif name == "id" and "\x00" not in value:
            id_buffer, id_set = value, True
        elif (
            name == "retry"
            and value
            and all(c in "0123456789" for c in value)
            and int(value) <= 2**63 - 1  # past int64 ignored, as browsers do
        ):
            retry = event_retry = int(value)
    return events, last_id, retry


def serialise(lines: list[bytes], endings: list[bytes]) -> bytes:
    out = bytearray()
    previous = b""
    for line, ending in zip(lines, endings, strict=True):
        if previous == b"\r" and not line and ending == b"\n":
            ending = b"\r\n"  # CR + (empty line + LF) would read as one CRLF
        out += line + ending
        previous = ending
    return bytes(out)


values = st.text(st.characters(exclude_characters="\r\n", exclude_categories=["Cs"]), max_size=12)
ENDINGS = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def model_streams(draw: st.DrawFn) -> tuple[bytes, list[SSEEvent]]:
    """Well-formed events and the exact events they must produce."""
    lines: list[bytes] = []
    expected: list[SSEEvent] = []
    last_id: str | None = None
    for _ in range(draw(st.integers(0, 6))):
        block: list[bytes] = []
        event_type = draw(st.one_of(st.none(), st.from_regex(r"[a-z_.]{1,8}", fullmatch=True)))
        if event_type is not None:
            block.append(b"event: " + event_type.encode())
        event_id = draw(st.one_of(st.none(), values.filter(lambda v: "\x00" not in v)))
        if event_id is not None:
            block.append(b"id: " + event_id.encode())
            last_id = event_id
        retry = draw(st.one_of(st.none(), st.integers(0, 10**9)))
        if retry is not None:
            block.append(b"retry: " + str(retry).encode())
        if draw(st.booleans()):
            block.append(b": " + draw(values).encode())
        data_lines = draw(st.lists(values, min_size=1, max_size=4))
        # Other fields in any order; data lines wherever, but in their own order.
        block = draw(st.permutations(block))
        spots = sorted(
            draw(
                st.lists(
                    st.integers(0, len(block)), min_size=len(data_lines), max_size=len(data_lines)
                )
            )
        )
        for shift, (spot, value) in enumerate(zip(spots, data_lines, strict=True)):
            block.insert(spot + shift, b"data: " + value.encode())
        lines += [*block, b""]
        expected.append(SSEEvent("\n".join(data_lines), event_type or "message", last_id, retry))
    if draw(st.booleans()):
        lines += [b"data: " + draw(values).encode()]  # never terminated: never dispatched
    endings = draw(st.lists(ENDINGS, min_size=len(lines), max_size=len(lines)))
    return serialise(lines, endings), expected


raw_values = st.binary(max_size=10).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
messy_line = st.one_of(
    st.builds(lambda v: b"data:" + v, raw_values),
    st.builds(lambda v: b"data: " + v.encode(), values),
    st.just(b"data"),
    st.just(b""),
    st.just(b""),
    st.builds(
        lambda n, v: n + v, st.sampled_from([b"event:", b"id:", b"id: ", b"retry:"]), raw_values
    ),
    st.builds(lambda v: b"retry: " + v, st.sampled_from([b"1", b"250", b"x", b"", b"1 "])),
    st.builds(lambda v: b"id: a" + v, st.sampled_from([b"", b"\x00"])),
    st.builds(lambda v: b":" + v, raw_values),
    st.builds(lambda v: b"unknown: " + v, raw_values),
    raw_values,
)


@st.composite
def messy_streams(draw: st.DrawFn) -> bytes:
    """Anything line-shaped: raw bytes, invalid UTF-8, stray fields, BOMs, no final LF."""
    lines = draw(st.lists(messy_line, max_size=25))
    endings = draw(st.lists(ENDINGS, min_size=len(lines), max_size=len(lines)))
    stream = serialise(lines, endings)
    prefix = draw(st.sampled_from([b"", BOM, BOM + BOM, b"\xef\xbb"]))
    return prefix + stream + draw(raw_values)


def cut_points(stream: bytes) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, len(stream)), max_size=12)


PROPERTY = settings(max_examples=200, deadline=None)


@PROPERTY
@given(st.data())
def test_property_model_events_survive_any_split(data: st.DataObject) -> None:
    stream, expected = data.draw(model_streams())
    assert parse(stream) == expected
    cuts = data.draw(cut_points(stream))
    assert parse_chunks(split_at(stream, cuts)) == expected
    assert parse_chunks(bytewise(stream)) == expected


@PROPERTY
@given(st.data())
def test_property_messy_streams_match_the_spec_oracle_for_any_split(data: st.DataObject) -> None:
    stream = data.draw(messy_streams())
    expected_events, expected_last_id, expected_retry = reference_parse(stream)
    cuts = data.draw(cut_points(stream))
    for chunks in ([stream], split_at(stream, cuts), bytewise(stream)):
        parser = SSEParser()
        events: list[SSEEvent] = []
        for chunk in chunks:
            events += parser.feed(chunk)
        events += parser.close()
        assert events == expected_events
        assert parser.last_event_id == expected_last_id
        assert parser.retry == expected_retry


def test_a_nonstandard_error_field_is_kept_but_not_dispatched() -> None:
    parser = SSEParser()
    events = parser.feed(b'error: {"message": "context too long"}\n\ndata: [DONE]\n\n')
    assert events == [SSEEvent("[DONE]")]
    assert parser.error_field == '{"message": "context too long"}'
