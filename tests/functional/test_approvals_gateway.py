"""The approval workflow through the whole gateway in-process: agents of both eras call a tool
that needs approval, an approver decides through the admin API, and the agent's retry runs once.

The upstream is a recording MCP server (`recorder`, tool `echo`) on 127.0.0.1, mounted as `rec`,
so each test can see exactly which calls reached it. Callers hold dev-issuer tokens: the agent
`alice` of tenant acme, and the approver `boss` with the admin scope. Lambda: the same cycle
through the handler, the DynamoDB store (moto) and `tollway approvals` in direct mode.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.auth import dev
from tollway.cli import main
from tollway.config import GatewayConfig, parse_config
from tollway.http import create_app
from tollway.policy.approvals import INPUT_KEY, META_KEY, STATE_PREFIX
from tollway.store import Stores

from tests.conftest import AuditTrail
from tests.fixtures.recording_upstream import MODERN, Caller, RecordingUpstream
from tests.functional.lambda_harness import LambdaGateway

RESOURCE = "https://gateway.example.com/mcp"
BIG = {"name": "rec__echo", "arguments": {"amount": 5000, "to": "ACME Ltd"}}
SMALL = {"name": "rec__echo", "arguments": {"amount": 10, "to": "ACME Ltd"}}


def gateway_config(url: str, **approvals: Any) -> GatewayConfig:
    return parse_config(
        {
            "resource": RESOURCE,
            "auth": {"issuer": dev.DEV_ISSUER},
            "upstreams": [{"name": "rec", "url": url}],
            "masking": {"enabled": False},
            "approvals": {"rules": [{"match": "rec__echo", "when": "amount > 1000"}], "event_bus": None, **approvals},
        }
    )


class Agent:
    """alice of acme, in either era, with the approver's admin client beside her."""

    def __init__(self, client: TestClient, key: Any) -> None:
        self.client = client
        self.caller = Caller(client, dev.mint(key, subject="alice", tenant="acme", audience=RESOURCE))
        admin_token = dev.mint(key, subject="boss", tenant="acme", audience=RESOURCE, scopes="tollway:admin")
        self.admin_headers = {"authorization": f"Bearer {admin_token}"}
        self.session: str | None = None

    def legacy_call(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.session is None:
            self.session = self.caller.open_session()
        response = self.caller.legacy("tools/call", params, session=self.session)
        assert response.status_code == 200, response.text
        return response.json()["result"]

    def modern_call(self, params: dict[str, Any], capabilities: dict[str, Any] | None = None) -> dict[str, Any]:
        meta = {
            c.META_PROTOCOL_VERSION: MODERN,
            c.META_CLIENT_CAPABILITIES: capabilities or {},
            c.META_CLIENT_INFO: {"name": "agent", "version": "1"},
        }
        body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {**params, "_meta": meta}}
        headers = self.caller.headers(mcp_protocol_version=MODERN, mcp_method="tools/call", mcp_name=params["name"])
        response = self.client.post("/mcp", content=json.dumps(body), headers=headers)
        assert response.status_code == 200, response.text
        return response.json()["result"]

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.client.request(method, path, headers=self.admin_headers, **kwargs)

    def approve(self, approval_id: str) -> dict[str, Any]:
        response = self.admin("POST", f"/admin/approvals/{approval_id}/approve")
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def start(recorder: RecordingUpstream, dev_key: Any) -> Iterator[Callable[..., Agent]]:
    clients: list[TestClient] = []

    def start(**approvals: Any) -> Agent:
        app = create_app(
            gateway_config(recorder.url, **approvals),
            stores=Stores.memory(),
            streaming=False,
            dev_keys=dev.jwk_set(dev_key),
        )
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return Agent(client, dev_key)

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def agent(start: Callable[..., Agent]) -> Agent:
    return start()


def pending_id(result: dict[str, Any]) -> str:
    assert result["isError"] is True
    info = result["_meta"][META_KEY]
    assert info["status"] == "pending"
    assert f"approval id {info['id']}" in result["content"][0]["text"]
    return str(info["id"])


def echoed(result: dict[str, Any]) -> dict[str, Any]:
    assert result.get("isError") is not True, result
    return dict(json.loads(result["content"][0]["text"]))


# --- 2025 era --------------------------------------------------------------------------------------
def test_a_2025_call_waits_for_approval_then_its_retry_runs_once(
    agent: Agent, recorder: RecordingUpstream, audit_trail: AuditTrail
) -> None:
    first = pending_id(agent.legacy_call(BIG))
    assert recorder.calls() == []
    listed = agent.admin("GET", "/admin/approvals", params={"status": "pending"}).json()["approvals"]
    assert [(a["id"], a["tool"], a["subject"], a["tenant"]) for a in listed] == [(first, "rec__echo", "alice", "acme")]
    # The arguments are not stored, only their digest ("5000" alone could be a timestamp's digits).
    assert "ACME Ltd" not in json.dumps(listed) and '"amount"' not in json.dumps(listed)

    decided = agent.approve(first)
    retried = agent.legacy_call(BIG)
    again = agent.legacy_call(BIG)

    assert (decided["status"], decided["decidedBy"]) == ("approved", "acme/boss")
    assert echoed(retried) == BIG["arguments"]
    assert len(recorder.calls()) == 1
    second = pending_id(again)
    assert second != first
    assert agent.admin("GET", f"/admin/approvals/{first}").json()["status"] == "consumed"
    # Every step is audited: the waiting call, the decision, the call that used it, the next one.
    records = audit_trail.since()
    calls = [r for r in records if r["type"] == "mcp" and r.get("method") == "tools/call"]
    assert [(r["decision"], r.get("approval_id"), r["outcome"]) for r in calls] == [
        ("pending_approval", first, "refused"),
        ("allowed", first, "ok"),
        ("pending_approval", second, "refused"),
    ]
    assert len({r["arguments_sha256"] for r in calls}) == 1
    decisions = [(r["subject"], r["target"]) for r in records if r.get("action") == "approvals.approve"]
    assert decisions == [("boss", first)]


def test_a_call_that_no_rule_selects_runs_at_once(agent: Agent, recorder: RecordingUpstream) -> None:
    assert echoed(agent.legacy_call(SMALL)) == SMALL["arguments"]
    assert len(recorder.calls()) == 1


def test_a_denied_call_is_answered_denied_and_never_reaches_the_upstream(
    agent: Agent, recorder: RecordingUpstream, audit_trail: AuditTrail
) -> None:
    first = pending_id(agent.legacy_call(BIG))
    denied = agent.admin("POST", f"/admin/approvals/{first}/deny")
    retried = agent.legacy_call(BIG)

    assert denied.json()["status"] == "denied"
    assert retried["isError"] is True
    assert retried["content"][0]["text"].startswith("Approval denied")
    assert recorder.calls() == []
    assert agent.admin("POST", f"/admin/approvals/{first}/approve").status_code == 409
    calls = [r for r in audit_trail.since() if r["type"] == "mcp" and r.get("method") == "tools/call"]
    assert [(r["decision"], r.get("approval_id")) for r in calls] == [("pending_approval", first), ("denied", first)]


def test_other_arguments_need_a_new_approval(agent: Agent, recorder: RecordingUpstream) -> None:
    first = pending_id(agent.legacy_call(BIG))
    agent.approve(first)
    other = {"name": "rec__echo", "arguments": {"amount": 5000, "to": "Someone Else"}}

    assert pending_id(agent.legacy_call(other)) != first
    assert recorder.calls() == []
    assert echoed(agent.legacy_call(BIG)) == BIG["arguments"]  # the approved one still runs


def test_an_expired_approval_cannot_be_decided_and_the_call_asks_again(
    start: Callable[..., Agent], recorder: RecordingUpstream
) -> None:
    agent = start(expiry_seconds=60)
    now = [1_800_000_000.0]
    agent.client.app.state.endpoint.pipeline.approvals.clock = lambda: now[0]  # type: ignore[attr-defined]
    first = pending_id(agent.legacy_call(BIG))
    now[0] += 61

    refused = agent.admin("POST", f"/admin/approvals/{first}/approve")
    shown = agent.admin("GET", f"/admin/approvals/{first}").json()
    second = pending_id(agent.legacy_call(BIG))

    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == "Conflict: the approval is not pending (decided or expired)"
    assert shown["status"] == "expired"
    assert second != first
    assert recorder.calls() == []


# --- the admin API ---------------------------------------------------------------------------------
def test_the_admin_api_needs_the_admin_scope_and_a_known_pending_id(agent: Agent) -> None:
    first = pending_id(agent.legacy_call(BIG))
    as_agent = {"authorization": f"Bearer {agent.caller.token}"}

    assert agent.client.get("/admin/approvals", headers=as_agent).status_code == 403
    assert agent.client.post(f"/admin/approvals/{first}/approve", headers=as_agent).status_code == 403
    assert agent.client.post(f"/admin/approvals/{first}/approve").status_code == 401
    assert agent.admin("POST", "/admin/approvals/unknown-id/approve").status_code == 404
    assert agent.admin("GET", "/admin/approvals", params={"status": "nonsense"}).status_code == 400
    assert agent.admin("GET", "/admin/approvals", params={"tenant": "other"}).json() == {"approvals": []}


def test_an_approver_cannot_approve_their_own_call(start: Callable[..., Agent], dev_key: Any) -> None:
    agent = start()
    # An agent that also holds the admin scope.
    token = dev.mint(dev_key, subject="alice", tenant="acme", audience=RESOURCE, scopes="tollway:admin")
    agent.caller = Caller(agent.client, token)
    first = pending_id(agent.legacy_call(BIG))

    own = agent.client.post(f"/admin/approvals/{first}/approve", headers={"authorization": f"Bearer {token}"})

    assert own.status_code == 403


# --- 2026-07-28 ----------------------------------------------------------------------------------------
def test_a_2026_client_that_opens_urls_gets_an_input_required_approval_and_its_retry_runs_once(
    agent: Agent, recorder: RecordingUpstream
) -> None:
    capabilities = {"elicitation": {"form": {}, "url": {}}}
    first = agent.modern_call(BIG, capabilities)
    assert first["resultType"] == "input_required"
    elicitation = first["inputRequests"][INPUT_KEY]
    approval_id = first["requestState"].removeprefix(STATE_PREFIX)
    assert elicitation["params"]["url"] == f"https://gateway.example.com/admin/approvals/{approval_id}"

    agent.approve(approval_id)
    retry = {**BIG, "inputResponses": {INPUT_KEY: {"action": "accept"}}, "requestState": first["requestState"]}
    done = agent.modern_call(retry, capabilities)
    again = agent.modern_call(BIG, capabilities)

    assert echoed(done) == BIG["arguments"]
    assert done["resultType"] == "complete"
    sent = json.loads(recorder.calls()[0].body)["params"]
    assert "requestState" not in sent and "inputResponses" not in sent  # the gateway's own round trip
    assert len(recorder.calls()) == 1
    assert again["resultType"] == "input_required"
    assert again["requestState"] != first["requestState"]


def test_a_2026_retry_before_the_decision_is_told_the_approval_is_still_pending(
    agent: Agent, recorder: RecordingUpstream
) -> None:
    capabilities = {"elicitation": {"url": {}}}
    first = agent.modern_call(BIG, capabilities)
    retry = {**BIG, "inputResponses": {INPUT_KEY: {"action": "accept"}}, "requestState": first["requestState"]}

    assert pending_id(agent.modern_call(retry, capabilities)) == first["requestState"].removeprefix(STATE_PREFIX)
    assert recorder.calls() == []


def test_a_2026_client_without_url_elicitation_gets_the_tool_error_and_retries(
    agent: Agent, recorder: RecordingUpstream
) -> None:
    first = pending_id(agent.modern_call(BIG))
    agent.approve(first)

    assert echoed(agent.modern_call(BIG)) == BIG["arguments"]
    assert len(recorder.calls()) == 1


# --- Lambda: the handler, DynamoDB, and the CLI in direct mode -------------------------------------
def test_through_the_lambda_handler_an_approval_made_with_the_cli_lets_the_retry_run_once(
    start_gateway: Callable[[GatewayConfig], LambdaGateway],
    recorder: RecordingUpstream,
    moto_dynamodb: Any,
    table_name: str,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    audit_trail: AuditTrail,
) -> None:
    data = {
        "resource": "https://abc123.execute-api.us-east-1.amazonaws.com/mcp",
        "auth": {"allow_anonymous": True},
        "upstreams": [{"name": "rec", "url": recorder.url}],
        "masking": {"enabled": False},
        "approvals": {"rules": [{"match": "rec__*", "when": "amount > 1000"}], "event_bus": None},
    }
    gateway = start_gateway(parse_config(data))
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(json.dumps(data))
    monkeypatch.setenv("TOLLWAY_TABLE", table_name)
    for name in ("TOLLWAY_URL", "TOLLWAY_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    first = gateway.modern("tools/call", BIG).result()
    approval_id = pending_id(first)
    capsys.readouterr()
    assert main(["approvals", "list", "--status", "pending", "--config", str(config_path)]) == 0
    listed = capsys.readouterr().out
    audit_trail.mark()
    assert main(["approvals", "approve", approval_id, "--by", "ops", "--config", str(config_path)]) == 0
    approved = capsys.readouterr().out
    [decision] = audit_trail.since()
    retried = gateway.modern("tools/call", BIG).result()
    again = gateway.modern("tools/call", BIG).result()

    assert listed.startswith(f"{approval_id}\tpending\tdefault\tanonymous\trec__echo\t")
    assert approved == f"approved {approval_id} (rec__echo for default/anonymous)\n"
    assert (decision["type"], decision["action"], decision["target"], decision["subject"]) == (
        "admin",
        "approvals.approve",
        approval_id,
        "cli/ops",
    )
    assert echoed(retried) == BIG["arguments"]
    assert len(recorder.calls()) == 1
    assert pending_id(again) != approval_id
    assert main(["approvals", "deny", approval_id, "--config", str(config_path)]) == 1
    # Structured log lines, if any, go to stderr too; the failure is its last line.
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "tollway: Conflict: the approval is not pending (decided or expired)"


def test_the_cli_needs_url_and_token_together_and_says_when_the_gateway_is_unreachable(
    dead_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("TOLLWAY_URL", "TOLLWAY_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    assert main(["approvals", "list", "--url", "https://gateway.example.com"]) == 2
    together = "tollway: --url and --token go together (or TOLLWAY_URL and TOLLWAY_TOKEN)\n"
    assert capsys.readouterr().err.endswith(together)
    assert main(["approvals", "approve", "abc", "--url", dead_url, "--token", "t"]) == 1
    base = dead_url.removesuffix("/mcp")
    assert capsys.readouterr().err.endswith(f"tollway: cannot connect to the gateway at {base}\n")
