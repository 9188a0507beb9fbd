"""The approval workflow as agents and approvers meet it: `tollway dev` (a real process, its
embedded DynamoDB and EventBridge) in front of a recording MCP server, the official SDK client in
both modes as the agent, and the approver using `tollway approvals` (a real process driving the
admin API with --url/--token) or the admin API itself.

A 2025-era agent gets a tool error naming the approval and retries. A 2026-07-28 agent gets an
input_required URL elicitation: the test's elicitation callback plays the user, who has the
approver decide before answering, and the client's own retry carries the request state.
Each test calls as its own subject, so approvals of one test never meet another's.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ElicitRequestParams, ElicitRequestURLParams, ElicitResult, TextContent

from tests.conftest import AuditTrail
from tests.e2e.conftest import GatewayProcess, _gateway_env, _tollway, free_port, gateway_config
from tests.fixtures.recording_upstream import RecordingUpstream

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

MODES = ["legacy", "2026-07-28"]
TIMEOUT = 60  # seconds per test body
SHORT_EXPIRY = 2  # seconds, the expiring gateway's approvals.expiry_seconds
BIG = {"amount": 5000, "to": "ACME Ltd"}
OTHER = {"amount": 5000, "to": "Someone Else"}
PENDING = re.compile(r"^Approval required: rec__echo waits for an approver's decision \(approval id ([\w-]+), expires ")


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingUpstream]:
    with RecordingUpstream().running(lifetime=600) as upstream:
        yield upstream


def start_gateway(workdir: Any, recorder: RecordingUpstream, **approvals: Any) -> GatewayProcess:
    port = free_port()
    config = gateway_config(
        port,
        upstreams=[{"name": "rec", "url": recorder.url, "prefix": "rec"}],
        approvals={"rules": [{"match": "rec__echo", "when": "amount > 1000"}], **approvals},
    )
    process = GatewayProcess(config, workdir, port)
    process.start()
    process.wait_healthy()
    return process


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, recorder: RecordingUpstream) -> Iterator[GatewayProcess]:
    process = start_gateway(tmp_path_factory.mktemp("approvals"), recorder)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def admin_token(gateway: GatewayProcess) -> str:
    return gateway.token("boss", "acme", scope="tollway:admin")


@pytest.fixture(autouse=True)
def _fresh_recorder(recorder: RecordingUpstream) -> None:
    recorder.clear()


class Approver:
    """The person deciding: `tollway approvals` against the gateway's admin API."""

    def __init__(self, gateway: GatewayProcess, token: str) -> None:
        self.gateway = gateway
        self.token = token

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_tollway(), "approvals", *argv, "--url", self.gateway.base_url, "--token", self.token],
            cwd=self.gateway.workdir,
            env=_gateway_env(self.gateway.home),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def decide(self, decision: str, approval_id: str) -> str:
        done = self.cli(decision, approval_id)
        assert done.returncode == 0, done.stderr
        return done.stdout

    async def decide_over_http(self, decision: str, approval_id: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=30) as http:
            reply = await http.post(
                f"{self.gateway.base_url}/admin/approvals/{approval_id}/{decision}",
                headers={"authorization": f"Bearer {self.token}"},
            )
        assert reply.status_code == 200, reply.text
        return dict(reply.json())


class User:
    """The person behind a 2026-07-28 agent: shown the approval link, does `act(id)` (has the
    approver decide, or not), then answers the elicitation with `action`."""

    def __init__(self, act: Callable[[str], Awaitable[Any]] | None = None, action: str = "accept") -> None:
        self.act = act
        self.action = action
        self.seen: list[str] = []

    async def elicit(self, context: Any, params: ElicitRequestParams) -> ElicitResult:
        assert isinstance(params, ElicitRequestURLParams)
        approval_id = params.url.rsplit("/", 1)[1]
        self.seen.append(approval_id)
        if self.act is not None:
            await self.act(approval_id)
        return ElicitResult(action=self.action)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def connect(gateway: GatewayProcess, token: str, mode: str, user: User | None = None) -> AsyncIterator[Client]:
    headers = {"authorization": f"Bearer {token}"}
    extra = {"elicitation_callback": user.elicit} if user is not None else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(15.0, read=60.0)) as http,
        Client(streamable_http_client(gateway.url, http_client=http), mode=mode, read_timeout_seconds=30, **extra) as c,
    ):
        yield c


def text_of(result: Any) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def pending_id(result: Any) -> str:
    assert result.is_error
    found = PENDING.match(text_of(result))
    assert found, text_of(result)
    return found[1]


def ran(result: Any, arguments: dict[str, Any]) -> bool:
    return not result.is_error and json.loads(text_of(result)) == arguments


# --- pending -> approve -> the retry runs once ----------------------------------------------------
async def test_a_2025_agents_call_waits_an_approval_made_with_the_cli_lets_its_retry_run_once(
    gateway: GatewayProcess, admin_token: str, recorder: RecordingUpstream
) -> None:
    approver, token = Approver(gateway, admin_token), gateway.token("agent-cycle", "acme")
    with anyio.fail_after(TIMEOUT):
        async with connect(gateway, token, "legacy") as agent:
            first = pending_id(await agent.call_tool("rec__echo", BIG))
            assert recorder.calls() == []
            listed = approver.cli("list", "--status", "pending")
            approved = approver.decide("approve", first)
            retried = await agent.call_tool("rec__echo", BIG)
            again = await agent.call_tool("rec__echo", BIG)

    assert f"{first}\tpending\tacme\tagent-cycle\trec__echo\t" in listed.stdout
    assert approved == f"approved {first} (rec__echo for acme/agent-cycle)\n"
    assert ran(retried, BIG)
    assert len(recorder.calls()) == 1
    assert pending_id(again) != first  # the approval was used: the next identical call asks again


async def test_a_2026_agent_is_shown_the_approval_and_its_retry_runs_once_approved(
    gateway: GatewayProcess, admin_token: str, recorder: RecordingUpstream
) -> None:
    approver, token = Approver(gateway, admin_token), gateway.token("agent-modern", "acme")

    async def approve(approval_id: str) -> None:
        assert recorder.calls() == []  # nothing ran while the approval was pending
        await approver.decide_over_http("approve", approval_id)

    user = User(approve)
    with anyio.fail_after(TIMEOUT):
        async with connect(gateway, token, "2026-07-28", user) as agent:
            result = await agent.call_tool("rec__echo", BIG)
            user.act, user.action = None, "decline"  # the next approval is left pending
            again = await agent.call_tool("rec__echo", BIG)

    assert ran(result, BIG)
    assert len(recorder.calls()) == 1
    sent = json.loads(recorder.calls()[0].body)["params"]
    assert set(sent) - {"_meta"} == {"name", "arguments"}  # the gateway's round trip stays with it
    assert len(user.seen) == 2 and user.seen[1] != user.seen[0]
    assert pending_id(again) == user.seen[1]


# --- deny -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_a_denied_call_never_runs(
    gateway: GatewayProcess, admin_token: str, recorder: RecordingUpstream, mode: str
) -> None:
    approver, token = Approver(gateway, admin_token), gateway.token(f"agent-deny-{mode}", "acme")

    async def deny(approval_id: str) -> None:
        await approver.decide_over_http("deny", approval_id)

    with anyio.fail_after(TIMEOUT):
        async with connect(gateway, token, mode, User(deny)) as agent:
            if mode == "legacy":
                first = pending_id(await agent.call_tool("rec__echo", BIG))
                assert approver.decide("deny", first) == f"denied {first} (rec__echo for acme/agent-deny-{mode})\n"
            result = await agent.call_tool("rec__echo", BIG)

    assert result.is_error
    assert text_of(result).startswith("Approval denied: rec__echo was denied by an approver")
    assert recorder.calls() == []


# --- other arguments ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_an_approval_covers_only_the_arguments_it_was_asked_for(
    gateway: GatewayProcess, admin_token: str, recorder: RecordingUpstream, mode: str
) -> None:
    approver, token = Approver(gateway, admin_token), gateway.token(f"agent-args-{mode}", "acme")
    user = User(action="decline")  # 2026-07-28: the user leaves each approval pending
    with anyio.fail_after(TIMEOUT):
        async with connect(gateway, token, mode, user) as agent:
            first = pending_id(await agent.call_tool("rec__echo", BIG))
            approver.decide("approve", first)
            other = pending_id(await agent.call_tool("rec__echo", OTHER))
            retried = await agent.call_tool("rec__echo", BIG)

    assert other != first
    assert ran(retried, BIG)
    assert len(recorder.calls()) == 1
    assert json.loads(recorder.calls()[0].body)["params"]["arguments"] == BIG


# --- expiry ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def expiring(tmp_path_factory: pytest.TempPathFactory, recorder: RecordingUpstream) -> Iterator[GatewayProcess]:
    process = start_gateway(tmp_path_factory.mktemp("approvals-expiring"), recorder, expiry_seconds=SHORT_EXPIRY)
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize("mode", MODES)
async def test_an_approval_not_decided_in_time_expires_and_the_call_asks_again(
    expiring: GatewayProcess, recorder: RecordingUpstream, mode: str
) -> None:
    approver = Approver(expiring, expiring.token("boss", "acme", scope="tollway:admin"))
    token = expiring.token(f"agent-expiry-{mode}", "acme")
    with anyio.fail_after(TIMEOUT):
        async with connect(expiring, token, mode, User(action="decline")) as agent:
            first = pending_id(await agent.call_tool("rec__echo", BIG))
            await anyio.sleep(SHORT_EXPIRY + 1)  # the approver is too late
            late = approver.cli("approve", first)
            retried = pending_id(await agent.call_tool("rec__echo", BIG))

    assert late.returncode == 1
    assert late.stderr.endswith("tollway: 409 Conflict: the approval is not pending (decided or expired)\n")
    assert retried != first
    assert recorder.calls() == []


# --- audit and events ---------------------------------------------------------------------------
async def test_each_step_is_audited_and_the_local_gateway_sends_events_to_its_embedded_eventbridge(
    gateway: GatewayProcess, admin_token: str, audit_trail: AuditTrail
) -> None:
    approver, token = Approver(gateway, admin_token), gateway.token("agent-audit", "acme")
    with anyio.fail_after(TIMEOUT):
        async with connect(gateway, token, "legacy") as agent:
            first = pending_id(await agent.call_tool("rec__echo", BIG))
            approver.decide("approve", first)
            assert ran(await agent.call_tool("rec__echo", BIG), BIG)

    records = audit_trail.since()
    calls = [r for r in records if r.get("method") == "tools/call" and r.get("subject") == "agent-audit"]
    assert [(r["decision"], r.get("approval_id")) for r in calls] == [("pending_approval", first), ("allowed", first)]
    assert [r["target"] for r in records if r.get("action") == "approvals.approve"] == [first]
    # `tollway dev` points EventBridge at its embedded moto; a send that failed would be logged.
    assert "approval event not delivered" not in gateway.log.read_text()
