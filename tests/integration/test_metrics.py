"""`GET /metrics` over a real service: Prometheus text, `chatrelay_` names, and values that
move with what the service does (read with prometheus_client's own parser)."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import Relay, Stack
from tests.fakes.upstream import Reply
from tests.integration.helpers import new_conversation, post_accepted, post_streaming, wait_final
from tests.integration.scrape import Scrape, scrape, scrape_until

POST_ROUTE = "/v1/conversations/{cid}/messages"
EXPECTED_FAMILIES = {
    "chatrelay_http_requests": "counter",
    "chatrelay_http_request_duration_seconds": "histogram",
    "chatrelay_active_generations": "gauge",
    "chatrelay_active_subscribers": "gauge",
    "chatrelay_time_to_first_token_seconds": "histogram",
    "chatrelay_generation_duration_seconds": "histogram",
    "chatrelay_upstream_latency_seconds": "histogram",
    "chatrelay_prompt_tokens": "counter",
    "chatrelay_completion_tokens": "counter",
    "chatrelay_generations": "counter",
    "chatrelay_upstream_retries": "counter",
    "chatrelay_checkpoint_seconds": "histogram",
    "chatrelay_final_write_seconds": "histogram",
    "chatrelay_database_errors": "counter",
    "chatrelay_broker_errors": "counter",
    "chatrelay_rejected_requests": "counter",
}


def _stream_counted(before: Scrape) -> object:
    def check(now: Scrape) -> bool:
        name = "chatrelay_http_requests_total"
        return (
            now.value(name, route=POST_ROUTE, status="200")
            > before.value(name, route=POST_ROUTE, status="200")
            and now.value("chatrelay_active_subscribers") == 0
        )

    return check


async def test_metrics_are_prometheus_text_named_chatrelay(relay: Relay) -> None:
    async with httpx.AsyncClient(base_url=relay.url) as anonymous:
        got = await scrape(anonymous)  # no client key: scrapers hold none
    assert all(name.startswith("chatrelay_") for name in got.families), got.families
    for name, kind in EXPECTED_FAMILIES.items():
        assert got.families.get(name) == kind, (name, got.families.get(name))
    assert not [s for s in got.samples if s.name.endswith("_created")]


async def test_a_streamed_generation_moves_the_counters(relay: Relay) -> None:
    tokens = ["one", " two", " three"]
    usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    relay.upstream.enqueue(Reply(tokens=tokens, usage=usage))
    async with relay.client() as client:
        cid = await new_conversation(client)
        before = await scrape(client)
        _, frames = await post_streaming(client, cid, "count me")
        assert frames[-1].event == "done"
        after = await scrape_until(client, _stream_counted(before))

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert (
        delta("chatrelay_http_requests_total", route=POST_ROUTE, method="POST", status="200") == 1
    )
    assert delta("chatrelay_generations_total", status="completed", error_code="none") == 1
    assert delta("chatrelay_time_to_first_token_seconds_count") == 1
    assert delta("chatrelay_time_to_first_token_seconds_sum") > 0
    assert delta("chatrelay_generation_duration_seconds_count", status="completed") == 1
    assert delta("chatrelay_upstream_latency_seconds_count") == 1
    assert delta("chatrelay_prompt_tokens_total") == 11
    assert delta("chatrelay_completion_tokens_total") == 3
    assert delta("chatrelay_streamed_events_total") == len(tokens)
    assert delta("chatrelay_final_write_seconds_count") >= 1
    assert delta("chatrelay_http_requests_total", route="/v1/conversations", status="201") == 0
    assert after.value("chatrelay_active_generations") == 0
    assert after.value("chatrelay_active_subscribers") == 0


async def test_the_gauges_count_running_generations_and_open_streams(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(tokens=["a", "b"], stall_after=1))
    async with relay.client() as client:
        cid = await new_conversation(client)
        posted = await post_accepted(client, cid, "hold on")
        mid = posted["assistant_message"]["id"]
        async with client.stream("GET", f"/v1/messages/{mid}/events") as stream:
            assert stream.status_code == 200
            during = await scrape_until(
                client,
                lambda s: (
                    s.value("chatrelay_active_subscribers") >= 1
                    and s.value("chatrelay_time_to_first_token_seconds_count") > 0
                ),
            )
            assert during.value("chatrelay_active_generations") >= 1
            assert during.value("chatrelay_active_subscribers") >= 1
        cancelled = await client.post(f"/v1/messages/{mid}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        after = await scrape_until(
            client,
            lambda s: (
                s.value("chatrelay_active_subscribers") == 0
                and s.value("chatrelay_active_generations") == 0
            ),
        )
    assert after.value("chatrelay_active_generations") == 0
    assert after.value("chatrelay_active_subscribers") == 0
    assert after.value("chatrelay_generations_total", status="cancelled", error_code="none") >= 1


async def test_a_failed_generation_is_counted_with_its_error_code(relay: Relay) -> None:
    refused = b'{"error": {"message": "no such parameter", "type": "invalid_request_error"}}'
    relay.upstream.enqueue(Reply(status=400, body=refused))
    async with relay.client() as client:
        before = await scrape(client)
        cid = await new_conversation(client)
        posted = await post_accepted(client, cid, "fail me")
        final = await wait_final(client, posted["assistant_message"]["id"])
        assert final["status"] == "failed" and final["error"]["code"] == "upstream_bad_request"
        labels = {"status": "failed", "error_code": "upstream_bad_request"}
        # Reported once its final write is done, a moment after the message reads `failed`.
        after = await scrape_until(
            client,
            lambda s: (
                s.value("chatrelay_generations_total", **labels)
                > before.value("chatrelay_generations_total", **labels)
            ),
        )
    assert after.value("chatrelay_generations_total", **labels) == (
        before.value("chatrelay_generations_total", **labels) + 1
    )
    # It never produced a token: no time-to-first-token observation for it.
    assert after.value("chatrelay_time_to_first_token_seconds_count") == before.value(
        "chatrelay_time_to_first_token_seconds_count"
    )


async def test_upstream_retries_are_counted_by_code(relay: Relay) -> None:
    relay.upstream.enqueue(Reply(status=503, body=b'{"error": {"message": "busy"}}'), Reply())
    async with relay.client() as client:
        before = await scrape(client)
        cid = await new_conversation(client)
        posted = await post_accepted(client, cid, "retry me")
        final = await wait_final(client, posted["assistant_message"]["id"])
        assert final["status"] == "completed", final
        after = await scrape_until(client, lambda s: s.value("chatrelay_active_generations") == 0)
    name = "chatrelay_upstream_retries_total"
    assert after.value(name, code="upstream_unavailable") == (
        before.value(name, code="upstream_unavailable") + 1
    )
    assert after.value("chatrelay_upstream_latency_seconds_count") == (
        before.value("chatrelay_upstream_latency_seconds_count") + 2
    )


async def test_route_labels_are_templates_never_raw_paths(relay: Relay) -> None:
    nonce = uuid.uuid4().hex
    async with relay.client() as client:
        cid = await new_conversation(client)
        await client.get(f"/v1/conversations/{cid}")
        await client.get("/v1/messages/msg_01ARZ3NDEKTSV4RRFFQ69G5FAV")
        await client.get(f"/no/such/{nonce}")
        brewed = await client.request("PROPFIND", f"/v1/conversations/{cid}")
        assert brewed.status_code == 405, brewed.text
        got = await scrape(client)
    routes = got.label_values("chatrelay_http_requests_total", "route")
    assert "/v1/conversations/{cid}" in routes and "/v1/messages/{mid}" in routes
    assert "unmatched" in routes
    for route in routes:
        assert nonce not in route and "conv_" not in route and "msg_" not in route, route
    methods = got.label_values("chatrelay_http_requests_total", "method")
    assert "PROPFIND" not in methods and "other" in methods


async def test_requests_refused_by_a_limit_are_counted_by_error_code_and_limit(
    relay: Relay,
) -> None:
    async with relay.client() as client:
        before = await scrape(client)
        plain = await client.post(
            "/v1/conversations", content=b"{}", headers={"Content-Type": "text/plain"}
        )
        assert plain.status_code == 415, plain.text
        huge = await client.post("/v1/conversations", json={"title": "x" * 2_000_000})
        assert huge.status_code == 413, huge.text
        # The size caps answer 422, and count all the same.
        titled = await client.post("/v1/conversations", json={"title": "t" * 1001})
        assert titled.status_code == 422 and titled.json()["error"]["code"] == "too_long"
        stuffed = await client.post("/v1/conversations", json={"metadata": {"m": "x" * 20_000}})
        assert stuffed.status_code == 422 and stuffed.json()["error"]["code"] == "too_large"
        cid = await new_conversation(client)
        wordy = await client.post(
            f"/v1/conversations/{cid}/messages", json={"content": "w" * 200_001}
        )
        assert wordy.status_code == 422 and wordy.json()["error"]["code"] == "too_long"
        # A 422 that is no limit (an unknown field) is not a rejection.
        unknown = await client.post("/v1/conversations", json={"titel": "typo"})
        assert unknown.status_code == 422, unknown.text
        after = await scrape(client)
    name = "chatrelay_rejected_requests_total"
    for code, limit in [
        ("unsupported_media_type", "media_type"),
        ("payload_too_large", "body_size"),
        ("too_long", "title"),
        ("too_large", "metadata"),
        ("too_long", "content"),
    ]:
        labels = {"code": code, "limit": limit}
        assert after.value(name, **labels) == before.value(name, **labels) + 1, labels
    assert after.value(name, code="unknown_field") == before.value(name, code="unknown_field")
    assert (
        after.value("chatrelay_http_requests_total", route="/v1/conversations", status="415")
        == before.value("chatrelay_http_requests_total", route="/v1/conversations", status="415")
        + 1
    )


async def test_refusals_below_the_app_are_counted_too(relay: Relay) -> None:
    """A head too large (431) or a target too long (414) never reaches the app; the HTTP
    protocol counts them in the same metric."""
    async with relay.client() as client:
        before = await scrape(client)
        big = await client.get("/v1/conversations", headers={"X-Big": "b" * 40_000})
        assert big.status_code == 431, big.text
    async with relay.client() as client:
        long = await client.get("/v1/conversations?pad=" + "u" * 9_000)
        assert long.status_code == 414, long.text
    async with relay.client() as client:
        after = await scrape(client)
    name = "chatrelay_rejected_requests_total"
    for code, limit in [("headers_too_large", "header_size"), ("uri_too_long", "url_length")]:
        labels = {"code": code, "limit": limit}
        assert after.value(name, **labels) == before.value(name, **labels) + 1, labels


async def test_quota_refusals_are_counted_by_limit(stack: Stack) -> None:
    service = stack.service(
        CHATRELAY_RATE_LIMIT_PER_MINUTE="1",
        CHATRELAY_RATE_LIMIT_BURST="6",
        CHATRELAY_MAX_GENERATIONS_PER_TENANT="1",
        CHATRELAY_MAX_SUBSCRIBERS_PER_MESSAGE="1",
    )
    stack.upstream.set_default(Reply(tokens=["slow "] * 60, delay=0.1))
    name = "chatrelay_rejected_requests_total"
    async with stack.client(service) as acme, stack.client(service, "globex") as globex:
        before = await scrape(acme)  # /metrics is no `/v1` route: not charged
        cid = await new_conversation(acme)  # acme's 1st request of its burst of 6
        mid = (await post_accepted(acme, cid, "hold"))["assistant_message"]["id"]
        async with acme.stream("GET", f"/v1/messages/{mid}/events") as held:
            assert held.status_code == 200
            second = await acme.get(f"/v1/messages/{mid}/events")
            assert second.status_code == 429, second.text
        again = await acme.post(f"/v1/conversations/{cid}/messages", json={"content": "more"})
        assert again.status_code == 429, again.text
        assert (await acme.post(f"/v1/messages/{mid}/cancel")).status_code == 200  # 6th
        for _ in range(6):
            assert (await globex.get("/v1/conversations")).status_code == 200
        assert (await globex.get("/v1/conversations")).status_code == 429
        assert (await globex.get("/v1/models")).status_code == 429  # OpenAI's shape, same count
        after = await scrape(acme)
    for code, limit, count in [
        ("too_many_subscribers", "subscribers", 1),
        ("too_many_generations", "generations", 1),
        ("rate_limited", "request_rate", 2),
    ]:
        labels = {"code": code, "limit": limit}
        assert after.value(name, **labels) == before.value(name, **labels) + count, labels
