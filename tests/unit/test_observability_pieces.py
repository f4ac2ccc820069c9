"""Request ids, metric labels and registries, the JSON log format and the new settings."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chatrelay import request_context
from chatrelay.config import LogFormat, load_settings
from chatrelay.errors import ConfigError, LimitKind
from chatrelay.logs import FIELDS, JsonFormatter, TextFormatter
from chatrelay.metrics import Metrics, code_label
from chatrelay.request_context import RequestInfo, accept_request_id


@pytest.mark.parametrize("raw", ["a", "A-z_0.9:x", "x" * 128])
def test_well_formed_request_ids_are_kept(raw: str) -> None:
    assert accept_request_id(raw) == raw


@pytest.mark.parametrize("raw", [None, "", "x" * 129, "a b", "a\n", "é", "a/b", "a,b"])
def test_other_request_ids_are_replaced_by_fresh_ones(raw: str | None) -> None:
    first, second = accept_request_id(raw), accept_request_id(raw)
    assert first.startswith("req_") and first != second


def test_code_labels_are_our_codes_or_other() -> None:
    assert code_label("rate_limited") == "rate_limited"
    assert code_label(None) == "none"
    assert code_label("Rate Limited!") == "other"
    assert code_label("x" * 65) == "other"


def test_rejections_are_labelled_with_a_known_limit_or_other() -> None:
    metrics = Metrics()
    metrics.request_rejected("rate_limited", "request_rate")
    metrics.request_rejected("payload_too_large", LimitKind.BODY_SIZE)
    metrics.request_rejected("http_429")
    metrics.request_rejected("weird", "a tenant's free text")  # never a label of its own
    labels = {
        (sample.labels["code"], sample.labels["limit"])
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
        if sample.name == "chatrelay_rejected_requests_total"
    }
    assert labels == {
        ("rate_limited", "request_rate"),
        ("payload_too_large", "body_size"),
        ("http_429", "other"),
        ("weird", "other"),
    }


def _value(metrics: Metrics, name: str) -> float:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(name)


def test_each_app_has_its_own_registry() -> None:
    one, two = Metrics(), Metrics()  # would raise "Duplicated timeseries" on a shared one
    one.request_rejected("rate_limited")
    assert _value(one, "chatrelay_rejected_requests_total") == 1
    with pytest.raises(AssertionError):
        _value(two, "chatrelay_rejected_requests_total")  # no series on the other


def test_json_lines_carry_the_request_id_and_fields() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("chatrelay.x", logging.INFO, __file__, 1, "hi %s", ("there",), None)
    setattr(record, FIELDS, {"event": "request", "status": 200})
    token = request_context.begin(RequestInfo("req-1", 0.0))
    try:
        line = json.loads(formatter.format(record))
    finally:
        request_context.end(token)
    assert line["msg"] == "hi there" and line["level"] == "info" and line["logger"] == "chatrelay.x"
    assert line["request_id"] == "req-1" and line["event"] == "request" and line["status"] == 200
    assert line["ts"].endswith("Z")
    outside = json.loads(formatter.format(record))
    assert "request_id" not in outside


def test_a_json_line_with_an_exception_stays_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        record = logging.LogRecord(
            "chatrelay", logging.ERROR, __file__, 1, "failed", None, (type(exc), exc, None)
        )
    text = JsonFormatter().format(record)
    assert "\n" not in text and "ValueError: boom" in json.loads(text)["exc"]


def test_observability_settings() -> None:
    defaults = load_settings({})
    assert defaults.log_format is LogFormat.TEXT and not defaults.log_content
    assert defaults.metrics_enabled and defaults.metrics_token is None
    settings = load_settings(
        {
            "CHATRELAY_LOG_FORMAT": "JSON",
            "CHATRELAY_LOG_CONTENT": "on",
            "CHATRELAY_METRICS": "off",
            "CHATRELAY_METRICS_TOKEN": "a-long-enough-token",
        }
    )
    assert settings.log_format is LogFormat.JSON and settings.log_content
    assert not settings.metrics_enabled and settings.metrics_token == "a-long-enough-token"
    assert "a-long-enough-token" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHATRELAY_LOG_FORMAT", "yaml"),
        ("CHATRELAY_LOG_CONTENT", "maybe"),
        ("CHATRELAY_METRICS", "token"),
        ("CHATRELAY_METRICS_TOKEN", "short"),
        ("CHATRELAY_METRICS_TOKEN", "has a space in it, long"),
    ],
)
def test_bad_observability_settings_stop_start_up(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


def test_text_lines_name_the_request_they_were_logged_under() -> None:
    record = logging.LogRecord("chatrelay", logging.WARNING, __file__, 1, "slow", None, None)
    assert TextFormatter().format(record).endswith("WARNING chatrelay: slow")
    token = request_context.begin(RequestInfo("req-2", 0.0))
    try:
        assert TextFormatter().format(record).endswith("chatrelay: slow [request req-2]")
    finally:
        request_context.end(token)
