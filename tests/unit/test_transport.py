"""Streamable HTTP inbound: what a client sees when the exchange itself is wrong, in both eras.

The gateway is driven in-process (ASGI) with an in-memory session store; its one upstream
points at a port nobody listens on, and none of these answers needs it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.config import GatewayConfig, parse_config
from tollway.http import create_app
from tollway.store.sessions import MemorySessionStore, Session

from tests.unit.wire import assert_http_error

MODERN = "2026-07-28"
UNREACHABLE = "http://127.0.0.1:9/mcp"
ACCEPT_BOTH = "application/json, text/event-stream"
JSON_HEADERS = {"content-type": "application/json", "accept": ACCEPT_BOTH}


def _config(**http: Any) -> GatewayConfig:
    return parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": [{"name": "support", "url": UNREACHABLE}],
            "http": http,
        }
    )


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.store = MemorySessionStore()
        self.client = TestClient(create_app(config, store=self.store, streaming=False), raise_server_exceptions=False)

    def post(self, body: Any, headers: dict[str, str] | list[tuple[str, str]] | None = None, **kwargs: Any) -> Any:
        content = body if isinstance(body, bytes | str) else json.dumps(body)
        return self.client.post("/mcp", content=content, headers=headers or JSON_HEADERS, **kwargs)

    def session(self, *, tenant: str = "default", subject: str = "anonymous", ttl: int = 3600) -> str:
        session = Session(
            id=f"sess-{len(self.store.sessions) + 1}",
            tenant=tenant,
            subject=subject,
            protocol_version="2025-11-25",
            client_info={"name": "unit", "version": "1"},
            client_capabilities={},
            expires_at=int(time.time()) + ttl,
        )
        self.store.create(session)
        return session.id


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    gateway = Gateway(_config())
    with gateway.client:
        yield gateway


def modern_request(
    method: str,
    params: dict[str, Any] | None = None,
    *,
    request_id: Any = 1,
    version: str = MODERN,
    name: str | None = None,
    **header_overrides: str,
) -> tuple[dict[str, Any], dict[str, str]]:
    """A 2026-07-28 request whose envelope and routing headers agree, unless overridden."""
    meta = {
        c.META_PROTOCOL_VERSION: version,
        c.META_CLIENT_CAPABILITIES: {},
        c.META_CLIENT_INFO: {"name": "unit", "version": "1"},
    }
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**(params or {}), "_meta": meta}}
    headers = {**JSON_HEADERS, "mcp-protocol-version": version, "mcp-method": method}
    if name is not None:
        headers["mcp-name"] = name
    headers.update({k.replace("_", "-"): v for k, v in header_overrides.items()})
    return body, headers


# --- checks on the HTTP exchange ---------------------------------------------------------------
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_a_body_that_is_not_declared_json_is_answered_415(gateway: Gateway, content_type: str) -> None:
    response = gateway.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"content-type": content_type})

    assert_http_error(
        response, 415, c.INVALID_REQUEST, message="Unsupported Media Type: Content-Type must be application/json"
    )


def test_json_with_a_charset_parameter_is_accepted(gateway: Gateway) -> None:
    body, headers = modern_request("notifications/cancelled")
    del body["id"]
    headers["content-type"] = "application/json; charset=utf-8"

    assert gateway.post(body, headers).status_code == 202


@pytest.mark.parametrize("accept", ["text/event-stream", "text/html", ""])
def test_a_client_that_does_not_accept_json_is_answered_406(gateway: Gateway, accept: str) -> None:
    response = gateway.post(
        {"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"content-type": "application/json", "accept": accept}
    )

    assert_http_error(response, 406, c.INVALID_REQUEST, message="Not Acceptable: Accept must include application/json")


@pytest.mark.parametrize(
    "accept", ["application/json", "*/*", "application/*", "text/event-stream, application/json;q=0.9"]
)
def test_any_accept_that_covers_json_is_enough(gateway: Gateway, accept: str) -> None:
    body, headers = modern_request("notifications/cancelled")
    del body["id"]
    headers["accept"] = accept

    assert gateway.post(body, headers).status_code == 202


def test_a_body_over_the_configured_limit_is_answered_413() -> None:
    gateway = Gateway(_config(max_body_bytes=1024))
    body, headers = modern_request("tools/call", {"name": "support__x", "arguments": {"blob": "x" * 2000}})

    response = gateway.post(body, headers)

    error = assert_http_error(response, 413, c.INVALID_REQUEST, message="Payload too large")
    assert error["data"] == {"maxBytes": 1024}


def test_a_streamed_body_without_content_length_is_still_cut_at_the_limit() -> None:
    gateway = Gateway(_config(max_body_bytes=1024))
    chunks = [b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"', b"x" * 800, b"x" * 800, b'"}}']

    response = gateway.client.post("/mcp", content=iter(chunks), headers=JSON_HEADERS)

    assert "content-length" not in response.request.headers
    assert_http_error(response, 413, c.INVALID_REQUEST, message="Payload too large")


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"jsonrpc": "2.0", "id": 1,', b"\x80\x81 not utf-8"])
def test_a_body_that_is_not_json_is_a_parse_error(gateway: Gateway, body: bytes) -> None:
    response = gateway.post(body)

    assert_http_error(response, 400, c.PARSE_ERROR, message="Parse error: body is not valid JSON")


def test_a_deeply_nested_body_is_an_invalid_request_not_a_crash(gateway: Gateway) -> None:
    response = gateway.post(b"[" * 100_000 + b"]" * 100_000)

    assert_http_error(response, 400, c.INVALID_REQUEST, message="Invalid request: nested deeper than 100 levels")


def test_a_batch_is_refused(gateway: Gateway) -> None:
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": 2, "method": "ping"}]

    response = gateway.post(batch)

    assert_http_error(response, 400, c.INVALID_REQUEST, message="Invalid request: batch requests are not supported")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('"ping"', "Invalid request: body must be one JSON-RPC object"),
        ("42", "Invalid request: body must be one JSON-RPC object"),
        ({"id": 1, "method": "ping"}, 'Invalid request: "jsonrpc" must be "2.0"'),
        ({"jsonrpc": "1.0", "id": 1, "method": "ping"}, 'Invalid request: "jsonrpc" must be "2.0"'),
        ({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}, "Invalid request: id must be a string or an integer"),
        ({"jsonrpc": "2.0", "id": True, "method": "ping"}, "Invalid request: id must be a string or an integer"),
        ({"jsonrpc": "2.0", "id": None, "method": "ping"}, "Invalid request: id must be a string or an integer"),
        ({"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"}, "Invalid request: id must be a string or an integer"),
        ({"jsonrpc": "2.0", "id": 1, "method": ""}, "Invalid request: method must be a non-empty string"),
        ({"jsonrpc": "2.0", "id": 1, "method": 7}, "Invalid request: method must be a non-empty string"),
        ({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}, "Invalid request: params must be an object"),
        ({"jsonrpc": "2.0", "id": 1}, "Invalid request: not a JSON-RPC request, notification or response"),
        (
            {"jsonrpc": "2.0", "id": 1, "result": {}, "error": {"code": 1, "message": "x"}},
            "Invalid request: not a JSON-RPC request, notification or response",
        ),
    ],
    ids=[
        "string",
        "number",
        "no-jsonrpc",
        "jsonrpc-1.0",
        "float-id",
        "bool-id",
        "null-id",
        "object-id",
        "empty-method",
        "number-method",
        "array-params",
        "nothing",
        "result-and-error",
    ],
)
def test_a_message_that_is_not_json_rpc_is_an_invalid_request(gateway: Gateway, body: Any, message: str) -> None:
    response = gateway.post(body)

    assert_http_error(response, 400, c.INVALID_REQUEST, message=message)


# --- origin and host --------------------------------------------------------------------------
def test_a_browser_origin_is_refused_by_default(gateway: Gateway) -> None:
    response = gateway.post(
        {"jsonrpc": "2.0", "id": 1, "method": "ping"}, {**JSON_HEADERS, "origin": "https://evil.example"}
    )

    assert_http_error(response, 403, c.INVALID_REQUEST, message="Forbidden: origin not allowed")


def test_a_configured_origin_pattern_is_let_through() -> None:
    gateway = Gateway(_config(allowed_origins=["http://localhost:*"]))
    body, headers = modern_request("notifications/cancelled")
    del body["id"]

    allowed = gateway.post(body, {**headers, "origin": "http://localhost:6274"})
    refused = gateway.post(body, {**headers, "origin": "http://localhost.evil.example"})

    assert allowed.status_code == 202
    assert_http_error(refused, 403, c.INVALID_REQUEST, message="Forbidden: origin not allowed")


def test_get_and_delete_check_the_origin_too(gateway: Gateway) -> None:
    headers = {"origin": "https://evil.example"}

    assert_http_error(gateway.client.get("/mcp", headers=headers), 403, c.INVALID_REQUEST)
    assert_http_error(gateway.client.delete("/mcp", headers=headers), 403, c.INVALID_REQUEST)


def test_a_foreign_host_is_answered_421_when_hosts_are_pinned() -> None:
    gateway = Gateway(_config(allowed_hosts=["127.0.0.1:*", "localhost:*"]))
    body, headers = modern_request("notifications/cancelled")
    del body["id"]

    refused = gateway.post(body, {**headers, "host": "attacker.example"})
    allowed = gateway.post(body, {**headers, "host": "127.0.0.1:8080"})

    assert_http_error(refused, 421, c.INVALID_REQUEST, message="Misdirected request: host not allowed")
    assert allowed.status_code == 202


# --- the 2026-07-28 envelope ladder -----------------------------------------------------------
def test_a_modern_request_without_an_envelope_is_invalid_params(gateway: Gateway) -> None:
    body, headers = modern_request("tools/list", request_id="req-7")
    del body["params"]

    response = gateway.post(body, headers)

    assert_http_error(response, 400, c.INVALID_PARAMS, contains="params._meta must be an object", request_id="req-7")


@pytest.mark.parametrize("key", [c.META_PROTOCOL_VERSION, c.META_CLIENT_CAPABILITIES])
def test_an_envelope_missing_a_required_key_names_it(gateway: Gateway, key: str) -> None:
    body, headers = modern_request("tools/list")
    del body["params"]["_meta"][key]

    response = gateway.post(body, headers)

    assert_http_error(
        response,
        400,
        c.INVALID_PARAMS,
        message=f"params._meta is missing the required envelope key(s): {key}",
        request_id=1,
    )


def test_a_version_header_that_disagrees_with_the_envelope_is_a_header_mismatch(gateway: Gateway) -> None:
    body, headers = modern_request("tools/list")
    body["params"]["_meta"][c.META_PROTOCOL_VERSION] = "2099-01-01"

    response = gateway.post(body, headers)

    assert_http_error(
        response,
        400,
        c.HEADER_MISMATCH,
        message="mcp-protocol-version header does not match the request envelope's protocol version",
        request_id=1,
    )


@pytest.mark.parametrize("method_header", ["tools/call", "TOOLS/LIST", ""])
def test_a_method_header_that_disagrees_with_the_body_is_a_header_mismatch(
    gateway: Gateway, method_header: str
) -> None:
    body, headers = modern_request("tools/list", mcp_method=method_header)

    response = gateway.post(body, headers)

    assert_http_error(
        response,
        400,
        c.HEADER_MISMATCH,
        message="mcp-method header does not match the request body's method",
        request_id=1,
    )


def test_a_missing_method_header_is_a_header_mismatch(gateway: Gateway) -> None:
    body, headers = modern_request("tools/list")
    del headers["mcp-method"]

    assert_http_error(gateway.post(body, headers), 400, c.HEADER_MISMATCH, request_id=1)


@pytest.mark.parametrize(
    ("method", "params", "name_header", "key"),
    [
        ("tools/call", {"name": "support__get_customer_profile", "arguments": {}}, "support__list_orders", "name"),
        ("tools/call", {"name": "support__get_customer_profile", "arguments": {}}, None, "name"),
        ("prompts/get", {"name": "support__draft_reply"}, "support__other", "name"),
        ("resources/read", {"uri": "support+support://policies/refunds"}, "support://policies/refunds", "uri"),
    ],
    ids=["tool", "tool-no-header", "prompt", "resource"],
)
def test_a_name_header_that_disagrees_with_the_body_is_a_header_mismatch(
    gateway: Gateway, method: str, params: dict[str, Any], name_header: str | None, key: str
) -> None:
    body, headers = modern_request(method, params, name=name_header)

    response = gateway.post(body, headers)

    assert_http_error(
        response,
        400,
        c.HEADER_MISMATCH,
        message=f"mcp-name header does not match the request body's {key!r} parameter",
        request_id=1,
    )


def test_a_base64_name_header_matches_a_non_ascii_tool_name(gateway: Gateway) -> None:
    name = "nosuch__prüfen"
    body, headers = modern_request(
        "tools/call", {"name": name, "arguments": {}}, name="=?base64?bm9zdWNoX19wcsO8ZmVu?="
    )

    response = gateway.post(body, headers)

    # Past the ladder: the name reaches routing, which serves no such tool.
    assert_http_error(response, 400, c.INVALID_PARAMS, message=f"Unknown tool: {name}", request_id=1)


def test_whitespace_around_a_name_header_is_not_part_of_the_name(gateway: Gateway) -> None:
    """RFC 9110 5.5: optional whitespace around a field value is excluded before evaluating it."""
    body, headers = modern_request("tools/call", {"name": "nosuch__tool", "arguments": {}}, name=" \tnosuch__tool  ")

    response = gateway.post(body, headers)

    # Past the ladder: the name reaches routing, which serves no such tool.
    assert_http_error(response, 400, c.INVALID_PARAMS, message="Unknown tool: nosuch__tool", request_id=1)


def test_an_unsupported_modern_version_lists_the_supported_ones(gateway: Gateway) -> None:
    body, headers = modern_request("tools/list", version="2099-01-01")

    response = gateway.post(body, headers)

    error = assert_http_error(
        response, 400, c.UNSUPPORTED_PROTOCOL_VERSION, message="Unsupported protocol version", request_id=1
    )
    assert error["data"] == {"supported": [MODERN], "requested": "2099-01-01"}


def test_the_first_failing_rung_wins(gateway: Gateway) -> None:
    body, headers = modern_request("tools/list", version="2099-01-01", mcp_method="tools/call")
    no_envelope = {k: v for k, v in body.items() if k != "params"}

    assert_http_error(gateway.post(no_envelope, headers), 400, c.INVALID_PARAMS, request_id=1)
    assert_http_error(gateway.post(body, headers), 400, c.HEADER_MISMATCH, request_id=1)


@pytest.mark.parametrize("header", ["mcp-method", "mcp-protocol-version", "mcp-name"])
def test_a_routing_header_sent_twice_is_a_header_mismatch(gateway: Gateway, header: str) -> None:
    body, headers = modern_request(
        "tools/call", {"name": "support__get_customer_profile", "arguments": {}}, name="support__get_customer_profile"
    )
    duplicated = [*headers.items(), (header, headers[header])]

    response = gateway.post(body, duplicated)

    assert_http_error(response, 400, c.HEADER_MISMATCH, message=f"{header} header appears more than once", request_id=1)


def test_a_client_response_is_refused_at_the_modern_version(gateway: Gateway) -> None:
    _, headers = modern_request("tools/list")

    response = gateway.post({"jsonrpc": "2.0", "id": 5, "result": {}}, headers)

    assert_http_error(
        response,
        400,
        c.INVALID_REQUEST,
        message="Invalid request: responses are not accepted at this protocol version",
        request_id=5,
    )


def test_a_modern_notification_with_an_unsupported_version_is_refused(gateway: Gateway) -> None:
    response = gateway.post(
        {"jsonrpc": "2.0", "method": "notifications/cancelled"},
        {**JSON_HEADERS, "mcp-protocol-version": "2099-01-01"},
    )

    error = assert_http_error(response, 400, c.UNSUPPORTED_PROTOCOL_VERSION)
    assert error["data"] == {"supported": [MODERN], "requested": "2099-01-01"}


@pytest.mark.parametrize("method", ["no/such/method", "initialize", "ping", "logging/setLevel"])
def test_a_method_the_modern_revision_does_not_have_is_answered_404(gateway: Gateway, method: str) -> None:
    body, headers = modern_request(method)

    response = gateway.post(body, headers)

    error = assert_http_error(response, 404, c.METHOD_NOT_FOUND, message="Method not found", request_id=1)
    assert error["data"] == {"method": method}


def test_an_invalid_cursor_is_invalid_params(gateway: Gateway) -> None:
    body, headers = modern_request("tools/list", {"cursor": "not-a-gateway-cursor"})

    response = gateway.post(body, headers)

    assert_http_error(
        response, 400, c.INVALID_PARAMS, message="Invalid params: cursor is not one this gateway issued", request_id=1
    )


def test_an_unknown_tool_is_invalid_params_naming_it(gateway: Gateway) -> None:
    body, headers = modern_request(
        "tools/call", {"name": "nosuch__tool", "arguments": {}}, name="nosuch__tool", request_id="abc"
    )

    response = gateway.post(body, headers)

    assert_http_error(response, 400, c.INVALID_PARAMS, message="Unknown tool: nosuch__tool", request_id="abc")


# --- notifications, responses, GET and DELETE ---------------------------------------------------
def test_a_modern_notification_is_accepted_with_202_and_no_body(gateway: Gateway) -> None:
    response = gateway.post(
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}},
        {**JSON_HEADERS, "mcp-protocol-version": MODERN},
    )

    assert response.status_code == 202
    assert response.content == b""


def test_a_session_notification_is_accepted_with_202_and_no_body(gateway: Gateway) -> None:
    session = gateway.session()

    response = gateway.post(
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {**JSON_HEADERS, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"},
    )

    assert response.status_code == 202
    assert response.content == b""


def test_a_session_clients_response_is_accepted_with_202(gateway: Gateway) -> None:
    session = gateway.session()

    response = gateway.post(
        {"jsonrpc": "2.0", "id": "tw:support:1", "result": {"action": "decline"}},
        {**JSON_HEADERS, "mcp-session-id": session},
    )

    assert response.status_code == 202


@pytest.mark.parametrize("version", [None, MODERN, "2025-11-25"])
def test_get_is_405_with_allow(gateway: Gateway, version: str | None) -> None:
    headers = {"accept": "text/event-stream"}
    if version:
        headers["mcp-protocol-version"] = version

    response = gateway.client.get("/mcp", headers=headers)

    assert_http_error(response, 405, c.INVALID_REQUEST, message="Method not allowed")
    # A stateless (2026-07-28) client cannot DELETE either, so it is offered POST only.
    assert response.headers["allow"] == ("POST" if version == MODERN else "POST, DELETE")


def test_delete_at_the_modern_version_is_405_allowing_only_post(gateway: Gateway) -> None:
    response = gateway.client.delete("/mcp", headers={"mcp-protocol-version": MODERN})

    assert_http_error(response, 405, c.INVALID_REQUEST, message="Method not allowed")
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_other_http_methods_are_refused(gateway: Gateway, method: str) -> None:
    response = gateway.client.request(method, "/mcp", headers=JSON_HEADERS, content=b"{}")

    assert response.status_code == 405
    assert "Traceback" not in response.text


def test_an_unsupported_http_method_on_mcp_gets_a_json_rpc_answer_with_the_right_allow() -> None:
    client = TestClient(create_app(_config(), store=MemorySessionStore(), streaming=False))

    response = client.put("/mcp", content=b"{}", headers={"content-type": "application/json"})

    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"POST", "DELETE"}
    assert_http_error(response, 405, c.INVALID_REQUEST)


# --- 2025-era sessions ------------------------------------------------------------------------
def test_a_session_request_without_a_session_id_is_answered_400(gateway: Gateway) -> None:
    response = gateway.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})

    assert_http_error(
        response, 400, c.INVALID_REQUEST, message="Bad Request: Mcp-Session-Id header is required", request_id=1
    )


def test_an_unknown_session_is_answered_404(gateway: Gateway) -> None:
    response = gateway.post(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {**JSON_HEADERS, "mcp-session-id": "nope"}
    )

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Session not found"


def test_an_expired_session_is_answered_404(gateway: Gateway) -> None:
    session = gateway.session(ttl=-1)

    response = gateway.post(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {**JSON_HEADERS, "mcp-session-id": session}
    )

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Session not found"


def test_another_principals_session_is_answered_exactly_like_a_missing_one(gateway: Gateway) -> None:
    theirs = gateway.session(tenant="acme", subject="alice")

    stolen = gateway.post(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {**JSON_HEADERS, "mcp-session-id": theirs}
    )
    missing = gateway.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {**JSON_HEADERS, "mcp-session-id": "x"})

    assert stolen.status_code == missing.status_code == 404
    assert stolen.json() == missing.json()
    assert gateway.client.delete("/mcp", headers={"mcp-session-id": theirs}).status_code == 404
    assert theirs in gateway.store.sessions


def test_an_unsupported_protocol_version_header_on_a_session_is_answered_400(gateway: Gateway) -> None:
    session = gateway.session()

    response = gateway.post(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        {**JSON_HEADERS, "mcp-session-id": session, "mcp-protocol-version": "1999-01-01"},
    )

    error = assert_http_error(
        response, 400, c.INVALID_REQUEST, message="Bad Request: Unsupported protocol version", request_id=1
    )
    assert error["data"] == {"supported": list(c.HANDSHAKE_VERSIONS), "requested": "1999-01-01"}


def test_initialize_without_its_required_params_is_invalid_params(gateway: Gateway) -> None:
    response = gateway.post(
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}
    )

    assert_http_error(
        response,
        400,
        c.INVALID_PARAMS,
        message="Invalid params: initialize needs protocolVersion, capabilities and clientInfo",
        request_id=1,
    )
    assert "mcp-session-id" not in response.headers
    assert gateway.store.sessions == {}


def test_delete_ends_a_session_then_it_is_gone(gateway: Gateway) -> None:
    session = gateway.session()

    ended = gateway.client.delete("/mcp", headers={"mcp-session-id": session})
    again = gateway.client.delete("/mcp", headers={"mcp-session-id": session})
    used = gateway.post(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, {**JSON_HEADERS, "mcp-session-id": session}
    )

    assert ended.status_code == 204
    assert ended.content == b""
    assert again.status_code == 404
    assert used.status_code == 404


def test_delete_without_a_session_id_is_answered_400(gateway: Gateway) -> None:
    response = gateway.client.delete("/mcp")

    assert_http_error(response, 400, c.INVALID_REQUEST, message="Bad Request: Mcp-Session-Id header is required")


def test_a_session_method_the_gateway_does_not_know_is_method_not_found(gateway: Gateway) -> None:
    session = gateway.session()

    response = gateway.post(
        {"jsonrpc": "2.0", "id": 9, "method": "server/discover"}, {**JSON_HEADERS, "mcp-session-id": session}
    )

    error = assert_http_error(response, 200, c.METHOD_NOT_FOUND, message="Method not found", request_id=9)
    assert error["data"] == {"method": "server/discover"}


def test_a_session_ping_is_answered_without_any_upstream(gateway: Gateway) -> None:
    session = gateway.session()

    response = gateway.post({"jsonrpc": "2.0", "id": 2, "method": "ping"}, {**JSON_HEADERS, "mcp-session-id": session})

    assert response.status_code == 200
    assert response.json() == {"jsonrpc": "2.0", "id": 2, "result": {}}


# --- the other routes ---------------------------------------------------------------------------
def test_healthz_answers_ok(gateway: Gateway) -> None:
    response = gateway.client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"])
def test_protected_resource_metadata_names_the_gateway(gateway: Gateway, path: str) -> None:
    response = gateway.client.get(path)

    assert response.status_code == 200
    metadata = response.json()
    assert metadata["resource"] == "https://gateway.example.com/mcp"
    assert metadata["bearer_methods_supported"] == ["header"]
    assert isinstance(metadata["authorization_servers"], list)


def test_every_response_carries_a_request_id(gateway: Gateway) -> None:
    echoed = gateway.client.get("/healthz", headers={"x-request-id": "trace-123"})
    minted = gateway.client.get("/healthz")

    assert echoed.headers["x-request-id"] == "trace-123"
    assert len(minted.headers["x-request-id"]) == 32
