"""The chat page in a real browser: key, streaming, stop, regenerate, edit, failures."""

from __future__ import annotations

import time

from playwright.sync_api import Page, expect

from tests.conftest import Relay
from tests.e2e.conftest import KEY, assistant, event_sources, open_chat, send, stored
from tests.fakes.upstream import Reply


def words(n: int, prefix: str = "w") -> list[str]:
    """Tokens that render as one plain paragraph, so the shown text is the stored text."""
    return [f"{prefix}0", *(f" {prefix}{i}" for i in range(1, n))]


def test_the_key_is_entered_once_and_kept(relay: Relay, page: Page) -> None:
    page.goto(relay.url + "/")
    expect(page.locator("#key-reason")).to_contain_text("needs a client key")
    page.get_by_label("Client key").fill("not-a-key")
    page.get_by_role("button", name="Save key").click()
    expect(page.locator("#key-form")).to_be_visible()  # refused: asked again
    expect(page.locator("#key-reason")).to_contain_text("refused")
    page.get_by_label("Client key").fill(KEY)
    page.get_by_role("button", name="Save key").click()
    expect(page.locator("#key-form")).to_be_hidden()
    assert page.evaluate("localStorage.getItem('chatrelay.clientKey')") == KEY
    page.reload()
    expect(page.get_by_label("Message", exact=True)).to_be_visible()
    expect(page.locator("#key-form")).to_be_hidden()


def test_text_grows_progressively_and_matches_the_stored_message(relay: Relay, page: Page) -> None:
    relay.upstream.enqueue(Reply(tokens=words(25), delay=0.08))
    open_chat(page, relay.url)
    box = page.get_by_label("Message", exact=True)
    box.fill("first line")
    box.press("Shift+Enter")
    box.type("second line")
    assert box.input_value() == "first line\nsecond line"  # Shift+Enter: a new line, no send
    expect(page.locator("li.message")).to_have_count(0)
    box.press("Enter")

    answer = assistant(page)
    expect(answer).to_have_attribute("data-status", "streaming")
    expect(answer.get_by_role("button", name="Stop")).to_be_visible()
    lengths: list[int] = []
    deadline = time.monotonic() + 15
    while answer.get_attribute("data-status") == "streaming" and time.monotonic() < deadline:
        lengths.append(len(answer.locator(".content").inner_text()))
        page.wait_for_timeout(40)
    expect(answer).to_have_attribute("data-status", "completed")
    grown = sorted(set(lengths))
    assert len(grown) >= 5, f"text did not grow progressively: {grown}"
    assert lengths == sorted(lengths), "text shrank while streaming"

    mid = answer.get_attribute("data-id")
    assert mid is not None
    message = stored(relay, mid)
    assert message["status"] == "completed"
    assert answer.locator(".content").inner_text() == message["content"] == "".join(words(25))
    assert answer.get_attribute("data-mismatch") is None
    expect(answer.locator(".status")).to_have_text("completed")
    expect(page.locator("li.message.user .content")).to_have_text("first line\nsecond line")
    expect(page.locator("#conversation-list a")).to_contain_text(["first line"])
    assert event_sources(page)["maxOpen"] == 1


def test_stop_cancels_and_keeps_the_partial_text(relay: Relay, page: Page) -> None:
    relay.upstream.enqueue(Reply(tokens=words(60), delay=0.1))
    open_chat(page, relay.url)
    send(page, "a long answer please")
    answer = assistant(page)
    expect(answer.locator(".content")).to_contain_text("w3")
    # By keyboard: focus stays on Stop while the text grows around it, Enter presses it.
    answer.get_by_role("button", name="Stop").focus()
    page.wait_for_timeout(400)
    assert page.evaluate("document.activeElement.textContent") == "Stop"
    page.keyboard.press("Enter")
    expect(answer).to_have_attribute("data-status", "cancelled")
    expect(answer.locator(".status")).to_have_text("cancelled")
    mid = answer.get_attribute("data-id")
    assert mid is not None
    message = stored(relay, mid)
    assert message["status"] == "cancelled"
    shown = answer.locator(".content").inner_text()
    assert shown == message["content"]
    assert 0 < len(shown) < len("".join(words(60)))
    expect(answer.get_by_role("button", name="Regenerate")).to_be_visible()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()


def test_regenerate_and_edit_replace_the_answer(relay: Relay, page: Page) -> None:
    relay.upstream.enqueue(
        Reply(tokens=words(5, "first")),
        Reply(tokens=words(5, "second"), delay=0.05),
        Reply(tokens=words(5, "third"), delay=0.05),
    )
    open_chat(page, relay.url)
    send(page, "question one")
    expect(assistant(page)).to_have_attribute("data-status", "completed")
    old_id = assistant(page).get_attribute("data-id")
    assert old_id is not None

    assistant(page).get_by_role("button", name="Regenerate").click()
    expect(assistant(page).locator(".content")).to_have_text("".join(words(5, "second")))
    expect(assistant(page)).to_have_attribute("data-status", "completed")
    expect(page.locator("li.message.assistant")).to_have_count(1)
    assert stored(relay, old_id)["superseded_by"] == assistant(page).get_attribute("data-id")

    page.locator("li.message.user").get_by_role("button", name="Edit").click()
    editor = page.get_by_label("Edit your message")
    expect(editor).to_be_focused()
    editor.fill("question two")
    page.get_by_role("button", name="Save and answer").click()
    expect(page.locator("li.message.user .content")).to_have_text("question two")
    expect(assistant(page).locator(".content")).to_have_text("".join(words(5, "third")))
    expect(assistant(page)).to_have_attribute("data-status", "completed")
    expect(page.locator("li.message")).to_have_count(2)
    assert event_sources(page)["maxOpen"] == 1

    page.reload()  # all of it comes back from the API
    expect(page.locator("li.message.user .content")).to_have_text("question two")
    expect(assistant(page).locator(".content")).to_have_text("".join(words(5, "third")))


def test_a_failure_shows_its_status_and_error(relay: Relay, page: Page) -> None:
    relay.upstream.enqueue(Reply(tokens=words(10), delay=0.02, drop_after=3))
    open_chat(page, relay.url)
    send(page, "this one breaks")
    answer = assistant(page)
    expect(answer).to_have_attribute("data-status", "failed")
    expect(answer.locator(".status")).to_have_text("failed")
    expect(answer.get_by_role("alert")).to_contain_text("upstream_connection_lost")
    expect(answer.locator(".content")).to_have_text("".join(words(3)))
    # The stream's `error` event ended it: no reconnecting banner, no second stream.
    expect(page.locator("#connection")).to_be_hidden()
    assert event_sources(page)["created"] == 1


def test_model_output_is_rendered_as_text_never_run(relay: Relay, page: Page) -> None:
    hostile = [
        "Intro with `inline <b>code</b>` and **bold**.\n\n",
        "<script>window.__pwned = 'script'</script>\n\n",
        '<img src="http://127.0.0.1:9/x.png" onerror="window.__pwned = \'img\'">\n\n',
        "[click me](javascript:window.__pwned='link') <a href=\"javascript:alert(1)\">a</a>\n\n",
        "<style>body { display: none }</style>\n\n",
        "- item one\n- item <i>two</i>\n\n",
        "```html\n<svg onload=\"window.__pwned='svg'\"></svg>\n```\n",
    ]
    relay.upstream.enqueue(Reply(tokens=hostile, delay=0.05))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    open_chat(page, relay.url)
    send(page, "say something nasty")
    answer = assistant(page)
    expect(answer).to_have_attribute("data-status", "completed")
    content = answer.locator(".content")
    for tag in ("script", "img", "a", "style", "svg", "b", "i"):
        expect(content.locator(tag)).to_have_count(0)
    expect(content).to_contain_text("<script>window.__pwned = 'script'</script>")
    expect(content).to_contain_text("onerror=")
    expect(content).to_contain_text("[click me](javascript:window.__pwned='link')")
    expect(content.locator("code").first).to_have_text("inline <b>code</b>")
    expect(content.locator("strong")).to_have_text("bold")
    expect(content.locator("ul li")).to_have_text(["item one", "item <i>two</i>"])
    expect(content.locator("pre code")).to_have_text("<svg onload=\"window.__pwned='svg'\"></svg>")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("body").is_visible()
    assert not [url for url in requests if "x.png" in url]


def test_usable_on_a_phone_sized_screen(relay: Relay, page: Page) -> None:
    page.set_viewport_size({"width": 390, "height": 800})
    relay.upstream.enqueue(Reply(tokens=["A long unbroken ", "x" * 200, " and `code` too"]))
    open_chat(page, relay.url)
    send(page, "small screen")
    expect(assistant(page)).to_have_attribute("data-status", "completed")
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page scrolls sideways: {width}"
    send_button = page.get_by_role("button", name="Send").bounding_box()
    assert send_button is not None and send_button["x"] + send_button["width"] <= 390
    # By keyboard: Tab leaves the message box for Send, Shift+Tab comes back.
    page.get_by_label("Message", exact=True).focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "send"
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.id") == "composer-input"
