"""What `parse_completion_request` refuses, and the `param` it names."""

from __future__ import annotations

from typing import Any

import pytest

from chatrelay.completions.request import InvalidRequest, parse_completion_request
from chatrelay.web.errors import http_status


@pytest.mark.parametrize("role", [{"a": 1}, ["user"], None, 3, "wizard"])
def test_a_role_that_is_not_a_known_string_is_invalid(role: Any) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}, {"role": role, "content": "x"}]}
    with pytest.raises(InvalidRequest) as raised:
        parse_completion_request(body)
    assert raised.value.param == "messages[1].role"
    assert http_status(raised.value) == 400


def test_stream_options_go_upstream_with_usage_asked_for() -> None:
    request = parse_completion_request(
        {
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True, "other": 1},
            "temperature": 0.5,
        }
    )
    assert request.include_usage and request.stream
    assert request.upstream_body("m") == {
        "temperature": 0.5,
        "stream_options": {"other": 1, "include_usage": True},
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
    }
