"""2026-07-28 `subscriptions/listen` through the gateway, with the official SDK client.

The upstream (tests/fixtures/watch_upstream.py, mounted as `w`) changes its tool list and
announces resource updates on its own listen streams; the gateway listens there for each of its
callers' streams and passes on what the caller asked for and may see, under public names.
It is mounted twice: `w` (2026-07-28, the gateway listens there) and `old` (spoken to as a
2025-era server: the gateway opens a session, subscribes, and reads its standalone stream).
Tenant `finance` may see every resource; tenant `ops` only `w+watch://notes/*`. The gateway also
announces changes of a caller's view it notices itself (checked every LISTEN_CHECK_SECONDS), such
as a drifted definition withheld, then approved by an operator (`tollway upstream approve`).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated, ToolsListChanged

from tests.e2e.conftest import (
    START_TIMEOUT,
    GatewayProcess,
    UpstreamProcess,
    _tollway,
    free_port,
    gateway_config,
    running,
)

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

MODERN = "2026-07-28"
NOTES, PAYROLL = "w+watch://notes/today", "w+watch://payroll/2026"
LISTEN_SECONDS = 12
TIMEOUT = 15  # seconds any one event may take to arrive
LISTEN_CHECK_SECONDS = 0.5
CACHE_SECONDS = 1  # definitions.cache_seconds: how soon an operator's approval shows
UPSTREAM_TIMEOUT = 3  # seconds: a listen stream outlives it


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("listen-gateway")
    upstream = UpstreamProcess("tests.fixtures.watch_upstream", workdir / "upstream.log")
    port = free_port()
    config = gateway_config(
        port,
        upstreams=[
            {"name": "w", "url": upstream.url, "prefix": "w", "timeout_seconds": UPSTREAM_TIMEOUT},
            # The same server spoken to as a 2025-era one: its updates come on a session's own stream.
            {"name": "old", "url": upstream.url, "prefix": "old", "protocol": "legacy"},
        ],
        tenants={"finance": {}, "ops": {"resources": ["w+watch://notes/*"], "upstreams": ["w"]}},
        http={"listen_max_seconds": LISTEN_SECONDS, "listen_check_seconds": LISTEN_CHECK_SECONDS},
        definitions={"cache_seconds": CACHE_SECONDS},
    )
    process = GatewayProcess(config, workdir, port)
    with running(process, [upstream]):
        yield process


@contextlib.asynccontextmanager
async def connect(gateway: GatewayProcess, tenant: str) -> AsyncIterator[Client]:
    token = gateway.token(f"{tenant}-user", tenant)
    headers = {"authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(15.0, read=60.0)) as http,
        Client(streamable_http_client(gateway.url, http_client=http), mode=MODERN, read_timeout_seconds=15) as client,
    ):
        yield client


async def next_event(subscription: Any) -> Any:
    with anyio.fail_after(TIMEOUT):
        return await anext(subscription)


def modern_post(gateway: GatewayProcess, method: str, params: dict[str, Any], request_id: Any) -> dict[str, Any]:
    """One 2026-07-28 request's headers and body, as tenant `finance`."""
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientCapabilities": {}}
    headers = {
        "authorization": f"Bearer {gateway.token('finance-user', 'finance')}",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": MODERN,
        "mcp-method": method,
    }
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**params, "_meta": meta}}
    return {"url": gateway.url, "json": body, "headers": headers}


def test_discover_advertises_what_listen_delivers(watched: GatewayProcess) -> None:
    answer = httpx.post(**modern_post(watched, "server/discover", {}, 1), timeout=TIMEOUT)

    caps = answer.json()["result"]["capabilities"]
    assert caps["tools"] == {"listChanged": True}
    assert caps["resources"]["subscribe"] is True


async def test_a_changed_tool_list_reaches_the_listener(watched: GatewayProcess) -> None:
    async with connect(watched, "finance") as client, client.listen(tools_list_changed=True) as subscription:
        assert subscription.honored.tools_list_changed is True
        assert not subscription.honored.resource_subscriptions  # not asked for, not granted

        await client.call_tool("w__add_tool", {"name": "fresh"})
        assert await next_event(subscription) == ToolsListChanged()

        tools = await client.list_tools()
        assert "w__fresh" in {tool.name for tool in tools.tools}


async def test_a_resource_update_reaches_its_subscriber_under_the_public_uri(watched: GatewayProcess) -> None:
    async with (
        connect(watched, "finance") as client,
        client.listen(resource_subscriptions=[NOTES, "w+watch://nobody/serves-this"]) as subscription,
    ):
        assert subscription.honored.resource_subscriptions == [NOTES]  # an unknown URI is not honored
        assert subscription.honored.tools_list_changed is not True  # not asked for: not sent

        await client.call_tool("w__touch", {"uri": "watch://notes/today"})  # the upstream's own URI
        assert await next_event(subscription) == ResourceUpdated(uri=NOTES)


async def test_a_principal_cannot_subscribe_to_what_it_may_not_read(watched: GatewayProcess) -> None:
    async with (
        connect(watched, "finance") as finance,
        connect(watched, "ops") as ops,
        finance.listen(resource_subscriptions=[PAYROLL, NOTES]) as finance_stream,
        ops.listen(resource_subscriptions=[PAYROLL, NOTES]) as ops_stream,
    ):
        assert finance_stream.honored.resource_subscriptions == [PAYROLL, NOTES]
        assert ops_stream.honored.resource_subscriptions == [NOTES]  # payroll: as if nobody served it

        await finance.call_tool("w__touch", {"uri": "watch://payroll/2026"})
        await finance.call_tool("w__touch", {"uri": "watch://notes/today"})
        assert await next_event(finance_stream) == ResourceUpdated(uri=PAYROLL)
        assert await next_event(finance_stream) == ResourceUpdated(uri=NOTES)
        # Delivered in order: had the payroll update reached ops, it would come first.
        assert await next_event(ops_stream) == ResourceUpdated(uri=NOTES)


async def test_listen_frames_carry_the_subscription_id_and_end_gracefully(watched: GatewayProcess) -> None:
    """Raw HTTP: the acknowledgement first, every frame tagged, the closing result last."""
    listen = {"notifications": {"toolsListChanged": True, "resourceSubscriptions": ["w+watch://nobody/serves-this"]}}
    request = modern_post(watched, "subscriptions/listen", listen, "sub-7")
    frames, comments = [], []
    async with httpx.AsyncClient(timeout=LISTEN_SECONDS + TIMEOUT) as raw:  # noqa: SIM117
        async with raw.stream("POST", **request) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    frames.append(httpx.Response(200, content=line[5:]).json())
                elif line.startswith(":"):
                    comments.append(line)
    acknowledgement, *_, closing = frames
    assert acknowledgement["method"] == "notifications/subscriptions/acknowledged"
    # Only what is delivered is acknowledged: a URI nobody serves is left out.
    assert acknowledgement["params"]["notifications"] == {"toolsListChanged": True}
    assert all(f["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "sub-7" for f in frames[:-1])
    assert closing["id"] == "sub-7"
    assert closing["result"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "sub-7"
    assert closing["result"]["resultType"] == "complete"
    # Nothing changed: each check said so with a keep-alive comment, which no client mistakes for a frame.
    assert comments and set(comments) == {": keep-alive"}


def approve(gateway: GatewayProcess, upstream: str, tool: str) -> None:
    """`tollway upstream approve` from another process, against the gateway's embedded DynamoDB."""
    found = re.search(r"DynamoDB:\s+(http://\S+) \(embedded moto\), table (\S+)", gateway.log.read_text())
    assert found, gateway.log.read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TOLLWAY_"))}
    env.update({"AWS_ENDPOINT_URL_DYNAMODB": found.group(1), "TOLLWAY_TABLE": found.group(2), "USER": "olivia"})
    done = subprocess.run(
        [*_tollway(), "upstream", "approve", upstream, tool, "--config", str(gateway.config_path)],
        cwd=gateway.workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr


async def test_a_drifted_tool_withheld_then_approved_is_announced_both_times(watched: GatewayProcess) -> None:
    async with connect(watched, "finance") as client, client.listen(tools_list_changed=True) as subscription:
        assert "w__note" in {tool.name for tool in (await client.list_tools()).tools}
        await anyio.sleep(UPSTREAM_TIMEOUT + 1)  # the stream's checks outlive a request's upstream budget

        # Announces nothing itself. The tool drifts under both mounts (`w__note`, `old__note`), whose
        # catalogs refresh at their own times: one announcement each, or one for both.
        await client.call_tool("w__redescribe", {"description": "Takes a note, and more"})
        await announced_until(client, subscription, lambda tools: not {"w__note", "old__note"} & tools)

        approve(watched, "w", "note")
        await announced_until(client, subscription, lambda tools: "w__note" in tools)  # the approval shows
        assert "old__note" not in {tool.name for tool in (await client.list_tools()).tools}  # still withheld


async def announced_until(client: Client, subscription: Any, seen: Callable[[set[str]], bool]) -> None:
    """Read `tools/list_changed` announcements until the list the caller then gets satisfies
    `seen`: a list is only checked after an announcement, so every state asserted was announced."""
    with anyio.fail_after(TIMEOUT):
        while True:
            assert await anext(subscription) == ToolsListChanged()
            if seen({tool.name for tool in (await client.list_tools()).tools}):
                return


async def test_a_resource_update_of_a_2025_era_upstream_reaches_a_2026_listener(watched: GatewayProcess) -> None:
    async with (
        connect(watched, "finance") as client,
        client.listen(resource_subscriptions=["old+watch://notes/today"]) as subscription,
    ):
        assert subscription.honored.resource_subscriptions == ["old+watch://notes/today"]

        await client.call_tool("old__touch", {"uri": "watch://notes/today"})
        assert await next_event(subscription) == ResourceUpdated(uri="old+watch://notes/today")
