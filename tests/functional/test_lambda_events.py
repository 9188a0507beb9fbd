"""API Gateway HTTP API (payload v2) specifics through Mangum: encodings, folded headers, cookies,
the discovery routes, and the shape of what goes back to API Gateway."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tollway import spec as c

from tests.functional.lambda_harness import LambdaGateway, assert_lambda_error, event_body, load_event


def test_a_base64_encoded_initialize_opens_a_session(gateway: LambdaGateway) -> None:
    event = load_event("initialize_base64")
    assert event["isBase64Encoded"] is True

    answer = gateway.invoke(event)

    assert answer.status == 200
    assert answer.result()["protocolVersion"] == "2025-11-25"
    assert c.SESSION_ID_HEADER in answer.headers


def test_folded_multi_value_headers_and_cookies_are_understood(gateway: LambdaGateway) -> None:
    event = load_event("initialize_multi_value_headers")
    assert "," in event["headers"]["accept"]
    assert event["cookies"]

    answer = gateway.invoke(event)

    assert answer.status == 200
    assert answer.result()["serverInfo"]["name"] == "tollway"
    assert "set-cookie" not in answer.headers
    assert "cookies" not in answer.raw


def test_the_answer_to_api_gateway_is_a_plain_text_json_body(gateway: LambdaGateway) -> None:
    raw = gateway.invoke(load_event("initialize")).raw

    assert set(raw) == {"statusCode", "headers", "body", "isBase64Encoded"}
    assert raw["statusCode"] == 200
    assert raw["isBase64Encoded"] is False
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in raw["headers"].items())
    assert raw["headers"]["content-type"] == "application/json"
    assert len(raw["headers"]["x-request-id"]) == 32


def test_a_notification_is_answered_202_with_an_empty_body(gateway: LambdaGateway) -> None:
    session = gateway.invoke(load_event("initialize")).headers[c.SESSION_ID_HEADER]

    answer = gateway.invoke(load_event("initialized_notification", headers={c.SESSION_ID_HEADER: session}))

    assert answer.status == 202
    assert answer.body == ""


def test_a_modern_notification_is_answered_202(gateway: LambdaGateway) -> None:
    body = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
    event = load_event("tools_list_modern", body=body, without=(c.METHOD_HEADER,))

    answer = gateway.invoke(event)

    assert answer.status == 202
    assert answer.body == ""


def test_get_on_the_mcp_endpoint_is_405_with_allow(gateway: LambdaGateway) -> None:
    session = gateway.initialize()

    answer = gateway.invoke(load_event("get_mcp_stream", headers={c.SESSION_ID_HEADER: session}))

    assert_lambda_error(answer, 405, c.INVALID_REQUEST)
    assert answer.headers["allow"] == "POST, DELETE"


def test_healthz_answers_ok(gateway: LambdaGateway) -> None:
    answer = gateway.invoke(load_event("healthz"))

    assert answer.status == 200
    assert answer.json() == {"status": "ok"}


@pytest.mark.parametrize("name", ["oauth_protected_resource", "oauth_protected_resource_mcp"])
def test_protected_resource_metadata_names_the_gateway(gateway: LambdaGateway, name: str) -> None:
    answer = gateway.invoke(load_event(name))

    assert answer.status == 200
    assert answer.content_type == "application/json"
    metadata = answer.json()
    assert metadata["resource"] == "https://abc123.execute-api.us-east-1.amazonaws.com/mcp"
    assert metadata["bearer_methods_supported"] == ["header"]
    assert isinstance(metadata["authorization_servers"], list)


@pytest.mark.parametrize(
    ("change", "status", "code", "message"),
    [
        (
            {"content-type": "text/plain"},
            415,
            c.INVALID_REQUEST,
            "Unsupported Media Type: Content-Type must be application/json",
        ),
        (
            {"accept": "text/event-stream"},
            406,
            c.INVALID_REQUEST,
            "Not Acceptable: Accept must include application/json",
        ),
        ({"origin": "https://evil.example"}, 403, c.INVALID_REQUEST, "Forbidden: origin not allowed"),
    ],
    ids=["content-type", "accept", "origin"],
)
def test_a_malformed_exchange_is_refused_before_any_work(
    gateway: LambdaGateway, change: dict[str, str], status: int, code: int, message: str
) -> None:
    gateway.dynamodb_calls.clear()

    answer = gateway.invoke(load_event("initialize", headers=change))

    assert_lambda_error(answer, status, code, message=message)
    assert c.SESSION_ID_HEADER not in answer.headers
    assert gateway.dynamodb_calls == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [("{oops", 400, c.PARSE_ERROR), ('[{"jsonrpc":"2.0","id":1,"method":"ping"}]', 400, c.INVALID_REQUEST)],
    ids=["not-json", "batch"],
)
def test_a_body_that_is_not_one_json_rpc_message_is_refused(
    gateway: LambdaGateway, body: str, status: int, code: int
) -> None:
    answer = gateway.invoke(load_event("initialize", body=body))

    assert_lambda_error(answer, status, code)


def test_a_body_over_the_limit_is_answered_413(gateway: LambdaGateway) -> None:
    body: dict[str, Any] = event_body(load_event("initialize"))
    body["params"]["clientInfo"]["padding"] = "x" * (1024 * 1024)

    answer = gateway.invoke(load_event("initialize", body=body))

    error = assert_lambda_error(answer, 413, c.INVALID_REQUEST)
    assert error["data"] == {"maxBytes": 1024 * 1024}


def test_an_unknown_path_is_not_found(gateway: LambdaGateway) -> None:
    event = load_event("healthz")
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/admin"

    answer = gateway.invoke(event)

    assert answer.status == 404
    assert "Traceback" not in answer.body


def test_each_invocation_publishes_request_metrics(
    gateway: LambdaGateway, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    capsys.readouterr()

    assert gateway.invoke(load_event("healthz")).status == 200

    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert len(emf) == 1
    [directive] = emf[0]["_aws"]["CloudWatchMetrics"]
    assert {m["Name"] for m in directive["Metrics"]} >= {"Requests", "Latency"}
    assert emf[0]["Requests"] == [1.0]
