"""The audit trail as an operator reads it: one record per MCP request and per admin action, with
who, what, the decision and its rule, the outcome, units, timings, sizes and digests — and never
an argument, a result, PII or a token.

The gateway app runs in-process (Starlette TestClient, in-memory stores, dev-issuer tokens) in
front of a `MemoryUpstream` (tests/fixtures/memory_upstream.py) injected in-process; records are
read back from the audit file every gateway of the run writes (`audit_trail`, TOLLWAY_AUDIT_FILE).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from tollway.auth import dev
from tollway.errors import UpstreamTimeout, UpstreamUnavailable
from tollway.store import Stores
from tollway.telemetry.audit import digest

from examples.upstreams import poisoned
from tests.conftest import AuditTrail
from tests.fixtures.memory_upstream import LEGACY, MODERN, RESOURCE, Agent, MemoryUpstream, gateways, text_result, tool
from tests.unit.pii_corpus import CASES, JWT_TOKEN

ERAS = [MODERN, LEGACY]
ADMIN_SCOPE = "tollway:admin"
PII = [case for case in CASES if case.found and case.found[0][0] in ("email", "card")]
"""Emails and card numbers from the masking corpus, seeded into arguments and results."""


class FailingUpstream(MemoryUpstream):
    """A MemoryUpstream whose calls of the tools named in `failures` fail as the real client would."""

    def __init__(self, *args: Any, failures: dict[str, Exception], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures = failures

    async def exchange(self, message: dict[str, Any], **kwargs: Any) -> Any:
        failure = self.failures.get(str((message.get("params") or {}).get("name")))
        if message.get("method") == "tools/call" and failure is not None:
            raise failure
        async for item in super().exchange(message, **kwargs):
            yield item


def upstream() -> FailingUpstream:
    return FailingUpstream(
        "mem",
        modern=True,
        legacy=True,
        tools=[
            tool("echo", text="string"),
            tool("secret", text="string"),
            tool("charge", amount="number"),
            tool("add_numbers", poisoned.ADD_NUMBERS_DESCRIPTION),
            tool("slow"),
            tool("down"),
        ],
        results={"charge": text_result("declined", is_error=True)},
        failures={"slow": UpstreamTimeout("mem"), "down": UpstreamUnavailable("mem")},
    )


@pytest.fixture
def start(dev_key: Any) -> Iterator[Callable[..., TestClient]]:
    """`start(**sections)`: a gateway with the dev issuer in front of a fresh `mem` upstream."""
    with gateways("memory") as launch:

        def build(**sections: Any) -> TestClient:
            return launch(
                upstream(),
                stores=Stores.memory(),
                dev_keys=dev.jwk_set(dev_key),
                auth={"issuer": dev.DEV_ISSUER},
                **sections,
            )

        yield build


def agent(client: TestClient, key: Any, era: str, *, tenant: str = "acme", scopes: str = "") -> Agent:
    token = dev.mint(key, subject="alice", tenant=tenant, audience=RESOURCE, scopes=scopes)
    return Agent(client, era, token=token)


def the_call(trail: AuditTrail) -> dict[str, Any]:
    """The one tools/call record written since the mark."""
    calls = [r for r in trail.since() if r.get("method") == "tools/call"]
    assert len(calls) == 1, calls
    return calls[0]


# --- MCP requests --------------------------------------------------------------------------------
@pytest.mark.parametrize("era", ERAS)
def test_an_allowed_call_is_recorded_with_who_what_units_timings_sizes_and_digests(
    start: Callable[..., TestClient], dev_key: Any, audit_trail: AuditTrail, era: str
) -> None:
    client = start(quotas={"plans": {"p": {"tenant": {"per_day": 100}}}, "default_plan": "p"})
    caller = agent(client, dev_key, era)
    if era == LEGACY:
        caller.open()
    audit_trail.mark()

    response = caller.send("tools/call", {"name": "mem__echo", "arguments": {"text": "hello"}}, request_id=7)

    assert response.status_code == 200
    record = the_call(audit_trail)
    assert record["audit"] == 1
    assert record["type"] == "mcp"
    assert record["request_id"] == response.headers["x-request-id"]
    assert (record["tenant"], record["subject"]) == ("acme", "alice")
    assert (record["client"], record["client_version"]) == ("memory-tests", "1")
    assert record["era"] == era
    assert (record["name"], record["upstream"], record["upstream_name"]) == ("mem__echo", "mem", "echo")
    assert (record["decision"], record["outcome"], record["status"]) == ("allowed", "ok", 200)
    assert "rule" not in record
    assert record["units"] == 1
    assert record["ms"] >= record["upstream_ms"] >= 0
    assert record["request_bytes"] == len(response.request.content)
    assert record["response_bytes"] == len(response.content)
    assert record["arguments_sha256"] == digest({"text": "hello"})
    result = response.json()["result"]
    served = {k: v for k, v in result.items() if k != "resultType"}
    served["_meta"] = {k: v for k, v in (result.get("_meta") or {}).items() if "serverInfo" not in k}
    if not served["_meta"]:
        del served["_meta"]
    assert record["result_sha256"] == digest(served)


def test_every_mcp_request_of_a_session_gets_a_record(
    start: Callable[..., TestClient], dev_key: Any, audit_trail: AuditTrail
) -> None:
    caller = agent(start(), dev_key, LEGACY)

    caller.open()
    caller.send("tools/list")

    methods = [(r["method"], r["status"], r["decision"]) for r in audit_trail.since()]
    assert methods == [
        ("initialize", 200, "allowed"),
        ("notifications/initialized", 202, "allowed"),
        ("tools/list", 200, "allowed"),
    ]


@pytest.mark.parametrize("era", ERAS)
def test_a_call_the_tenant_policy_denies_is_recorded_as_denied_with_the_rule(
    start: Callable[..., TestClient], dev_key: Any, audit_trail: AuditTrail, era: str
) -> None:
    client = start(tenants={"acme": {"tools": ["mem__echo"]}})

    response = agent(client, dev_key, era).send("tools/call", {"name": "mem__secret", "arguments": {}})

    assert "error" in response.json()
    record = the_call(audit_trail)
    assert (record["decision"], record["rule"]) == ("denied", "not in the tenant's tools")
    assert (record["name"], record["outcome"], record["status"]) == ("mem__secret", "refused", response.status_code)
    assert (record["tenant"], record["subject"]) == ("acme", "alice")
    assert "arguments_sha256" not in record and "units" not in record


@pytest.mark.parametrize("era", ERAS)
def test_a_call_over_a_limit_is_recorded_as_rate_limited_with_the_window(
    start: Callable[..., TestClient], dev_key: Any, audit_trail: AuditTrail, era: str
) -> None:
    caller = agent(start(quotas={"plans": {"p": {"tenant": {"per_minute": 1}}}, "default_plan": "p"}), dev_key, era)
    assert caller.send("tools/call", {"name": "mem__echo", "arguments": {}}).status_code == 200
    audit_trail.mark()

    response = caller.send("tools/call", {"name": "mem__echo", "arguments": {}}, request_id=2)

    assert response.status_code == 429
    record = the_call(audit_trail)
    assert (record["decision"], record["rule"]) == ("rate_limited", "tenant per_minute")
    assert (record["outcome"], record["status"]) == ("refused", 429)


@pytest.mark.parametrize("era", ERAS)
def test_a_call_of_a_poisoned_tool_is_recorded_as_withheld_by_the_definition_gate(
    start: Callable[..., TestClient], dev_key: Any, audit_trail: AuditTrail, era: str
) -> None:
    response = agent(start(), dev_key, era).send("tools/call", {"name": "mem__add_numbers", "arguments": {}})

    assert "error" in response.json()
    record = the_call(audit_trail)
    assert (record["decision"], record["rule"], record["outcome"]) == ("withheld", "poisoned definition", "refused")
    assert record["name"] == "mem__add_numbers"


def test_a_call_of_a_definition_awaiting_approval_is_recorded_as_withheld_with_that_reason(
    start: Callable[..., TestClient], dev_key: Any, audit_trail: AuditTrail
) -> None:
    client = start(definitions={"auto_approve_first_seen": False})

    agent(client, dev_key, MODERN).send("tools/call", {"name": "mem__echo", "arguments": {}})

    record = the_call(audit_trail)
    assert (record["decision"], record["rule"]) == ("withheld", "definition awaits approval")


@pytest.mark.parametrize("era", ERAS)
def test_a_call_with_invalid_arguments_is_recorded_as_invalid(
    start: Callable[..., TestClient], dev_key: Any, audit_trail: AuditTrail, era: str
) -> None:
    response = agent(start(), dev_key, era).send("tools/call", {"name": "mem__charge", "arguments": {"amount": "x"}})

    # Both eras' current revisions answer a tool execution error (SEP-1303), audited as the -32602 was.
    assert response.status_code == 200
    assert response.json()["result"]["isError"] is True
    record = the_call(audit_trail)
    assert (record["decision"], record["rule"], record["outcome"]) == ("invalid", "ArgumentsRefused", "refused")
    assert "x" not in json.dumps({k: v for k, v in record.items() if k not in ("time", "request_id")})


@pytest.mark.parametrize(
    ("tool_name", "status", "outcome"),
    [("charge", 200, "tool_error"), ("slow", 504, "timeout"), ("down", 502, "upstream_error")],
)
def test_a_call_that_fails_is_recorded_with_its_outcome_and_its_units(
    start: Callable[..., TestClient], dev_key: Any, audit_trail: AuditTrail, tool_name: str, status: int, outcome: str
) -> None:
    client = start(quotas={"plans": {"p": {"tenant": {"per_day": 100}}}, "default_plan": "p"})

    response = agent(client, dev_key, LEGACY).send("tools/call", {"name": f"mem__{tool_name}", "arguments": {}})

    assert response.status_code == status
    record = the_call(audit_trail)
    assert (record["decision"], record["outcome"], record["status"], record["units"]) == (
        "allowed",
        outcome,
        status,
        1,
    )
    assert "upstream_ms" in record


def test_a_request_without_a_token_is_recorded_as_unauthenticated_without_the_credential(
    start: Callable[..., TestClient], audit_trail: AuditTrail
) -> None:
    client = start()
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}

    missing = client.post("/mcp", content=json.dumps(body), headers=headers)
    forged = client.post("/mcp", content=json.dumps(body), headers={**headers, "authorization": f"Bearer {JWT_TOKEN}"})

    assert (missing.status_code, forged.status_code) == (401, 401)
    records = audit_trail.since()
    assert [(r["decision"], r["outcome"], r["status"]) for r in records] == [("unauthenticated", "refused", 401)] * 2
    assert not any("tenant" in r or "subject" in r for r in records)
    assert JWT_TOKEN not in audit_trail.text()


# --- admin actions -----------------------------------------------------------------------------------
def test_admin_actions_are_recorded_with_the_admin_the_action_its_target_and_outcome(
    start: Callable[..., TestClient], dev_key: Any, audit_trail: AuditTrail
) -> None:
    client = start()
    admin = dev.mint(dev_key, subject="root", tenant="ops", audience=RESOURCE, scopes=ADMIN_SCOPE)
    user = dev.mint(dev_key, subject="alice", tenant="acme", audience=RESOURCE)
    target = {"upstream": "mem", "name": "echo", "kind": "tool"}

    listed = client.get("/admin/definitions/pending", headers={"authorization": f"Bearer {admin}"})
    approved = client.post("/admin/definitions/approve", json=target, headers={"authorization": f"Bearer {admin}"})
    refused = client.get("/admin/definitions/pending", headers={"authorization": f"Bearer {user}"})

    assert (listed.status_code, approved.status_code, refused.status_code) == (200, 404, 403)
    records = audit_trail.since()
    assert all(r["type"] == "admin" and r["audit"] == 1 for r in records)
    summary = [
        (r.get("tenant"), r.get("subject"), r["action"], r.get("target"), r["outcome"], r["status"]) for r in records
    ]
    assert summary == [
        ("ops", "root", "definitions.pending", None, "ok", 200),
        ("ops", "root", "definitions.approve", "mem/tool/echo", "not_found", 404),
        ("acme", "alice", "GET /admin/definitions/pending", None, "denied", 403),
    ]
    assert records[0]["request_id"] == listed.headers["x-request-id"]


def test_a_refused_admin_request_is_recorded_by_its_route_without_the_identifier_it_named(
    start: Callable[..., TestClient], dev_key: Any, audit_trail: AuditTrail
) -> None:
    client = start()
    user = dev.mint(dev_key, subject="alice", tenant="acme", audience=RESOURCE)
    session_id = "Zq3-secret_session_id_of_someone_else_0123456"

    refused = client.delete(f"/admin/sessions/{session_id}", headers={"authorization": f"Bearer {user}"})
    anonymous = client.post("/admin/approvals/3f2a9c4e1b7d/approve")

    assert (refused.status_code, anonymous.status_code) == (403, 401)
    records = audit_trail.since()
    assert [r["action"] for r in records] == ["DELETE /admin/sessions/{id}", "POST /admin/approvals/{id}/approve"]
    assert all(session_id not in json.dumps(r) and "3f2a9c4e1b7d" not in json.dumps(r) for r in records)


# --- no payload, PII or token in any record ----------------------------------------------------------
@pytest.mark.parametrize("era", ERAS)
def test_no_seeded_pii_or_token_reaches_an_audit_record(
    start: Callable[..., TestClient], dev_key: Any, audit_trail: AuditTrail, era: str
) -> None:
    client = start()  # masking off: the upstream echoes the raw values back in its results
    caller = agent(client, dev_key, era)
    seeded = [case.found[0][1] for case in PII]
    assert len(seeded) >= 5

    for index, value in enumerate(seeded):
        answer = caller.send("tools/call", {"name": "mem__echo", "arguments": {"text": value}}, request_id=index)
        assert value in answer.text  # it did go through the gateway, both ways
    caller.send("tools/call", {"name": "mem__echo", "arguments": {"text": f"Bearer {JWT_TOKEN}"}}, request_id=99)

    written = audit_trail.text()
    assert written.count('"method":"tools/call"') == len(seeded) + 1
    leaked = [value for value in [*seeded, JWT_TOKEN, caller.token] if value in written]
    assert leaked == []


def test_a_body_that_is_not_json_is_recorded_as_invalid_with_the_callers_identity(
    start: Callable[..., TestClient], dev_key: Any, audit_trail: AuditTrail
) -> None:
    caller = agent(start(), dev_key, MODERN)

    response = caller.client.post("/mcp", content=b"{not json", headers=caller.headers())

    assert response.status_code == 400
    [record] = audit_trail.since()
    assert (record["decision"], record["rule"], record["outcome"], record["status"]) == (
        "invalid",
        "ParseError",
        "refused",
        400,
    )
    assert (record["tenant"], record["subject"], record["request_bytes"]) == ("acme", "alice", 9)
    assert "method" not in record and "era" not in record


def test_a_request_from_a_browser_origin_not_allowed_is_recorded_as_denied(
    start: Callable[..., TestClient], dev_key: Any, audit_trail: AuditTrail
) -> None:
    caller = agent(start(http={"allowed_origins": ["https://app.example.com"]}), dev_key, MODERN)
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}

    response = caller.client.post("/mcp", json=body, headers=caller.headers(origin="https://evil.example"))

    assert response.status_code == 403
    [record] = audit_trail.since()
    assert (record["decision"], record["rule"], record["outcome"]) == ("denied", "ForbiddenOrigin", "refused")
