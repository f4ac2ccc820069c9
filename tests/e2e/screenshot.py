"""Takes docs/screenshot-page.png: the page mid-stream against a `make run`-like service.

Run with `make screenshot` (or `python -m tests.e2e.screenshot PATH`). The service runs
with nothing configured, so answers come from the built-in mock upstream; the demo
conversation uses `mock-slow` so that the picture catches an answer half written.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import expect, sync_playwright

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.fakes.service import ServiceProcess


def _seed(base_url: str) -> str:
    """A few finished conversations for the list, and the demo one; returns its id."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for title, question in [
            ("Packing list for a weekend hike", "What should I pack for two days?"),
            ("Regex for ISO dates", "A regex for 2026-12-02?"),
        ]:
            cid = client.post("/v1/conversations", json={"title": title}).json()["id"]
            client.post(f"/v1/conversations/{cid}/messages", json={"content": question})
        demo = client.post(
            "/v1/conversations", json={"title": "How does resume work?", "model": "mock-slow"}
        ).json()["id"]
        posted = client.post(
            f"/v1/conversations/{demo}/messages",
            json={"content": "Hi! Can you stream an answer?", "model": "mock"},
        ).json()
        mid = posted["assistant_message"]["id"]
        deadline = time.monotonic() + 20
        while client.get(f"/v1/messages/{mid}").json()["status"] == "streaming":
            if time.monotonic() > deadline:
                raise RuntimeError("the mock's first answer did not finish")
            time.sleep(0.1)
        return str(demo)


def take(path: Path) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        service = ServiceProcess(
            {"DATABASE_URL": f"sqlite:///{workdir}/chatrelay.db"}, Path(workdir)
        )
        service.start()
        try:
            demo = _seed(service.base_url)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
                )
                page = browser.new_page(viewport={"width": 1100, "height": 720})
                page.goto(f"{service.base_url}/#{demo}")
                box = page.get_by_label("Message", exact=True)
                box.fill("How does the page resume a stream after a dropped connection?")
                box.press("Enter")
                answer = page.locator("li.message.assistant").last
                expect(answer).to_have_attribute("data-status", "streaming")
                page.wait_for_timeout(4500)
                page.screenshot(path=str(path))
                browser.close()
        finally:
            service.terminate()


if __name__ == "__main__":
    take(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshot-page.png"))
