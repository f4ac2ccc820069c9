"""Configuration: defaults that work with nothing set, and bad values rejected clearly."""

from __future__ import annotations

import pytest

from chatrelay.config import load_settings
from chatrelay.errors import ConfigError
from chatrelay.keys import ClientKey, key_digest


def test_defaults_need_no_configuration() -> None:
    settings = load_settings({})
    assert settings.use_mock_upstream
    assert settings.database_url == "sqlite:///data/chatrelay.db"
    assert settings.openai_base_url == "https://api.openai.com/v1"
    assert settings.default_model == "gpt-4o-mini"
    assert settings.shutdown_grace == 25.0
    assert settings.api_keys == ()
    assert settings.secret_is_random and len(settings.secret) == 32
    assert settings.redis_url is None
    assert settings.redis_prefix == "chatrelay:"
    assert settings.lease_ttl == 30.0
    assert settings.sqlite_busy_timeout_ms == 5000


def test_a_base_url_without_a_key_is_a_keyless_server_not_the_mock() -> None:
    local = load_settings({"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"})
    assert not local.use_mock_upstream and not local.openai_api_key
    assert load_settings({"OPENAI_BASE_URL": "  "}).use_mock_upstream, "blank is unset"


def test_values_are_read() -> None:
    settings = load_settings(
        {
            "OPENAI_API_KEY": "sk-abc",
            "OPENAI_BASE_URL": "http://127.0.0.1:9999/v1/",
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
            "CHATRELAY_API_KEYS": "acme:k1, globex:k2",
            "CHATRELAY_DEFAULT_MODEL": "m",
            "CHATRELAY_SECRET": "s3cret",
            "CHATRELAY_SHUTDOWN_GRACE": "3.5",
            "CHATRELAY_INCLUDE_USAGE": "false",
            "CHATRELAY_LEASE_TTL": "2.5",
            "CHATRELAY_REDIS_PREFIX": "tenant-a:",
            "CHATRELAY_SQLITE_BUSY_TIMEOUT": "0.25",
        }
    )
    assert not settings.use_mock_upstream
    assert settings.openai_base_url == "http://127.0.0.1:9999/v1"
    assert settings.database_url.startswith("postgresql://")
    assert settings.api_keys == (
        ClientKey("acme", key_digest("k1")),
        ClientKey("globex", key_digest("k2")),
    )
    assert settings.secret == b"s3cret" and not settings.secret_is_random
    assert settings.shutdown_grace == 3.5
    assert settings.include_usage is False
    assert settings.lease_ttl == 2.5
    assert settings.redis_prefix == "tenant-a:"
    assert settings.sqlite_busy_timeout_ms == 250


def test_redis_settings() -> None:
    defaults = load_settings({})
    assert defaults.redis_prefix == "chatrelay:"
    assert defaults.redis_finished_ttl == 300.0 and defaults.redis_max_events == 200_000
    settings = load_settings(
        {
            "REDIS_URL": "redis://:pw-in-url@127.0.0.1:6379/3",
            "CHATRELAY_REDIS_PREFIX": "staging:",
            "CHATRELAY_REDIS_FINISHED_TTL": "60",
            "CHATRELAY_REDIS_MAX_EVENTS": "5000",
        }
    )
    assert settings.redis_url == "redis://:pw-in-url@127.0.0.1:6379/3"
    assert "pw-in-url" not in repr(settings)
    assert settings.redis_prefix == "staging:"
    assert settings.redis_finished_ttl == 60.0 and settings.redis_max_events == 5000


def test_cors_origins_are_a_list_or_star() -> None:
    assert load_settings({}).cors_origins == ()
    both = load_settings({"CHATRELAY_CORS_ORIGINS": "http://127.0.0.1:5173, HTTPS://App.Example"})
    assert both.cors_origins == ("http://127.0.0.1:5173", "https://app.example")
    assert load_settings({"CHATRELAY_CORS_ORIGINS": " * "}).cors_origins == ("*",)


def test_secrets_stay_out_of_repr() -> None:
    settings = load_settings({"OPENAI_API_KEY": "sk-very-secret", "CHATRELAY_API_KEYS": "a:kk"})
    assert "sk-very-secret" not in repr(settings)
    assert "kk" not in repr(settings.__repr__())


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://h:99999/db"}, "port"),
        ({"DATABASE_URL": "sqlite://"}, "DATABASE_URL"),
        ({"OPENAI_BASE_URL": "ftp://x"}, "OPENAI_BASE_URL"),
        ({"CHATRELAY_API_KEYS": "no-colon"}, "tenant:key"),
        ({"CHATRELAY_SHUTDOWN_GRACE": "soon"}, "CHATRELAY_SHUTDOWN_GRACE"),
        ({"CHATRELAY_SHUTDOWN_GRACE": "-1"}, ">="),
        ({"CHATRELAY_INCLUDE_USAGE": "maybe"}, "true or false"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://:pw@h:99999/0"}, "REDIS_URL has an invalid port"),
        (
            {"CHATRELAY_REDIS_FINISHED_TTL": "10", "CHATRELAY_FINISHED_LOG_TTL": "30"},
            ">= CHATRELAY_FINISHED_LOG_TTL",
        ),
        ({"CHATRELAY_REDIS_MAX_EVENTS": "10"}, "CHATRELAY_REDIS_MAX_EVENTS"),
        ({"CHATRELAY_LEASE_TTL": "0.5"}, "CHATRELAY_LEASE_TTL"),
        ({"CHATRELAY_SQLITE_BUSY_TIMEOUT": "0"}, "CHATRELAY_SQLITE_BUSY_TIMEOUT"),
        ({"CHATRELAY_SQLITE_BUSY_TIMEOUT": "nan"}, "finite"),
        ({"CHATRELAY_STREAM_TOKEN_TTL": "inf"}, "finite"),
        ({"CHATRELAY_SHUTDOWN_GRACE": "1e400"}, "finite"),
        ({"CHATRELAY_API_KEYS": " , "}, "names no tenant:key"),
        ({"CHATRELAY_API_KEYS": "a:k1,b:k1"}, "repeats a key"),
        ({"CHATRELAY_CORS_ORIGINS": "example.com"}, "scheme://host[:port]"),
        ({"CHATRELAY_CORS_ORIGINS": "https://example.com/"}, "no trailing slash"),
        ({"CHATRELAY_CORS_ORIGINS": "https://example.com/app"}, "CHATRELAY_CORS_ORIGINS entry 1"),
        ({"CHATRELAY_CORS_ORIGINS": "http://a.com,ftp://b.com"}, "entry 2"),
        ({"CHATRELAY_CORS_ORIGINS": "http://a.com:99999"}, "invalid port"),
        ({"CHATRELAY_CORS_ORIGINS": "*,http://a.com"}, "only entry"),
        ({"CHATRELAY_CORS_ORIGINS": " , "}, "names no origin"),
    ],
)
def test_bad_values_raise_config_error(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert fragment in caught.value.message


def test_http_limits_default_to_values_a_public_server_can_use() -> None:
    settings = load_settings({})
    assert settings.max_header_bytes == 32_768
    assert settings.max_url_bytes == 8_192
    assert settings.header_timeout == 15.0
    assert settings.body_timeout == 30.0
    assert settings.keep_alive_timeout == 5
    assert settings.write_timeout == 30.0
    assert settings.max_connections == 4_096


def test_http_limits_are_read() -> None:
    settings = load_settings(
        {
            "CHATRELAY_MAX_HEADER_BYTES": "4096",
            "CHATRELAY_MAX_URL_BYTES": "1024",
            "CHATRELAY_HEADER_TIMEOUT": "2.5",
            "CHATRELAY_BODY_TIMEOUT": "3",
            "CHATRELAY_KEEP_ALIVE_TIMEOUT": "75",
            "CHATRELAY_WRITE_TIMEOUT": "0.5",
            "CHATRELAY_MAX_CONNECTIONS": "10",
        }
    )
    assert (settings.max_header_bytes, settings.max_url_bytes) == (4096, 1024)
    assert (settings.header_timeout, settings.body_timeout) == (2.5, 3.0)
    assert (settings.keep_alive_timeout, settings.write_timeout) == (75, 0.5)
    assert settings.max_connections == 10


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"CHATRELAY_MAX_HEADER_BYTES": "100"}, "CHATRELAY_MAX_HEADER_BYTES must be >= 1024"),
        ({"CHATRELAY_MAX_URL_BYTES": "10"}, "CHATRELAY_MAX_URL_BYTES must be >= 256"),
        (
            {"CHATRELAY_MAX_HEADER_BYTES": "2048", "CHATRELAY_MAX_URL_BYTES": "4096"},
            "must not exceed CHATRELAY_MAX_HEADER_BYTES",
        ),
        ({"CHATRELAY_HEADER_TIMEOUT": "0"}, "CHATRELAY_HEADER_TIMEOUT must be >= 0.1"),
        ({"CHATRELAY_BODY_TIMEOUT": "inf"}, "CHATRELAY_BODY_TIMEOUT must be a finite number"),
        ({"CHATRELAY_WRITE_TIMEOUT": "soon"}, "CHATRELAY_WRITE_TIMEOUT must be a number"),
        ({"CHATRELAY_KEEP_ALIVE_TIMEOUT": "1.5"}, "CHATRELAY_KEEP_ALIVE_TIMEOUT must be a whole"),
        ({"CHATRELAY_MAX_CONNECTIONS": "0"}, "CHATRELAY_MAX_CONNECTIONS must be >= 1"),
    ],
)
def test_bad_http_limits_raise_config_error(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings(env)


def test_quota_settings_default_on_and_zero_turns_them_off() -> None:
    defaults = load_settings({})
    assert defaults.rate_limit_per_minute == 300 and defaults.rate_limit_burst == 60
    assert defaults.max_generations_per_tenant == 16
    assert defaults.max_subscribers_per_message == 16
    assert defaults.max_metadata_bytes == 16_384 and defaults.max_metadata_depth == 8
    assert defaults.max_title_chars == 1000 and defaults.max_params_bytes == 65_536
    assert defaults.max_page_bytes == 1_048_576 and defaults.max_conversation_messages == 100
    off = load_settings(
        {
            "CHATRELAY_RATE_LIMIT_PER_MINUTE": "0",
            "CHATRELAY_MAX_GENERATIONS_PER_TENANT": "0",
            "CHATRELAY_MAX_SUBSCRIBERS_PER_MESSAGE": "0",
            "CHATRELAY_MAX_METADATA_BYTES": "0",
            "CHATRELAY_MAX_PAGE_BYTES": "0",
        }
    )
    assert off.rate_limit_per_minute == 0 and off.max_generations_per_tenant == 0
    assert off.max_subscribers_per_message == 0 and off.max_metadata_bytes == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHATRELAY_RATE_LIMIT_PER_MINUTE", "-1"),
        ("CHATRELAY_RATE_LIMIT_BURST", "0"),
        ("CHATRELAY_MAX_GENERATIONS_PER_TENANT", "many"),
        ("CHATRELAY_MAX_TITLE_CHARS", "0"),
        ("CHATRELAY_MAX_CONVERSATION_MESSAGES", "0"),
        ("CHATRELAY_MAX_METADATA_DEPTH", "1.5"),
    ],
)
def test_bad_quota_values_stop_start_up(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})
