"""The demo upstream servers, run as real processes and driven by the official SDK client over HTTP.

Every check runs in both protocol eras: the initialize/session handshake ("legacy") and the
stateless 2026-07-28 revision.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client
from mcp_types import LoggingMessageNotificationParams, TextContent, TextResourceContents

from examples.upstreams import _serve

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
MODES = ["legacy", "2026-07-28"]
CALL_TIMEOUT = 20  # seconds per test body; the servers answer in well under one


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _server_url(module: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("upstream") / "stderr.log"
    with log_path.open("w") as log, _serve.spawn(module, cwd=REPO_ROOT, lifetime=600, stderr=log) as url:
        yield url


@pytest.fixture(scope="module")
def customer_support_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _server_url("examples.upstreams.customer_support", tmp_path_factory)


@pytest.fixture(scope="module")
def finance_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _server_url("examples.upstreams.finance", tmp_path_factory)


def _client(url: str, mode: str, **kwargs: Any) -> Client:
    return Client(url, mode=mode, read_timeout_seconds=10, **kwargs)


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_customer_support_tools(customer_support_url: str, mode: str) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with _client(customer_support_url, mode) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(tools) == {
                "get_customer_profile",
                "list_orders",
                "check_refund_status",
                "create_ticket",
            }
            assert tools["list_orders"].input_schema["properties"]["limit"]["default"] == 10
            assert "description" in tools["get_customer_profile"].input_schema["properties"]["customer_id"]

            profile = await client.call_tool("get_customer_profile", {"customer_id": "C-1001"})
            assert not profile.is_error
            assert profile.structured_content is not None
            assert profile.structured_content["email"] == "ada.lovelace@example.com"
            assert profile.structured_content["card_on_file"] == "4242 4242 4242 4242"
            text = profile.content[0]
            assert isinstance(text, TextContent)
            assert json.loads(text.text) == profile.structured_content

            orders = await client.call_tool("list_orders", {"customer_id": "C-1001", "limit": 2})
            assert orders.structured_content is not None
            assert [o["order_id"] for o in orders.structured_content["orders"]] == ["ORD-50001", "ORD-50002"]
            assert orders.structured_content["total_orders"] == 3

            ticket = await client.call_tool(
                "create_ticket", {"customer_id": "C-1002", "subject": "Late parcel", "body": "Still waiting."}
            )
            assert ticket.structured_content is not None
            assert ticket.structured_content["ticket_id"] == "TCK-FFC4F04B"
            assert ticket.structured_content["priority"] == "normal"

            unknown = await client.call_tool("check_refund_status", {"order_id": "ORD-99999"})
            assert unknown.is_error


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_customer_support_resources_and_prompt(customer_support_url: str, mode: str) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with _client(customer_support_url, mode) as client:
            resources = (await client.list_resources()).resources
            assert [str(r.uri) for r in resources] == ["support://policies/refunds"]
            templates = (await client.list_resource_templates()).resource_templates
            assert [t.uri_template for t in templates] == ["support://customers/{customer_id}"]

            record = (await client.read_resource("support://customers/C-1003")).contents[0]
            assert isinstance(record, TextResourceContents)
            assert json.loads(record.text)["iban"] == "FR14 2004 1010 0505 0001 3M02 606"

            prompt = await client.get_prompt("draft_reply", {"customer_id": "C-1001", "tone": "formal"})
            first = prompt.messages[0].content
            assert isinstance(first, TextContent)
            assert first.text.startswith("Draft a formal reply to Ada Lovelace <ada.lovelace@example.com>")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_finance_tools(finance_url: str, mode: str) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with _client(finance_url, mode) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert names == {
                "fetch_revenue_data",
                "run_forecast",
                "validate_transaction",
                "download_statement",
            }

            revenue = await client.call_tool("fetch_revenue_data", {"region": "EMEA", "quarter": "2025-Q1"})
            assert revenue.structured_content is not None
            assert revenue.structured_content["revenue"] == 1_395_000
            assert revenue.structured_content["margin_pct"] == 38.0

            good = await client.call_tool(
                "validate_transaction", {"card_number": "4242 4242 4242 4242", "amount": 12.5}
            )
            assert good.structured_content is not None
            assert good.structured_content["card_valid"] is True
            assert good.structured_content["approved"] is True
            bad = await client.call_tool("validate_transaction", {"card_number": "4242 4242 4242 4241", "amount": 12.5})
            assert bad.structured_content is not None
            assert bad.structured_content["card_valid"] is False

            statement = await client.call_tool("download_statement", {"account_id": "ACC-2001", "month": "2025-03"})
            assert statement.structured_content is not None
            assert statement.structured_content["closing_balance"] == 3583.45

            resource = (await client.read_resource("finance://reports/latest")).contents[0]
            assert isinstance(resource, TextResourceContents)
            assert "GB29 NWBK 6016 1331 9268 19" in resource.text
            prompts = [p.name for p in (await client.list_prompts()).prompts]
            assert prompts == ["explain_variance"]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_run_forecast_streams_progress_and_log(finance_url: str, mode: str) -> None:
    progress: list[tuple[float, float | None, str | None]] = []
    logs: list[LoggingMessageNotificationParams] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        logs.append(params)

    # At 2026-07-28 log messages are only sent to requests that opt in with a log level.
    with anyio.fail_after(CALL_TIMEOUT):
        async with _client(finance_url, mode, logging_callback=on_log, log_level="info") as client:
            result = await client.call_tool(
                "run_forecast", {"region": "EMEA", "months": 3}, progress_callback=on_progress
            )

    assert result.structured_content is not None
    assert [p["revenue"] for p in result.structured_content["points"]] == [500_000, 510_000, 520_000]
    assert progress == [
        (1, 4, "loading history"),
        (2, 4, "fitting model"),
        (3, 4, "projecting"),
        (4, 4, "formatting"),
    ]
    assert [(log.level, log.data) for log in logs] == [("info", "forecast for EMEA ready: 3 months")]
