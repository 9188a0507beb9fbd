"""An upstream that lists invalid tool definitions, met with the official SDK client.

`tollway dev` (anonymous) runs as a real process in front of two upstreams served from this
test process on 127.0.0.1: `faulty` (tests/fixtures/faulty_upstream.py), which lists every
invalid definition it knows besides its valid tools (an `inputSchema` that is a string, missing,
an array schema, and one nested 300 schemas deep), and the healthy `rec`. The SDK client
refuses a whole list when one definition in it is invalid, so the gateway must leave out exactly
the invalid ones: then `list_tools()` succeeds in both protocol eras and shows every valid tool.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import anyio
import pytest
from mcp.client import Client

from tests.e2e.conftest import GatewayProcess, free_port, gateway_config, running
from tests.fixtures.faulty_upstream import BEHAVIOURS, INVALID_TOOLS, FaultyUpstream
from tests.fixtures.recording_upstream import RecordingUpstream

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

MODES = ["legacy", "2026-07-28"]
TIMEOUT = 30  # seconds per test body
LIFETIME = 600.0
EXPECTED = {f"faulty__{name}" for name in BEHAVIOURS} | {f"rec__{name}" for name in RecordingUpstream.tools}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with contextlib.ExitStack() as stack:
        faulty = stack.enter_context(FaultyUpstream(invalid_tools=INVALID_TOOLS).running(lifetime=LIFETIME))
        rec = stack.enter_context(RecordingUpstream().running(lifetime=LIFETIME))
        port = free_port()
        config = gateway_config(
            port,
            auth={"allow_anonymous": True},
            upstreams=[
                {"name": "faulty", "url": faulty.url, "timeout_seconds": 5.0},
                {"name": "rec", "url": rec.url, "timeout_seconds": 5.0},
            ],
        )
        process = GatewayProcess(config, tmp_path_factory.mktemp("faulty-gateway"), port)
        stack.enter_context(running(process, []))
        yield process


@pytest.mark.parametrize("mode", MODES)
async def test_the_sdk_client_lists_every_valid_tool_when_an_upstream_lists_invalid_ones(
    gateway: GatewayProcess, mode: str
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with Client(gateway.url, mode=mode, read_timeout_seconds=15) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}

    assert names == EXPECTED
