"""The end-of-run scan of service logs finds what it is meant to find, and only that."""

from __future__ import annotations

from pathlib import Path

from tests.fakes.secret_scan import Launched, leaks, secrets_of

ENV = {
    "OPENAI_API_KEY": "sk-upstream-0123456789",
    "CHATRELAY_API_KEYS": "acme:key-acme-123,globex:sha256:" + "ab" * 32,
    "CHATRELAY_SECRET": "signing-secret",
    "CHATRELAY_UPSTREAM_HEADERS": '{"X-Title": "my-app-title"}',
    "HTTPS_PROXY": "http://user:proxy-pass%21@127.0.0.1:3128",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}


def test_secrets_of_an_environment() -> None:
    assert secrets_of(ENV) == {
        "sk-upstream-0123456789",
        "key-acme-123",
        "signing-secret",
        "my-app-title",
        "proxy-pass!",
    }


def test_a_log_with_a_secret_or_a_token_is_reported(tmp_path: Path) -> None:
    clean, leaky, tokened = (tmp_path / n for n in ("clean.log", "leaky.log", "token.log"))
    clean.write_text("GET /v1/messages/msg_1/events?token=[redacted] 200\nkey ok\n")
    leaky.write_text("upstream said: bad key sk-upstream-0123456789\n")
    tokened.write_text('"GET /v1/messages/msg_1/events?token=v1.abcdefghijklmnop HTTP/1.1"\n')
    launched = [Launched(p, secrets_of(ENV)) for p in (clean, leaky, tokened)]
    problems = leaks(launched)
    assert len(problems) == 2
    assert str(leaky) in problems[0] and "secret" in problems[0]
    assert str(tokened) in problems[1] and "token" in problems[1]
    assert "sk-upstream" not in "".join(problems), "the report never quotes the secret"
