"""Which deployment a process serves (TOLLWAY_RESPONSE_MODE) and the Lambda invocation's deadline
as the Lambda Web Adapter passes it: trusted only behind the adapter."""

from __future__ import annotations

import json
import time

import pytest
from starlette.requests import Request
from tollway.config import response_mode
from tollway.errors import ConfigError
from tollway.protocol import endpoint


@pytest.mark.parametrize(
    ("mode", "on_lambda", "expected"),
    [(None, False, "stream"), (None, True, "buffered"), ("stream", True, "stream"), ("Buffered", False, "buffered")],
)
def test_the_response_mode_is_the_templates_else_where_the_process_runs(
    monkeypatch: pytest.MonkeyPatch, mode: str | None, on_lambda: bool, expected: str
) -> None:
    monkeypatch.delenv("TOLLWAY_RESPONSE_MODE", raising=False)
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    if mode is not None:
        monkeypatch.setenv("TOLLWAY_RESPONSE_MODE", mode)
    if on_lambda:
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "gateway")
    assert response_mode() == expected


def test_an_unknown_response_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLWAY_RESPONSE_MODE", "websocket")
    with pytest.raises(ConfigError, match="TOLLWAY_RESPONSE_MODE must be 'stream' or 'buffered'"):
        response_mode()


def _request(context: object) -> Request:
    header = json.dumps(context).encode()
    return Request({"type": "http", "method": "POST", "path": "/mcp", "headers": [(b"x-amzn-lambda-context", header)]})


def test_the_adapters_deadline_header_counts_only_behind_the_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    request = _request({"request_id": "r", "deadline": int((time.time() + 120) * 1000)})

    monkeypatch.setattr(endpoint, "_BEHIND_ADAPTER", False)
    assert endpoint._invocation_remaining(request) is None  # a caller's own header is ignored

    monkeypatch.setattr(endpoint, "_BEHIND_ADAPTER", True)
    remaining = endpoint._invocation_remaining(request)
    assert remaining is not None and 115 < remaining <= 120


@pytest.mark.parametrize("context", [{"deadline": "soon"}, {"deadline": True}, ["x"], {}])
def test_a_malformed_context_header_means_no_invocation_deadline(
    monkeypatch: pytest.MonkeyPatch, context: object
) -> None:
    monkeypatch.setattr(endpoint, "_BEHIND_ADAPTER", True)
    assert endpoint._invocation_remaining(_request(context)) is None
