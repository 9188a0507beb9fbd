"""Poisoned and changed tool definitions as a user meets them: `tollway dev` (embedded DynamoDB)
in front of the poisoned demo upstream, the official SDK client in both protocol eras, and the
operator commands `tollway upstream pending|approve` run against the gateway's own DynamoDB.

The drift story: the upstream is redeployed at the same URL with a changed description of
`convert_currency`; the gateway withholds that tool (lists and calls) until an operator approves
the change. The approval is made by the CLI, another process: the gateway reads pins again after
`definitions.cache_seconds` (set to CACHE_SECONDS here; 30 by default), so the test polls for the
approval to show, bounded by that setting.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from examples.upstreams import poisoned
from tests.e2e.conftest import (
    LIFETIME,
    REPO_ROOT,
    START_TIMEOUT,
    GatewayProcess,
    UpstreamProcess,
    free_port,
    gateway_config,
    running,
)

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

MODES = ["legacy", "2026-07-28"]
MODULE = "examples.upstreams.poisoned"
TIMEOUT = 30  # seconds per client exchange block
CACHE_SECONDS = 3
PIN_CACHE_WAIT = CACHE_SECONDS + 5.0  # seconds: the bound the setting promises, and some slack
PUBLISHED = {"p__get_weather", "p__search_docs", "p__fetch_page", "p__convert_currency"}
"""Under the default policy: clean tools as served, search_docs cut to size; add_numbers,
lookup_word and summarize_notes are blocked (high-severity findings)."""
CONVERT = {"amount": 10, "source": "USD", "target": "EUR"}
NOTHING_PENDING = "nothing awaits approval\n"


@dataclass
class PoisonedUpstream(UpstreamProcess):
    """The poisoned demo upstream on a fixed port; `variant` picks its definitions."""

    variant: int = 1

    def start(self) -> None:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", self.module, "--port", str(self.port)),
                    *("--lifetime", str(LIFETIME), "--variant", str(self.variant)),
                ],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )


@dataclass
class Deployment:
    gateway: GatewayProcess
    upstream: PoisonedUpstream
    token: str

    def dynamodb(self) -> tuple[str, str]:
        """(endpoint, table) of the gateway's embedded DynamoDB, as `tollway dev` printed them."""
        found = re.search(r"DynamoDB:\s+(http://\S+) \(embedded moto\), table (\S+)", self.gateway.log.read_text())
        assert found, self.gateway.log.read_text()
        return found.group(1), found.group(2)

    def operator(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`tollway upstream …` from a fresh shell beside `tollway dev`: no AWS settings of its own,
        the gateway's config and AWS_ENDPOINT_URL_DYNAMODB pointing at its embedded DynamoDB."""
        endpoint, table = self.dynamodb()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TOLLWAY_"))}
        env.update({"AWS_ENDPOINT_URL_DYNAMODB": endpoint, "TOLLWAY_TABLE": table, "USER": "olivia"})
        return subprocess.run(
            [*tollway(), "upstream", *args, "--config", str(self.gateway.config_path)],
            cwd=self.gateway.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )

    def redeploy(self, variant: int) -> None:
        self.upstream.variant = variant
        self.upstream.restart()


def tollway() -> list[str]:
    console_script = Path(sys.executable).with_name("tollway")
    return [str(console_script)] if console_script.exists() else [sys.executable, "-m", "tollway.cli"]


@contextlib.contextmanager
def deployment(workdir: Path) -> Iterator[Deployment]:
    upstream = PoisonedUpstream(MODULE, workdir / "upstream.log")
    port = free_port()
    config = gateway_config(
        port,
        upstreams=[{"name": "poisoned", "url": upstream.url, "prefix": "p"}],
        definitions={"cache_seconds": CACHE_SECONDS},
    )
    gateway = GatewayProcess(config, workdir, port)
    with running(gateway, [upstream]):
        yield Deployment(gateway, upstream, gateway.token("alice", "acme"))


@pytest.fixture(scope="module")
def scanning(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A deployment the scanning tests share; they never change the upstream."""
    with deployment(tmp_path_factory.mktemp("scanning")) as running_deployment:
        yield running_deployment


@pytest.fixture
def drift(tmp_path: Path) -> Iterator[Deployment]:
    with deployment(tmp_path) as running_deployment:
        yield running_deployment


@contextlib.asynccontextmanager
async def connect(deployed: Deployment, mode: str) -> AsyncIterator[Client]:
    """The official client, sending the bearer token on every request."""
    headers = {"authorization": f"Bearer {deployed.token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(15.0, read=30.0)) as http,
        Client(
            streamable_http_client(deployed.gateway.url, http_client=http), mode=mode, read_timeout_seconds=15
        ) as session,
    ):
        yield session


async def tools(deployed: Deployment, mode: str) -> dict[str, Any]:
    with anyio.fail_after(TIMEOUT):
        async with connect(deployed, mode) as session:
            return {tool.name: tool for tool in (await session.list_tools()).tools}


async def unknown_tool_error(deployed: Deployment, mode: str, name: str, arguments: dict[str, Any]) -> Any:
    with anyio.fail_after(TIMEOUT):
        async with connect(deployed, mode) as session:
            with pytest.raises(MCPError) as raised:
                await session.call_tool(name, arguments)
    return raised.value.error


# --- scanning ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
async def test_the_client_sees_the_clean_tools_and_a_cut_description_but_not_the_poisoned_tools(
    scanning: Deployment, mode: str
) -> None:
    listed = await tools(scanning, mode)

    assert set(listed) == PUBLISHED
    assert listed["p__get_weather"].description == "Return the current weather for a city."
    assert listed["p__convert_currency"].description == poisoned.CONVERT_CURRENCY_DESCRIPTIONS[1]
    assert listed["p__search_docs"].description == poisoned.SEARCH_DOCS_DESCRIPTION[:1985] + " … [truncated]"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("tool", ["add_numbers", "lookup_word", "summarize_notes"])
async def test_calling_a_blocked_tool_is_an_unknown_tool_error(scanning: Deployment, mode: str, tool: str) -> None:
    error = await unknown_tool_error(scanning, mode, f"p__{tool}", {"a": 1, "b": 2})

    assert (error.code, error.message, error.data) == (-32602, f"Unknown tool: p__{tool}", None)


@pytest.mark.parametrize("mode", MODES)
async def test_a_result_carrying_instructions_reaches_the_client_flagged(scanning: Deployment, mode: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with connect(scanning, mode) as session:
            page = await session.call_tool("p__fetch_page", {"url": "https://status.example.com"})
            weather = await session.call_tool("p__get_weather", {"city": "Lisbon"})

    assert [block.text for block in page.content] == [poisoned.FETCH_PAGE_RESULT]  # type: ignore[union-attr]
    assert page.meta is not None
    assert page.meta["io.tollway/injection"] == {"findings": ["hidden_instructions", "secret_access"]}
    assert weather.structured_content == {"result": "Lisbon: 21 C, clear sky"}
    assert "io.tollway/injection" not in (weather.meta or {})


def test_tools_seen_for_the_first_time_are_pinned_without_an_operator(scanning: Deployment) -> None:
    anyio.run(tools, scanning, "2026-07-28")  # the gateway has seen the upstream's tools

    done = scanning.operator("pending")

    assert (done.returncode, done.stdout, done.stderr) == (0, NOTHING_PENDING, "")


# --- drift ---------------------------------------------------------------------------------------
async def test_a_changed_tool_is_withheld_until_an_operator_approves_it(drift: Deployment) -> None:
    started = time.monotonic()
    # Lists before the change; once a list has seen the change, calls are refused at once.
    for mode in MODES:
        assert (await tools(drift, mode))["p__convert_currency"].description == poisoned.CONVERT_CURRENCY_DESCRIPTIONS[
            1
        ]
    assert drift.operator("pending").stdout == NOTHING_PENDING

    drift.redeploy(variant=2)

    for mode in MODES:
        assert set(await tools(drift, mode)) == PUBLISHED - {"p__convert_currency"}
        error = await unknown_tool_error(drift, mode, "p__convert_currency", CONVERT)
        assert (error.code, error.message) == (-32602, "Unknown tool: p__convert_currency")
    pending = drift.operator("pending")
    assert pending.returncode == 0, pending.stderr
    [line] = pending.stdout.splitlines()
    upstream, kind, name, state, served = line.split("\t")
    assert (upstream, kind, name, state) == ("poisoned", "tool", "convert_currency", "changed since approval")
    assert re.fullmatch(r"[0-9a-f]{64}", served)

    approved = drift.operator("approve", "poisoned", "convert_currency")

    assert approved.returncode == 0, approved.stderr
    # stdout is the confirmation alone; the audit log line goes to stderr.
    assert approved.stdout == f"approved poisoned tool convert_currency ({served[:12]}…) by olivia\n"
    assert drift.operator("pending").stdout == NOTHING_PENDING
    approved_at = time.monotonic()
    deadline = approved_at + PIN_CACHE_WAIT
    while "p__convert_currency" not in (listed := await tools(drift, "legacy")):
        assert time.monotonic() < deadline, f"still withheld {PIN_CACHE_WAIT:.0f} s after approval"
        await anyio.sleep(1.0)
    assert listed["p__convert_currency"].description == poisoned.CONVERT_CURRENCY_DESCRIPTIONS[2]
    for mode in MODES:
        assert set(await tools(drift, mode)) == PUBLISHED
        with anyio.fail_after(TIMEOUT):
            async with connect(drift, mode) as session:
                converted = await session.call_tool("p__convert_currency", CONVERT)
        assert converted.structured_content == {"result": 9}  # variant 2 rounds to whole units
    assert time.monotonic() - started < 30
