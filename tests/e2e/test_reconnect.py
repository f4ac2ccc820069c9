"""Broken connections and reopened pages: the text shown is always the stored text.

The browser reaches chatrelay through `TcpProxy`, which resets every connection on
demand (the service and the generation carry on), so `EventSource` must reconnect with
`Last-Event-ID` on its own and the page must neither repeat nor lose a piece.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import Relay
from tests.e2e.conftest import assistant, event_sources, open_chat, send, stored
from tests.e2e.test_chat_page import words
from tests.fakes.tcp_proxy import TcpProxy
from tests.fakes.upstream import Reply


@pytest.fixture
def proxy(relay: Relay) -> Iterator[TcpProxy]:
    made = TcpProxy(relay.service.port).start()
    try:
        yield made
    finally:
        made.stop()


def _text(page: Page) -> str:
    return assistant(page).locator(".content").inner_text()


def test_a_dropped_stream_resumes_without_gap_or_duplicate(
    relay: Relay, page: Page, proxy: TcpProxy
) -> None:
    relay.upstream.enqueue(Reply(tokens=words(50), delay=0.06))
    open_chat(page, proxy.url)
    send(page, "keep talking")
    answer = assistant(page)
    expect(answer.locator(".content")).to_contain_text("w5")
    before = len(_text(page))
    assert proxy.drop() >= 1
    expect(page.locator("#connection")).to_contain_text("Reconnecting")
    expect(answer).to_have_attribute("data-status", "completed")
    expect(page.locator("#connection")).to_be_hidden()

    mid = answer.get_attribute("data-id")
    assert mid is not None
    message = stored(relay, mid)
    assert _text(page) == message["content"] == "".join(words(50))
    assert len(message["content"]) > before
    assert answer.get_attribute("data-mismatch") is None
    sources = event_sources(page)
    assert sources["created"] == 1, "the browser's own EventSource retry did the reconnecting"
    assert sources["maxOpen"] == 1


def test_reconnecting_gives_up_then_resumes_on_request(
    relay: Relay, page: Page, proxy: TcpProxy
) -> None:
    relay.upstream.enqueue(Reply(tokens=words(40), delay=0.05))
    open_chat(page, proxy.url)
    send(page, "and now the network goes away")
    answer = assistant(page)
    expect(answer.locator(".content")).to_contain_text("w3")
    proxy.refuse()
    proxy.drop()
    refused_from = proxy.attempts
    expect(page.locator("#connection")).to_contain_text("Reconnecting")
    lost = page.locator("#connection[data-state=lost]")
    expect(lost).to_be_visible(timeout=20_000)
    attempts = proxy.attempts
    page.wait_for_timeout(3000)  # retry is 2 s: a page still trying would show up here
    assert proxy.attempts == attempts, "the page kept reconnecting after giving up"
    expect(lost).to_contain_text("Connection lost")
    # MAX_RETRIES reconnects by EventSource, then one GET of the message: then it stopped.
    assert 1 <= attempts - refused_from <= 6, attempts - refused_from

    proxy.refuse(False)
    page.get_by_role("button", name="Reconnect").click()
    expect(answer).to_have_attribute("data-status", "completed")
    mid = answer.get_attribute("data-id")
    assert mid is not None
    assert _text(page) == stored(relay, mid)["content"] == "".join(words(40))
    expect(page.locator("#connection")).to_be_hidden()


def test_reopening_the_page_follows_the_running_message(relay: Relay, page: Page) -> None:
    relay.upstream.enqueue(Reply(tokens=words(60), delay=0.06))
    open_chat(page, relay.url)
    send(page, "a message to come back to")
    expect(assistant(page).locator(".content")).to_contain_text("w5")
    conversation_url = page.url
    assert "#conv_" in conversation_url

    again = page.context.new_page()
    page.close()
    again.goto(conversation_url)
    answer = assistant(again)
    expect(answer).to_have_attribute("data-status", "streaming")
    expect(answer.locator(".content")).to_contain_text("w1")
    shown_while_running = len(answer.locator(".content").inner_text())
    expect(answer).to_have_attribute("data-status", "completed")
    mid = answer.get_attribute("data-id")
    assert mid is not None
    final = answer.locator(".content").inner_text()
    assert final == stored(relay, mid)["content"] == "".join(words(60))
    assert shown_while_running < len(final), "the reopened page followed it as it grew"
    assert answer.get_attribute("data-mismatch") is None
    assert event_sources(again)["maxOpen"] == 1
