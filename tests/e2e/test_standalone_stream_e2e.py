"""The 2025 era's standalone stream (`GET /mcp`) through `tollway dev`, with the official SDK
client in `mode="legacy"` (which opens it after the handshake by itself): a drifted definition
withheld, then approved by an operator (`tollway upstream approve`), each reaches the client as
`notifications/tools/list_changed`; and a dropped stream resumed with `Last-Event-ID` gets the
event it missed.

The upstream is tests/fixtures/watch_upstream.py (its `redescribe` tool changes the description of
its `note` tool, which the gateway's pin then withholds until it is approved).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.conftest import GatewayProcess, UpstreamProcess, free_port, gateway_config, running
from tests.e2e.test_listen_e2e import approve

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.anyio,
    # resources/subscribe is the 2025 era's (this module's); the SDK warns that 2026-07-28 dropped it.
    pytest.mark.filterwarnings("ignore:resources/subscribe is removed"),
]

LEGACY = "2025-11-25"
TIMEOUT = 15  # seconds any one notification may take to arrive
CHECK_SECONDS = 0.5
CACHE_SECONDS = 1


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("standalone-gateway")
    upstream = UpstreamProcess("tests.fixtures.watch_upstream", workdir / "upstream.log")
    port = free_port()
    config = gateway_config(
        port,
        upstreams=[{"name": "w", "url": upstream.url, "prefix": "w", "timeout_seconds": 3}],
        http={"listen_max_seconds": 20, "listen_check_seconds": CHECK_SECONDS},
        definitions={"cache_seconds": CACHE_SECONDS},
    )
    process = GatewayProcess(config, workdir, port)
    with running(process, [upstream]):
        yield process


@contextlib.asynccontextmanager
async def connect(gateway: GatewayProcess, seen: list[str], updates: list[str] | None = None) -> AsyncIterator[Client]:
    async def on_message(message: Any) -> None:
        message = getattr(message, "root", message)
        method = getattr(message, "method", None)
        if isinstance(method, str):
            seen.append(method)
        if method == "notifications/resources/updated" and updates is not None:
            updates.append(str(message.params.uri))

    headers = {"authorization": f"Bearer {gateway.token('legacy-user', 'finance')}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(15.0, read=60.0)) as http,
        Client(
            streamable_http_client(gateway.url, http_client=http),
            mode="legacy",
            read_timeout_seconds=15,
            message_handler=on_message,
        ) as client,
    ):
        yield client


async def wait_for(seen: list[str], method: str, count: int) -> None:
    with anyio.fail_after(TIMEOUT):
        while seen.count(method) < count:
            await anyio.sleep(0.1)


async def test_a_withheld_then_approved_definition_reaches_a_2025_client_on_its_stream(gateway: GatewayProcess) -> None:
    seen: list[str] = []
    async with connect(gateway, seen) as client:
        assert "w__note" in {tool.name for tool in (await client.list_tools()).tools}
        await anyio.sleep(1)  # the client's GET stream is open and has judged the caller's view

        await client.call_tool("w__redescribe", {"description": "Takes a note, and more"})
        await wait_for(seen, "notifications/tools/list_changed", 1)  # the gateway withheld the tool
        assert "w__note" not in {tool.name for tool in (await client.list_tools()).tools}

        approve(gateway, "w", "note")
        await wait_for(seen, "notifications/tools/list_changed", 2)  # the approval shows
        assert "w__note" in {tool.name for tool in (await client.list_tools()).tools}


async def test_an_update_of_a_resource_a_2025_client_subscribed_to_reaches_it_under_the_public_uri(
    gateway: GatewayProcess,
) -> None:
    seen: list[str] = []
    updates: list[str] = []
    async with connect(gateway, seen, updates) as client:
        await client.subscribe_resource("w+watch://notes/today")  # forwarded on the caller's upstream session
        await anyio.sleep(3 * CHECK_SECONDS)  # the stream now follows that upstream session

        await client.call_tool("w__touch", {"uri": "watch://notes/today"})
        await wait_for(seen, "notifications/resources/updated", 1)

    assert updates == ["w+watch://notes/today"]  # the public URI, never the upstream's own


def test_a_dropped_stream_resumed_with_last_event_id_gets_what_it_missed(gateway: GatewayProcess) -> None:
    headers = {
        "authorization": f"Bearer {gateway.token('raw-user', 'finance')}",
        "accept": "application/json, text/event-stream",
    }
    init = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}
    with httpx.Client(timeout=30) as http:
        opened = http.post(
            gateway.url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}, headers=headers
        )
        session = {**headers, "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": LEGACY}
        http.post(gateway.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
        stream = {**session, "accept": "text/event-stream"}
        with http.stream("GET", gateway.url, headers=stream) as first:
            assert first.status_code == 200
            lines = first.iter_lines()
            assert next(lines) == "retry: 2000"
            # A change happens while the stream is open: the first event's id is noted, then the
            # connection drops (the client goes away) before anything else is read.
            call = {"name": "w__add_tool", "arguments": {"name": f"extra_{free_port()}"}}
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call}
            assert http.post(gateway.url, json=body, headers=session).status_code == 200
            event_id = _first_event_id(lines)

        # Reconnect from before the event: it is replayed first.
        with http.stream("GET", gateway.url, headers={**stream, "last-event-id": "0000000000000000-00000000"}) as again:
            lines = again.iter_lines()
            assert next(lines) == "retry: 2000"
            replayed_id, replayed = _next_event(lines)
    assert replayed_id == event_id
    assert replayed["method"] == "notifications/tools/list_changed"


def _next_event(lines: Iterator[str]) -> tuple[str, dict[str, Any]]:
    event_id = None
    for line in lines:
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: ") and event_id:
            return event_id, json.loads(line[6:])
    raise AssertionError("the stream ended without an event")


def _first_event_id(lines: Iterator[str]) -> str:
    event_id, message = _next_event(lines)
    assert message["method"] == "notifications/tools/list_changed"
    return event_id
