"""An operator ends an agent's session: the official SDK client (2025 era) holds a session on a
`tollway dev` gateway; `tollway sessions list` (admin API over HTTP, a token from `tollway
token` with the admin scope) shows it with the client's name; `tollway sessions end` ends it; the
client's next call fails with the gateway's "Session not found"."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import Implementation

if TYPE_CHECKING:
    from tests.e2e.conftest import GatewayProcess

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

TIMEOUT = 60  # seconds for the test body


def tollway(*argv: str) -> subprocess.CompletedProcess[str]:
    """The `tollway` command as a new process (HTTP mode needs no DynamoDB of its own)."""
    console_script = Path(sys.executable).with_name("tollway")
    command = [str(console_script)] if console_script.exists() else [sys.executable, "-m", "tollway.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TOLLWAY_"))}
    return subprocess.run([*command, *argv], env=env, capture_output=True, text=True, timeout=30, check=False)


async def test_an_operator_lists_and_ends_an_sdk_clients_session(gateway: GatewayProcess) -> None:
    agent_token = gateway.token("alice", "acme")
    admin = ("--url", gateway.base_url, "--token", gateway.token("olivia", "ops", "tollway:admin"))
    name = f"e2e-agent-{uuid.uuid4().hex[:8]}"  # tells this session apart from other tests' sessions
    headers = {"authorization": f"Bearer {agent_token}"}

    with anyio.fail_after(TIMEOUT):
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(15.0, read=30.0)) as http,
            Client(
                streamable_http_client(gateway.url, http_client=http),
                mode="legacy",
                client_info=Implementation(name=name, version="1.0"),
                read_timeout_seconds=15,
            ) as agent,
        ):
            assert (await agent.call_tool("support__list_orders", {"customer_id": "C-1001"})).is_error is False

            listed = await anyio.to_thread.run_sync(lambda: tollway("sessions", "list", "--tenant", "acme", *admin))
            assert listed.returncode == 0, listed.stderr
            [row] = [line.split("\t") for line in listed.stdout.splitlines() if f"\t{name} 1.0\t" in line]
            session_id, subject, _client, _created, _used, upstreams = row
            assert subject == "alice"
            assert "support" in upstreams.split(",")  # the SDK also lists tools: every upstream may hold one

            ended = await anyio.to_thread.run_sync(lambda: tollway("sessions", "end", session_id, *admin))
            assert ended.returncode == 0, ended.stderr
            assert (
                ended.stdout
                == f"ended session {session_id} of acme/alice (upstream sessions: {upstreams.replace(',', ', ')})\n"
            )

            with pytest.raises(MCPError) as refused:
                await agent.call_tool("support__list_orders", {"customer_id": "C-1001"})
            assert refused.value.error.message == "Session not found"

            again = await anyio.to_thread.run_sync(lambda: tollway("sessions", "list", "--tenant", "acme", *admin))
            assert session_id not in again.stdout
