"""Throughput of `SSEParser` on a realistic OpenAI stream, against a naive baseline.

The baseline is what most SDK code does: httpx's `aiter_lines` (an incremental UTF-8
decoder, then `LineDecoder`, re-implemented here synchronously as in httpx 0.28) followed
by `if line.startswith("data: ")`. It does less than the parser (no event dispatch, ids,
BOM or limits) and gets some things wrong (it splits on U+2028 and friends, and holds a
trailing CR back), so it is a floor to compare against, not a rival.

Run: `.venv/bin/python bench/parser_throughput.py` (takes well under 20 s).
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable

from chatrelay.sse.parser import SSEParser

EVENTS = 20_000
REPEATS = 5


def build_stream() -> tuple[list[bytes], bytes]:
    events = [
        (
            'data: {"id":"chatcmpl-x","object":"chat.completion.chunk","created":1,'
            f'"model":"gpt-4o-mini","choices":[{{"index":0,"delta":{{"content":"tok{i} "}},'
            '"finish_reason":null}]}\n\n'
        ).encode()
        for i in range(EVENTS)
    ]
    return events, b"".join(events)


class LineDecoder:
    """httpx 0.28 `httpx._decoders.LineDecoder`, same algorithm."""

    def __init__(self) -> None:
        self.buffer: list[str] = []
        self.trailing_cr = False

    def decode(self, text: str) -> list[str]:
        newline_chars = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
        if self.trailing_cr:
            text = "\r" + text
            self.trailing_cr = False
        if text.endswith("\r"):
            self.trailing_cr = True
            text = text[:-1]
        if not text:
            return []
        trailing_newline = text[-1] in newline_chars
        lines = text.splitlines()
        if len(lines) == 1 and not trailing_newline:
            self.buffer.append(lines[0])
            return []
        if self.buffer:
            lines = ["".join(self.buffer) + lines[0], *lines[1:]]
            self.buffer = []
        if not trailing_newline:
            self.buffer = [lines.pop()]
        return lines

    def flush(self) -> list[str]:
        if not self.buffer and not self.trailing_cr:
            return []
        lines = ["".join(self.buffer)]
        self.buffer = []
        self.trailing_cr = False
        return lines


def run_parser(chunks: list[bytes]) -> int:
    parser = SSEParser()
    count = 0
    for chunk in chunks:
        count += len(parser.feed(chunk))
    return count + len(parser.close())


def run_baseline(chunks: list[bytes]) -> int:
    text_decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    line_decoder = LineDecoder()
    payloads: list[str] = []
    for chunk in chunks:
        for line in line_decoder.decode(text_decoder.decode(chunk)):
            if line.startswith("data: "):
                payloads.append(line[6:])
    for line in line_decoder.decode(text_decoder.decode(b"", True)) + line_decoder.flush():
        if line.startswith("data: "):
            payloads.append(line[6:])
    return len(payloads)


def best_time(run: Callable[[list[bytes]], int], chunks: list[bytes]) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        count = run(chunks)
        best = min(best, time.perf_counter() - start)
        if count != EVENTS:
            raise SystemExit(f"{run.__name__} found {count} events, expected {EVENTS}")
    return best


def main() -> None:
    per_event, stream = build_stream()
    size = 4096
    scenarios = {
        "one event per chunk": per_event,
        "4 KiB chunks": [stream[i : i + size] for i in range(0, len(stream), size)],
    }
    impls = {"SSEParser": run_parser, "httpx-style lines": run_baseline}
    mb = len(stream) / 1e6
    print(f"{EVENTS} events, {mb:.2f} MB, best of {REPEATS}\n")
    header = f"{'chunking':<20} {'implementation':<18} {'MB/s':>8} {'events/s':>11} {'us/event':>9}"
    print(header)
    print("-" * len(header))
    for scenario, chunks in scenarios.items():
        for name, run in impls.items():
            seconds = best_time(run, chunks)
            print(
                f"{scenario:<20} {name:<18} {mb / seconds:>8.1f} {EVENTS / seconds:>11,.0f}"
                f" {seconds / EVENTS * 1e6:>9.2f}"
            )


if __name__ == "__main__":
    main()
