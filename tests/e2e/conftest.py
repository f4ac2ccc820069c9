"""Browser tests: Debian's Chromium driven by Playwright against a real chatrelay process.

Playwright cannot download its own browser here, so the tests use the system's
`/usr/bin/chromium` (`.ci/run` installs it). Without it they are skipped with the reason,
except under CI (`CI=true`), where a missing browser is a failure. They run on SQLite
only: the page talks to the HTTP API, which the integration suite already checks on both
backends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.conftest import CLIENT_KEYS, Relay, base_env, database_url
from tests.fakes.service import ServiceProcess
from tests.fakes.upstream import FakeUpstream

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
KEY = CLIENT_KEYS["acme"]

# Counts the page's EventSources, so tests can check a tab never holds more than one open.
COUNT_EVENT_SOURCES = """
(() => {
  const Native = window.EventSource;
  const live = new Set();
  const stats = { created: 0, maxOpen: 0 };
  window.__eventSources = stats;
  class Counted extends Native {
    constructor(...args) {
      super(...args);
      for (const source of live) if (source.readyState === Native.CLOSED) live.delete(source);
      live.add(this);
      stats.created += 1;
      stats.maxOpen = Math.max(stats.maxOpen, live.size);
    }
    close() {
      live.delete(this);
      super.close();
    }
  }
  window.EventSource = Counted;
})();
"""

expect.set_options(timeout=15_000)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI must run the browser tests", pytrace=False)
        pytest.skip(reason + " to run the browser tests")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def relay(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Relay]:
    """chatrelay on SQLite with the fake upstream (the e2e suite's own, single backend)."""
    workdir = tmp_path_factory.mktemp("relay-e2e")
    url, _ = database_url("sqlite", workdir)
    upstream = FakeUpstream()
    upstream.start()
    extra = getattr(request.module, "RELAY_ENV", {})
    service = ServiceProcess({**base_env(url, upstream), **extra}, workdir)
    try:
        service.start()
        yield Relay(service=service, upstream=upstream, backend="sqlite", database_url=url)
    finally:
        if service.proc is not None:
            service.terminate()
        upstream.stop()


def _watch_for_problems(page: Page) -> list[str]:
    """Uncaught exceptions and the page's own `chatrelay:` console errors. Browser-made
    console errors (a refused connection, a CORS refusal) are expected in some tests."""
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    page.on(
        "console",
        lambda msg: problems.append(msg.text) if msg.text.startswith("chatrelay:") else None,
    )
    return problems


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    made = browser.new_context(viewport={"width": 1100, "height": 800})
    made.add_init_script(COUNT_EVENT_SOURCES)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A fresh tab (fresh local storage); at the end it must have had no script problem."""
    made = context.new_page()
    problems = _watch_for_problems(made)
    yield made
    assert not problems, problems


def open_chat(page: Page, base_url: str, key: str = KEY) -> None:
    """Open the page and give it the client key, as a first-time user does."""
    page.goto(base_url + "/")
    expect(page.get_by_label("Client key")).to_be_visible()
    page.get_by_label("Client key").fill(key)
    page.get_by_role("button", name="Save key").click()
    expect(page.locator("#key-form")).to_be_hidden()


def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


def assistant(page: Page, index: int = -1) -> Any:
    answers = page.locator("li.message.assistant")
    return answers.last if index == -1 else answers.nth(index)


def stored(relay: Relay, mid: str) -> dict[str, Any]:
    response = httpx.get(
        f"{relay.url}/v1/messages/{mid}", headers={"Authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def event_sources(page: Page) -> dict[str, int]:
    stats: dict[str, int] = page.evaluate("window.__eventSources")
    return stats
