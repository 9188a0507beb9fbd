"""Live configuration as an operator meets it: `tollway dev` serving a gateway.yaml that is edited
while it runs, the official SDK client in both protocol eras.

Tenant acme may first see one support tool; the file is changed to allow them all, and the list
grows within the config TTL (TOLLWAY_CONFIG_TTL_SECONDS, half a second here); a broken edit is
refused (the gateway logs `config rejected` naming the problem) and the last good config keeps
serving; fixing it applies again. Polls are bounded, never timed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import yaml
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.conftest import DEMO_UPSTREAMS, GatewayProcess, UpstreamProcess, free_port, gateway_config, running

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

MODES = ["legacy", "2026-07-28"]
TTL_SECONDS = "0.5"
POLL_SECONDS = 20.0
PROFILE = "support__get_customer_profile"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, str]]:
    workdir = tmp_path_factory.mktemp("live")
    upstream = UpstreamProcess(DEMO_UPSTREAMS["support"], workdir / "support.log")
    port = free_port()
    config = gateway_config(
        port,
        upstreams=[{"name": "support", "url": upstream.url, "prefix": "support"}],
        tenants={"acme": {"tools": [PROFILE]}},
    )
    gateway = GatewayProcess(config, workdir, port)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TOLLWAY_CONFIG_TTL_SECONDS", TTL_SECONDS)
        with running(gateway, [upstream]):
            yield gateway, gateway.token("alice", "acme")


@contextlib.asynccontextmanager
async def connect(gateway: GatewayProcess, token: str, mode: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=15.0) as http,
        Client(streamable_http_client(gateway.url, http_client=http), mode=mode, read_timeout_seconds=15) as session,
    ):
        yield session


async def tool_names(gateway: GatewayProcess, token: str, mode: str) -> set[str]:
    with anyio.fail_after(30):
        async with connect(gateway, token, mode) as session:
            return {tool.name for tool in (await session.list_tools()).tools}


async def eventually_listed(gateway: GatewayProcess, token: str, check: Any, what: str) -> set[str]:
    deadline = time.monotonic() + POLL_SECONDS
    while True:
        names = await tool_names(gateway, token, "2026-07-28")
        if check(names):
            return names
        if time.monotonic() > deadline:
            pytest.fail(f"not within {POLL_SECONDS} s: {what} (listed: {sorted(names)})")
        await anyio.sleep(0.2)


def edit(gateway: GatewayProcess, change: Any) -> None:
    data = yaml.safe_load(gateway.config_path.read_text())
    change(data)
    gateway.config_path.write_text(yaml.safe_dump(data, sort_keys=False))


def rejections(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if "config rejected" in line]


async def test_an_edited_config_applies_a_broken_edit_is_refused_and_a_fix_applies(
    live: tuple[GatewayProcess, str],
) -> None:
    gateway, token = live
    for mode in MODES:
        assert await tool_names(gateway, token, mode) == {PROFILE}

    edit(gateway, lambda data: data["tenants"]["acme"].update(tools=["support__*"]))
    everything = await eventually_listed(gateway, token, lambda names: len(names) > 1, "all support tools")
    for mode in MODES:
        assert await tool_names(gateway, token, mode) == everything

    edit(gateway, lambda data: data["tenants"]["acme"].update(tool=["nothing"]))
    deadline = time.monotonic() + POLL_SECONDS
    while not rejections(gateway.log):
        assert await tool_names(gateway, token, "legacy") == everything  # the last good config
        if time.monotonic() > deadline:
            pytest.fail(f"no `config rejected` line within {POLL_SECONDS} s")
        await anyio.sleep(0.2)
    assert "tenants.acme.tool: unknown key" in rejections(gateway.log)[0]

    edit(gateway, lambda data: data["tenants"].update(acme={"tools": [PROFILE]}))
    await eventually_listed(gateway, token, lambda names: names == {PROFILE}, "the fixed config")
