"""The audit trail of a running gateway: `tollway dev` in front of the demo upstreams, the official
SDK client calling over HTTP in both protocol eras, then the records in the local audit file and
`tollway audit` reading them back as an operator would."""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING

import anyio
import pytest

from tests.e2e.conftest import _tollway
from tests.e2e.test_gateway_e2e import MODES, TIMEOUT, connect

if TYPE_CHECKING:
    from tests.conftest import AuditTrail
    from tests.e2e.conftest import GatewayProcess

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

CUSTOMER_EMAIL = "ada.lovelace@example.com"
"""What the support upstream answers for C-1001 (masking is off in this gateway)."""


@pytest.mark.parametrize("mode", MODES)
async def test_the_sdk_clients_calls_are_in_the_audit_file_and_tollway_audit_lists_them(
    gateway: GatewayProcess, audit_trail: AuditTrail, mode: str
) -> None:
    token = gateway.token("auditor-e2e", "acme")
    with anyio.fail_after(TIMEOUT):
        async with connect(gateway, token, mode) as session:
            profile = await session.call_tool("support__get_customer_profile", {"customer_id": "C-1001"})
            revenue = await session.call_tool("finance__fetch_revenue_data", {"region": "APAC", "quarter": "2025-Q1"})

    assert not profile.is_error and not revenue.is_error
    assert CUSTOMER_EMAIL in json.dumps(profile.structured_content)
    records = audit_trail.since()
    calls = [r for r in records if r.get("method") == "tools/call"]
    assert [(r["name"], r["decision"], r["outcome"], r["status"]) for r in calls] == [
        ("support__get_customer_profile", "allowed", "ok", 200),
        ("finance__fetch_revenue_data", "allowed", "ok", 200),
    ]
    assert all((r["tenant"], r["subject"]) == ("acme", "auditor-e2e") for r in calls)
    assert all(r["client"] and r["era"] and len(r["result_sha256"]) == 64 for r in calls)
    assert CUSTOMER_EMAIL not in audit_trail.text() and token not in audit_trail.text()

    listed = subprocess.run(
        [*_tollway(), "audit", "--tenant", "acme", "--tool", "finance__*", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    mine = [json.loads(line) for line in listed.stdout.splitlines()]
    assert calls[1]["request_id"] in [r["request_id"] for r in mine]
    assert all(r["name"].startswith("finance__") and r["tenant"] == "acme" for r in mine)
