"""`chatrelay serve --workers 2`: two worker processes behind one port, on both backends.

Which worker served a request is read from the service's log, where every worker line
(access lines included) carries `[worker N]`; nothing in a response says so. Each request
here goes on a new connection, so the kernel picks a worker for each.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import signal
import time
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import CLIENT_KEYS, Stack, base_env, require_redis
from tests.fakes.service import ServiceProcess
from tests.fakes.sse_client import Frame, collect, content_of, events, frames
from tests.fakes.upstream import Reply
from tests.integration.helpers import new_conversation, wait_final

pytestmark = pytest.mark.redis

_SERVING = re.compile(r"worker (\d+) of 2 serving \(pid (\d+)\)")
_ACCESS = re.compile(r'\[worker (\d+)\] \S+ - "(\w+) (\S+) HTTP/1\.1" (\d+)')


def start_pool(stack: Stack, **env: str) -> ServiceProcess:
    """chatrelay with two workers on the stack's database, up once both serve."""
    full_env = {**base_env(stack.database_url, stack.upstream), "REDIS_URL": require_redis()}
    service = ServiceProcess({**full_env, **env}, stack.workdir, args=["--workers", "2"])
    stack.services.append(service)
    service.start(timeout=60)
    wait_for_log(service, lambda log: "2 workers serving" in log, "both workers serving")
    return service


def full_log(service: ServiceProcess) -> str:
    return service.log_path.read_text(errors="replace")


def wait_for_log(
    service: ServiceProcess, condition: Callable[[str], bool], what: str, within: float = 60.0
) -> str:
    deadline = time.monotonic() + within
    while True:
        log = full_log(service)
        if condition(log):
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} in the log after {within}s:\n{log[-4000:]}")
        time.sleep(0.05)


def served_by(service: ServiceProcess, method: str, target: str) -> set[int]:
    """The workers whose access log has `method target` (the exact request target)."""
    return {
        int(m.group(1))
        for m in _ACCESS.finditer(full_log(service))
        if m.group(2) == method and m.group(3) == target
    }


def worker_pids(service: ServiceProcess) -> dict[int, int]:
    """Worker number -> pid of its latest start."""
    return {int(m.group(1)): int(m.group(2)) for m in _SERVING.finditer(full_log(service))}


def fresh_client(service: ServiceProcess) -> httpx.AsyncClient:
    """No keep-alive: every request is a new connection, for the kernel to hand to a worker."""
    return httpx.AsyncClient(
        base_url=service.base_url,
        headers={"Authorization": f"Bearer {CLIENT_KEYS['acme']}"},
        timeout=httpx.Timeout(20.0),
        limits=httpx.Limits(max_keepalive_connections=0),
    )


async def post_stream(client: httpx.AsyncClient, cid: str, content: str) -> list[Frame]:
    """POST with `Accept: text/event-stream`: the stream comes from the generating worker."""
    async with client.stream(
        "POST",
        f"/v1/conversations/{cid}/messages",
        json={"content": content},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200, await response.aread()
        return events(await collect(response))


async def test_two_workers_serve_one_port_and_share_the_record(stack: Stack) -> None:
    pool = start_pool(stack)
    async with fresh_client(pool) as client:
        served: set[int] = set()
        for probe in range(200):
            answer = await client.get(f"/healthz?probe={probe}")
            assert answer.status_code == 200
            assert answer.json() == {"status": "ok"}, "no worker detail leaks into /healthz"
            assert not any(k.lower().startswith("x-chatrelay") for k in answer.headers)
            served |= served_by(pool, "GET", f"/healthz?probe={probe}")
            if served == {1, 2}:
                break
        assert served == {1, 2}, "new connections never reached both workers"

        tokens = [f"t{i} " for i in range(20)]
        stack.upstream.enqueue(Reply(tokens=tokens, delay=0.01))
        cid = await new_conversation(client)
        streamed = await post_stream(client, cid, "through the port")
        assert streamed[-1].event == "done"
        assert content_of(streamed) == "".join(tokens)
        mid = streamed[-1].json["message"]["id"]

        # The finished message reads the same through whichever worker takes the request.
        for _ in range(100):
            message = await wait_final(client, mid)
            assert message["status"] == "completed"
            assert message["content"] == "".join(tokens)
            if served_by(pool, "GET", f"/v1/messages/{mid}") == {1, 2}:
                break
        assert served_by(pool, "GET", f"/v1/messages/{mid}") == {1, 2}
        replay_path = f"/v1/messages/{mid}/events"
        for _ in range(100):
            async with client.stream("GET", replay_path) as response:
                assert response.status_code == 200
                replayed = events(await collect(response))
            assert [(e.event, e.id, e.data) for e in replayed] == [
                (e.event, e.id, e.data) for e in streamed
            ]
            if served_by(pool, "GET", replay_path) == {1, 2}:
                break
        assert served_by(pool, "GET", replay_path) == {1, 2}

    assert pool.terminate() == 0, full_log(pool)[-4000:]


async def _follow_all(client: httpx.AsyncClient, mid: str) -> list[tuple[str | None, ...]]:
    async with client.stream("GET", f"/v1/messages/{mid}/events") as response:
        assert response.status_code == 200
        return [(e.event, e.id, e.data) for e in events(await collect(response))]


async def test_followers_on_either_worker_get_the_same_stream(stack: Stack) -> None:
    """A running message followed from its start through the port: live on the worker
    generating it, from the database on the other; the same ids and data either way."""
    pool = start_pool(stack)
    tokens = [f"f{i} " for i in range(60)]
    stack.upstream.enqueue(Reply(tokens=tokens, delay=0.05))
    target = ""
    async with fresh_client(pool) as client:
        cid = await new_conversation(client)
        posted = await client.post(f"/v1/conversations/{cid}/messages", json={"content": "f"})
        assert posted.status_code == 202, posted.text
        mid = posted.json()["assistant_message"]["id"]
        target = f"/v1/messages/{mid}/events"
        followers = []
        for _ in range(30):  # one more follower at a time, until both workers hold one
            followers.append(asyncio.create_task(_follow_all(client, mid)))
            await asyncio.sleep(0.05)
            if served_by(pool, "GET", target) == {1, 2}:
                break
        streams = await asyncio.gather(*followers)
        stored = await wait_final(client, mid)
    assert served_by(pool, "GET", target) == {1, 2}, "every follower landed on the same worker"
    assert all(stream == streams[0] for stream in streams)
    assert [kind for kind, _, _ in streams[0]][-1] == "done"
    assert stored["status"] == "completed" and stored["content"] == "".join(tokens)
    assert pool.terminate() == 0, full_log(pool)[-4000:]


async def test_sigterm_drains_every_worker_then_the_parent_exits_0(stack: Stack) -> None:
    pool = start_pool(stack, CHATRELAY_SHUTDOWN_GRACE="1.5")
    short_tokens = [f"s{i} " for i in range(5)]
    stack.upstream.enqueue(
        Reply(tokens=short_tokens, delay=0.15),
        Reply(tokens=[f"l{i} " for i in range(300)], delay=0.05),
    )
    async with fresh_client(pool) as client:
        cid = await new_conversation(client)
        short_task = asyncio.create_task(post_stream(client, cid, "short"))
        await asyncio.to_thread(stack.upstream.wait_for_requests, 1)
        long_task = asyncio.create_task(post_stream(client, cid, "long"))
        await asyncio.to_thread(stack.upstream.wait_for_requests, 2)
        await asyncio.sleep(0.2)
        assert pool.proc is not None
        pool.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        refused = await client.post(f"/v1/conversations/{cid}/messages", json={"content": "x"})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "shutting_down"
        short_events = await short_task
        long_events = await long_task
        exit_code = await asyncio.to_thread(pool.proc.wait, 40)
    log = full_log(pool)
    assert exit_code == 0, log[-4000:]
    assert "second signal" not in log
    assert len(re.findall(r"\[worker \d\] chatrelay: shutting down: draining", log)) == 2

    assert short_events[-1].event == "done"
    assert short_events[-1].json["message"]["status"] == "completed"
    assert content_of(short_events) == "".join(short_tokens)
    assert long_events[-1].event == "error"
    assert long_events[-1].json["error"]["code"] == "shutting_down"
    interrupted = long_events[-1].json["message"]
    assert interrupted["status"] == "interrupted"
    assert interrupted["content"] == content_of(long_events) != ""

    restarted = stack.service()  # one process on the same database reads what was recorded
    async with stack.client(restarted) as client:
        stored_long = (await client.get(f"/v1/messages/{interrupted['id']}")).json()
        stored_short = (
            await client.get(f"/v1/messages/{short_events[-1].json['message']['id']}")
        ).json()
    assert stored_long["status"] == "interrupted"
    assert stored_long["content"] == interrupted["content"]
    assert stored_short["status"] == "completed"
    assert stored_short["content"] == "".join(short_tokens)


async def test_sigterm_to_every_process_at_once_is_one_signal(stack: Stack) -> None:
    """systemd signals every process of a service: the workers' own SIGTERM and the one the
    parent passes on are one request to drain, not a second signal."""
    pool = start_pool(stack, CHATRELAY_SHUTDOWN_GRACE="10")
    tokens = [f"g{i} " for i in range(30)]
    stack.upstream.enqueue(Reply(tokens=tokens, delay=0.05))
    async with fresh_client(pool) as client:
        cid = await new_conversation(client)
        stream = asyncio.create_task(post_stream(client, cid, "group"))
        await asyncio.to_thread(stack.upstream.wait_for_requests, 1)
        await asyncio.sleep(0.2)
        assert pool.proc is not None
        for pid in (pool.proc.pid, *worker_pids(pool).values()):
            os.kill(pid, signal.SIGTERM)
        streamed = await stream
        exit_code = await asyncio.to_thread(pool.proc.wait, 40)
    assert exit_code == 0, full_log(pool)[-4000:]
    assert "second signal" not in full_log(pool)
    assert streamed[-1].event == "done"
    assert streamed[-1].json["message"]["status"] == "completed"
    assert content_of(streamed) == "".join(tokens)


async def test_a_worker_that_dies_is_restarted(stack: Stack) -> None:
    pool = start_pool(stack)
    before = worker_pids(pool)
    assert set(before) == {1, 2}
    os.kill(before[1], signal.SIGKILL)
    log = wait_for_log(
        pool,
        lambda log: worker_pids(pool).get(1, before[1]) != before[1],
        "restarted worker 1",
    )
    assert f"worker 1 (pid {before[1]}) exited unexpectedly (exit code -9)" in log
    after = worker_pids(pool)
    assert after[2] == before[2], "the other worker kept serving"
    async with fresh_client(pool) as client:
        served: set[int] = set()
        for probe in range(200):
            answer = await client.get(f"/healthz?after-restart={probe}")
            assert answer.status_code == 200
            served |= served_by(pool, "GET", f"/healthz?after-restart={probe}")
            if served == {1, 2}:
                break
        assert served == {1, 2}, "the restarted worker never served"
    assert pool.terminate() == 0, full_log(pool)[-4000:]


async def test_a_second_signal_exits_at_once(stack: Stack) -> None:
    pool = start_pool(stack)  # default 25 s grace: only the second signal can end it soon
    stack.upstream.enqueue(Reply(tokens=[f"x{i} " for i in range(400)], delay=0.05))
    async with fresh_client(pool) as client:
        cid = await new_conversation(client)
        stream = asyncio.create_task(post_stream(client, cid, "stay"))
        await asyncio.to_thread(stack.upstream.wait_for_requests, 1)
        await asyncio.sleep(0.3)
        assert pool.proc is not None
        pool.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert pool.proc.poll() is None, "the first signal drains"
        started = time.monotonic()
        pool.proc.send_signal(signal.SIGINT)
        await asyncio.to_thread(pool.proc.wait, 20)
        assert time.monotonic() - started < 8, "a second signal must not wait for the grace"
        streamed = await stream
    assert streamed[-1].event == "error"
    mid = streamed[0].json["message"]["id"]
    restarted = stack.service()
    async with stack.client(restarted) as client:
        stored = (await client.get(f"/v1/messages/{mid}")).json()
    assert stored["status"] == "interrupted"
    assert stored["content"].startswith("x0 ")


_HAS_REDIS_BROKER = importlib.util.find_spec("chatrelay.broker.redis") is not None


@pytest.mark.skipif(
    not _HAS_REDIS_BROKER,
    reason="needs the Redis broker (issue #11 item 1, chatrelay/broker/redis.py): without it a"
    " worker that does not run the generation follows it from database checkpoints and"
    " refuses ids handed out past the last one",
)
async def test_reconnects_land_on_either_worker_and_resume_exactly(stack: Stack) -> None:
    pool = start_pool(stack)
    tokens = [f"r{i} " for i in range(150)]
    stack.upstream.enqueue(Reply(tokens=tokens, delay=0.04))
    seen: list[Frame] = []
    targets_while_streaming: list[str] = []
    async with fresh_client(pool) as client:
        cid = await new_conversation(client)
        posted = await client.post(f"/v1/conversations/{cid}/messages", json={"content": "go"})
        assert posted.status_code == 202, posted.text
        mid = posted.json()["assistant_message"]["id"]
        while not seen or seen[-1].event not in ("done", "error"):
            target = f"/v1/messages/{mid}/events"
            if seen:
                target += f"?last_event_id={seen[-1].id}"
            async with client.stream("GET", target) as response:
                assert response.status_code == 200, (target, await response.aread())
                got = 0
                async for frame in frames(response):
                    if frame.event is None:
                        continue  # retry: / pings
                    seen.append(frame)
                    got += 1
                    if frame.event in ("done", "error") or got == 3:
                        break
            if seen[-1].event not in ("done", "error"):
                targets_while_streaming.append(target)
        stored = await wait_final(client, mid)
    assert [int(e.id or 0) for e in seen] == list(range(1, len(seen) + 1))
    assert seen[-1].event == "done"
    assert content_of(seen) == stored["content"] == "".join(tokens)
    workers: set[int] = set()
    for target in targets_while_streaming:
        workers |= served_by(pool, "GET", target)
    assert workers == {1, 2}, "every reconnect during the stream landed on the same worker"
    assert pool.terminate() == 0, full_log(pool)[-4000:]
