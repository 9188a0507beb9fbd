"""The gateway as a user meets it: `tollway dev` in front of the two demo upstreams, with a token
from `tollway token`, driven by the official SDK client over HTTP in both protocol eras, plus raw
HTTP for the transport and authentication rules."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import httpx2
import pytest
import yaml
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import LoggingMessageNotificationParams, TextContent, TextResourceContents

from tests.fixtures.memory_upstream import final_message

if TYPE_CHECKING:
    from tests.e2e.conftest import GatewayProcess

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

MODES = ["legacy", "2026-07-28"]
TIMEOUT = 30  # seconds per test body

SUPPORT_TOOLS = {"get_customer_profile", "list_orders", "check_refund_status", "create_ticket"}
FINANCE_TOOLS = {"fetch_revenue_data", "run_forecast", "validate_transaction", "download_statement"}
FORECAST_STEPS = ["loading history", "fitting model", "projecting", "formatting"]
FORECAST_STEP_DELAY = 0.05  # what the finance upstream sleeps before each progress report


@pytest.fixture(scope="module")
def token(gateway: GatewayProcess) -> str:
    return gateway.token("alice", "acme")


@contextlib.asynccontextmanager
async def connect(
    gateway: GatewayProcess, token: str, mode: str, event_hooks: dict[str, list[Any]] | None = None, **kwargs: Any
) -> AsyncIterator[Client]:
    """The official client, sending `token` as its bearer credential on every request."""
    headers = {"authorization": f"Bearer {token}"}
    timeout = httpx2.Timeout(15.0, read=60.0)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout, event_hooks=event_hooks) as http,
        Client(
            streamable_http_client(gateway.url, http_client=http), mode=mode, read_timeout_seconds=15, **kwargs
        ) as session,
    ):
        yield session


def text_of(result: Any) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


# --- raw HTTP ---------------------------------------------------------------------------------------
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
LIST_TOOLS = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
LEGACY_HEADERS = {"mcp-protocol-version": "2025-11-25"}
DISCOVER = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "server/discover",
    "params": {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
        }
    },
}
FIRST_REQUEST: dict[str, tuple[dict[str, str], dict[str, Any]]] = {
    "legacy": ({}, INITIALIZE),
    "2026-07-28": ({"mcp-protocol-version": "2026-07-28", "mcp-method": "server/discover"}, DISCOVER),
}


async def post_raw(gateway: GatewayProcess, token: str | None, body: dict[str, Any], **headers: str) -> httpx.Response:
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(timeout=10.0) as raw:
        return await raw.post(
            gateway.url, headers={"accept": "application/json, text/event-stream", **headers}, json=body
        )


# --- one list over both upstreams ----------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_the_tool_list_merges_both_upstreams_under_their_prefixes(
    gateway: GatewayProcess, token: str, mode: str
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with connect(gateway, token, mode) as session:
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}

    assert set(tools) == {f"support__{n}" for n in SUPPORT_TOOLS} | {f"finance__{n}" for n in FINANCE_TOOLS}
    # Descriptions and schemas arrive as the upstream wrote them.
    assert tools["finance__run_forecast"].description == (
        "Project monthly revenue for a region. Reports progress while it runs."
    )
    assert tools["support__list_orders"].input_schema["properties"]["limit"]["default"] == 10


# --- calls ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_a_tool_of_each_upstream_returns_its_data(gateway: GatewayProcess, token: str, mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with connect(gateway, token, mode) as session:
            profile = await session.call_tool("support__get_customer_profile", {"customer_id": "C-1001"})
            revenue = await session.call_tool("finance__fetch_revenue_data", {"region": "APAC", "quarter": "2025-Q1"})

    assert not profile.is_error
    assert profile.structured_content is not None
    assert profile.structured_content["name"] == "Ada Lovelace"
    assert profile.structured_content["email"] == "ada.lovelace@example.com"
    assert json.loads(text_of(profile)) == profile.structured_content

    assert not revenue.is_error
    assert revenue.structured_content == {
        "region": "APAC",
        "quarter": "2025-Q1",
        "currency": "USD",
        "revenue": 1_125_000,  # 980 000 base + 120 000 for 2025 + 25 000 for Q1
        "cost": 697_500,
        "margin_pct": 38.0,
        "top_accounts": [
            {
                "name": "Umbrella KK",
                "contact_email": "keiri@umbrella.example",
                "contact_phone": "+81 3-1234-5678",
                "iban": "NL91 ABNA 0417 1643 00",
            }
        ],
    }


@pytest.mark.parametrize("mode", MODES)
async def test_non_ascii_arguments_reach_the_upstream_unchanged(gateway: GatewayProcess, token: str, mode: str) -> None:
    subject, body = "Café ☕ refund", "Ünïcode — 払い戻し"
    with anyio.fail_after(TIMEOUT):
        async with connect(gateway, token, mode) as session:
            ticket = await session.call_tool(
                "support__create_ticket", {"customer_id": "C-1002", "subject": subject, "body": body}
            )

    # The upstream derives the ticket id from the exact text it received.
    digest = hashlib.sha256(f"C-1002|{subject}|{body}|normal".encode()).hexdigest()
    assert ticket.structured_content is not None
    assert ticket.structured_content["ticket_id"] == f"TCK-{digest[:8].upper()}"
    assert ticket.structured_content["subject"] == subject
    assert ticket.structured_content["body"] == body


@pytest.mark.parametrize("mode", MODES)
async def test_a_tool_error_of_the_upstream_is_a_tool_result_the_client_can_read(
    gateway: GatewayProcess, token: str, mode: str
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with connect(gateway, token, mode) as session:
            result = await session.call_tool("support__get_customer_profile", {"customer_id": "C-9999"})

    assert result.is_error
    assert "unknown customer 'C-9999'" in text_of(result)


@pytest.mark.parametrize("mode", MODES)
async def test_an_unknown_tool_is_an_invalid_params_error_and_the_client_carries_on(
    gateway: GatewayProcess, token: str, mode: str
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with connect(gateway, token, mode) as session:
            with pytest.raises(MCPError) as raised:
                await session.call_tool("nowhere__no_such_tool", {})
            with pytest.raises(MCPError) as unprefixed:
                await session.call_tool("run_forecast", {"region": "EMEA"})
            after = await session.call_tool("support__check_refund_status", {"order_id": "ORD-50002"})

    assert raised.value.error.code == -32602
    assert raised.value.error.message == "Unknown tool: nowhere__no_such_tool"
    assert unprefixed.value.error.code == -32602
    assert after.structured_content is not None
    assert after.structured_content["status"] == "approved"


# --- streaming -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_run_forecast_streams_its_progress_and_log_before_the_result(
    gateway: GatewayProcess, token: str, mode: str
) -> None:
    progress: list[tuple[float, float | None, str | None]] = []
    arrived: list[float] = []
    logs: list[LoggingMessageNotificationParams] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))
        arrived.append(time.monotonic())

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.append(params)

    # At 2026-07-28 log messages are sent only to requests that opt in with a log level.
    opt_in = {"log_level": "info"} if mode != "legacy" else {}
    with anyio.fail_after(TIMEOUT):
        async with connect(gateway, token, mode, logging_callback=on_log, **opt_in) as session:
            result = await session.call_tool(
                "finance__run_forecast", {"region": "EMEA", "months": 3}, progress_callback=on_progress
            )

    assert progress == [(float(step), 4.0, label) for step, label in enumerate(FORECAST_STEPS, start=1)]
    # Relayed as they happen, not buffered until the result: the upstream sleeps between reports.
    assert arrived[-1] - arrived[0] >= FORECAST_STEP_DELAY
    assert [log.data for log in logs] == ["forecast for EMEA ready: 3 months"]
    assert result.structured_content == {
        "region": "EMEA",
        "months": 3,
        "currency": "USD",
        "model": "linear-demo",
        "points": [
            {"month": "2026-01", "revenue": 500_000},
            {"month": "2026-02", "revenue": 510_000},
            {"month": "2026-03", "revenue": 520_000},
        ],
    }


@pytest.mark.parametrize("mode", MODES)
async def test_concurrent_calls_in_one_client_each_get_their_own_progress_and_result(
    gateway: GatewayProcess, token: str, mode: str
) -> None:
    progress: dict[int, list[float]] = {}
    results: dict[int, Any] = {}

    async def forecast(session: Client, months: int) -> None:
        progress[months] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress[months].append(value)

        result = await session.call_tool(
            "finance__run_forecast", {"region": "AMER", "months": months}, progress_callback=on_progress
        )
        results[months] = result.structured_content

    with anyio.fail_after(TIMEOUT):
        async with connect(gateway, token, mode) as session, anyio.create_task_group() as tasks:
            for months in (1, 2, 3):
                tasks.start_soon(forecast, session, months)

    assert progress == {months: [1.0, 2.0, 3.0, 4.0] for months in (1, 2, 3)}
    assert {months: len(result["points"]) for months, result in results.items()} == {1: 1, 2: 2, 3: 3}


# --- resources and prompts ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_resources_are_listed_and_read_under_prefixed_uris(
    gateway: GatewayProcess, token: str, mode: str
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with connect(gateway, token, mode) as session:
            resources = (await session.list_resources()).resources
            templates = (await session.list_resource_templates()).resource_templates
            policy = await session.read_resource("support+support://policies/refunds")
            report = await session.read_resource("finance+finance://reports/latest")
            record = await session.read_resource("support+support://customers/C-1003")

    assert {str(r.uri) for r in resources} == {"support+support://policies/refunds", "finance+finance://reports/latest"}
    assert [t.uri_template for t in templates] == ["support+support://customers/{customer_id}"]

    [policy_text] = policy.contents
    assert isinstance(policy_text, TextResourceContents)
    assert str(policy_text.uri) == "support+support://policies/refunds"
    assert policy_text.text.startswith("# Refund policy")

    [report_text] = report.contents
    assert isinstance(report_text, TextResourceContents)
    assert "| APAC | 1,200,000 |" in report_text.text

    [record_text] = record.contents
    assert isinstance(record_text, TextResourceContents)
    assert str(record_text.uri) == "support+support://customers/C-1003"
    assert json.loads(record_text.text)["name"] == "Alan Turing"


@pytest.mark.parametrize("mode", MODES)
async def test_a_resource_uri_no_upstream_serves_is_resource_not_found(
    gateway: GatewayProcess, token: str, mode: str
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with connect(gateway, token, mode) as session:
            with pytest.raises(MCPError) as raised:
                await session.read_resource("nowhere://reports/latest")

    # -32002 in the 2025 era; 2026-07-28 (SEP-2164) standardizes -32602, the URI in `data`.
    assert raised.value.error.code == (-32002 if mode == "legacy" else -32602)
    assert raised.value.error.message == "Resource not found"
    assert raised.value.error.data == {"uri": "nowhere://reports/latest"}


@pytest.mark.parametrize("mode", MODES)
async def test_prompts_are_listed_and_rendered_under_prefixed_names(
    gateway: GatewayProcess, token: str, mode: str
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with connect(gateway, token, mode) as session:
            prompts = {p.name: p for p in (await session.list_prompts()).prompts}
            reply = await session.get_prompt("support__draft_reply", {"customer_id": "C-1002", "tone": "formal"})
            variance = await session.get_prompt("finance__explain_variance", {"region": "AMER"})

    assert set(prompts) == {"support__draft_reply", "finance__explain_variance"}
    assert [a.name for a in prompts["support__draft_reply"].arguments or []] == ["customer_id", "tone"]
    assert [(m.role, m.content.text) for m in reply.messages if isinstance(m.content, TextContent)] == [
        ("user", "Draft a formal reply to Grace Hopper <grace.hopper@example.org> about their most recent order."),
        ("assistant", "I will check the order and refund status first, then draft the reply."),
    ]
    [message] = variance.messages
    assert isinstance(message.content, TextContent)
    assert message.content.text.startswith("Compare AMER revenue for 2025-Q3 and 2025-Q4")


# --- 2025-era sessions -----------------------------------------------------------------------------
async def test_a_2025_session_is_reused_for_every_call_and_gone_once_the_client_closes(
    gateway: GatewayProcess, token: str
) -> None:
    sent: list[tuple[str, str | None]] = []
    answered: list[tuple[str, int]] = []

    async def on_request(request: httpx2.Request) -> None:
        sent.append((request.method, request.headers.get("mcp-session-id")))

    async def on_response(response: httpx2.Response) -> None:
        answered.append((response.request.method, response.status_code))

    hooks: dict[str, list[Any]] = {"request": [on_request], "response": [on_response]}
    with anyio.fail_after(TIMEOUT):
        async with connect(gateway, token, "legacy", event_hooks=hooks) as session:
            await session.list_tools()
            await session.call_tool("support__list_orders", {"customer_id": "C-1001", "limit": 1})
            await session.call_tool("finance__run_forecast", {"region": "APAC", "months": 1})

        [initialize, *later] = sent
        assert initialize == ("POST", None)
        session_ids = {session_id for _, session_id in later}
        assert len(session_ids) == 1 and None not in session_ids
        assert later[-1][0] == "DELETE" and answered[-1] == ("DELETE", 204)

        [session_id] = session_ids
        stale = await post_raw(gateway, token, LIST_TOOLS, **{"mcp-session-id": session_id, **LEGACY_HEADERS})

    assert stale.status_code == 404
    assert stale.json()["error"]["message"] == "Session not found"


async def test_a_2025_session_answers_only_the_principal_that_opened_it(gateway: GatewayProcess, token: str) -> None:
    with anyio.fail_after(TIMEOUT):
        bob = await anyio.to_thread.run_sync(gateway.token, "bob", "acme")
        opened = await post_raw(gateway, token, INITIALIZE)
        session = {"mcp-session-id": opened.headers["mcp-session-id"], **LEGACY_HEADERS}
        await post_raw(gateway, token, INITIALIZED, **session)
        as_bob = await post_raw(gateway, bob, LIST_TOOLS, **session)
        as_alice = await post_raw(gateway, token, LIST_TOOLS, **session)

    # Another principal cannot tell the session exists.
    assert as_bob.status_code == 404
    assert as_bob.json()["error"]["message"] == "Session not found"
    assert as_alice.status_code == 200
    assert len(final_message(as_alice)["result"]["tools"]) == 8  # a stream it can resume (SEP-1699)


# --- authentication, over raw HTTP --------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_a_request_without_a_token_is_challenged_to_authenticate(gateway: GatewayProcess, mode: str) -> None:
    headers, body = FIRST_REQUEST[mode]
    with anyio.fail_after(TIMEOUT):
        response = await post_raw(gateway, None, body, **headers)
        async with httpx.AsyncClient(timeout=10.0) as raw:
            metadata = await raw.get(f"{gateway.base_url}/.well-known/oauth-protected-resource/mcp")

    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{gateway.base_url}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert "mcp-session-id" not in response.headers
    assert metadata.status_code == 200
    assert metadata.json()["resource"] == gateway.url
    assert metadata.json()["authorization_servers"] == [gateway.base_url]


@pytest.mark.parametrize("mode", MODES)
async def test_a_token_for_another_audience_is_refused(gateway: GatewayProcess, mode: str) -> None:
    headers, body = FIRST_REQUEST[mode]
    with anyio.fail_after(TIMEOUT):
        forged = await anyio.to_thread.run_sync(_token_for_another_gateway, gateway)
        response = await post_raw(gateway, forged, body, **headers)

    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def _token_for_another_gateway(gateway: GatewayProcess) -> str:
    """Signed by the same dev key, but for a different resource (audience)."""
    other = gateway.workdir / "other-gateway.yaml"
    other.write_text(yaml.safe_dump({**gateway.config, "resource": "http://127.0.0.1:1/mcp"}))
    return gateway.token("alice", "acme", config=other)


# --- transport rules, over raw HTTP -----------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_the_first_request_of_each_era_succeeds_over_raw_http(
    gateway: GatewayProcess, token: str, mode: str
) -> None:
    headers, body = FIRST_REQUEST[mode]
    with anyio.fail_after(TIMEOUT):
        response = await post_raw(gateway, token, body, origin="http://localhost:6274", **headers)

    assert response.status_code == 200
    assert response.json()["id"] == 1
    assert "tools" in response.json()["result"]["capabilities"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_foreign_host_header_is_refused_as_misdirected(gateway: GatewayProcess, token: str, mode: str) -> None:
    headers, body = FIRST_REQUEST[mode]
    with anyio.fail_after(TIMEOUT):
        response = await post_raw(gateway, token, body, host="evil.example:8080", **headers)

    assert response.status_code == 421
    assert response.json()["error"]["message"] == "Misdirected request: host not allowed"
    assert "mcp-session-id" not in response.headers


@pytest.mark.parametrize("origin", ["http://evil.example", "http://127.0.0.1:6274", "null"])
@pytest.mark.parametrize("mode", MODES)
async def test_an_origin_outside_allowed_origins_is_forbidden(
    gateway: GatewayProcess, token: str, mode: str, origin: str
) -> None:
    headers, body = FIRST_REQUEST[mode]
    with anyio.fail_after(TIMEOUT):
        response = await post_raw(gateway, token, body, origin=origin, **headers)

    assert response.status_code == 403
    assert response.json()["error"]["message"] == "Forbidden: origin not allowed"
    assert "mcp-session-id" not in response.headers
