"""A front-end on another origin (another loopback port) using the API with CORS.

`CHATRELAY_CORS_ORIGINS` names the origin of a tiny page served here; that page posts a
message with `fetch` and follows the stream with `EventSource`. The same page against a
chatrelay without the setting must be refused by the browser.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page

from tests.conftest import Relay
from tests.e2e.conftest import KEY, stored
from tests.e2e.test_chat_page import words
from tests.fakes.service import ServiceProcess, free_port
from tests.fakes.upstream import Reply

FRONT_PORT = free_port()
FRONT = f"http://127.0.0.1:{FRONT_PORT}"
RELAY_ENV = {"CHATRELAY_CORS_ORIGINS": FRONT}

# Runs in the other origin's page: the whole client, fetch + EventSource, as a front-end
# developer would write it. Returns what it saw, or how it was refused.
CLIENT = """
async ([base, key]) => {
  const headers = { Authorization: `Bearer ${key}`, "Content-Type": "application/json" };
  try {
    const created = await fetch(`${base}/v1/conversations`, {
      method: "POST", headers, body: JSON.stringify({ title: "from elsewhere" }),
    });
    const cid = (await created.json()).id;
    const posted = await fetch(`${base}/v1/conversations/${cid}/messages`, {
      method: "POST", headers, body: JSON.stringify({ content: "hello across origins" }),
    });
    const body = await posted.json();
    const messageId = posted.headers.get("X-Message-Id");
    const text = await new Promise((resolve, reject) => {
      let text = "";
      const source = new EventSource(base + body.stream_url);
      source.addEventListener("delta", (e) => { text += JSON.parse(e.data).content; });
      source.addEventListener("done", () => { source.close(); resolve(text); });
      source.addEventListener("error", (e) => {
        if (e.data === undefined && source.readyState === EventSource.CLOSED) {
          reject(new Error("stream refused"));
        }
      });
    });
    return { ok: true, text, messageId, id: body.assistant_message.id };
  } catch (error) {
    return { ok: false, error: `${error.name}: ${error.message}` };
  }
}
"""


FOLLOW = """
(url) => new Promise((resolve) => {
  const source = new EventSource(url);
  source.addEventListener("delta", () => { source.close(); resolve("read"); });
  source.addEventListener("error", (e) => {
    if (e.data === undefined && source.readyState === EventSource.CLOSED) resolve("refused");
  });
})
"""


class _FrontPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>another origin</title><p>front-end</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def front() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", FRONT_PORT), _FrontPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FRONT
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def without_cors(relay: Relay) -> Iterator[ServiceProcess]:
    service = relay.second_service()  # same database and upstream, no CHATRELAY_CORS_ORIGINS
    service.start()
    try:
        yield service
    finally:
        service.terminate()


def test_a_listed_origin_can_post_and_follow_a_stream(relay: Relay, front: str, page: Page) -> None:
    relay.upstream.enqueue(Reply(tokens=words(8), delay=0.03))
    page.goto(front + "/")
    result = page.evaluate(CLIENT, [relay.url, KEY])
    assert result["ok"], result
    assert result["text"] == "".join(words(8)) == stored(relay, result["id"])["content"]
    assert result["messageId"] == result["id"]  # the exposed header is readable


def test_without_the_setting_the_browser_refuses(
    relay: Relay, without_cors: ServiceProcess, front: str, page: Page
) -> None:
    page.goto(front + "/")
    result = page.evaluate(CLIENT, [without_cors.base_url, KEY])
    assert result == {"ok": False, "error": "TypeError: Failed to fetch"}

    # Nor can it follow a stream, even with a valid stream_url handed to it.
    relay.upstream.enqueue(Reply(tokens=words(3)))
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=without_cors.base_url, headers=auth) as client:
        cid = client.post("/v1/conversations", json={}).json()["id"]
        posted = client.post(f"/v1/conversations/{cid}/messages", json={"content": "hi"})
    stream_url = without_cors.base_url + posted.json()["stream_url"]
    outcome = page.evaluate(FOLLOW, stream_url)
    assert outcome == "refused"
