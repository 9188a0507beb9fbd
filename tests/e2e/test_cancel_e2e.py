"""Cancelling a call through the gateway reaches the upstream, and the audit says so.

A 2025-era client cancels by `notifications/cancelled` (the official SDK client sends it when the
call's task is cancelled) or by going away mid-call; a 2026-07-28 client cancels by closing the
call's response (the SDK client does that when the call's task is cancelled). The upstream is
tests/fixtures/cancel_upstream.py, mounted as `slow`: its `wait` tool records whether its handler
was interrupted, and the server records every `notifications/cancelled` it receives.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from mcp.client import Client

from tests.e2e.conftest import GatewayProcess, UpstreamProcess, free_port, gateway_config, running

if TYPE_CHECKING:
    from tests.conftest import AuditTrail

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

TIMEOUT = 30  # seconds per test body
LONG = 20  # seconds the upstream's tool would wait if nobody cancelled it
LEGACY_VERSION = "2025-11-25"


@pytest.fixture(scope="module")
def cancel_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, UpstreamProcess]]:
    workdir = tmp_path_factory.mktemp("cancel-gateway")
    upstream = UpstreamProcess("tests.fixtures.cancel_upstream", workdir / "upstream.log")
    port = free_port()
    config = gateway_config(
        port,
        auth={"allow_anonymous": True},
        upstreams=[{"name": "slow", "url": upstream.url, "prefix": "slow", "timeout_seconds": 60}],
    )
    process = GatewayProcess(config, workdir, port)
    with running(process, [upstream]):
        yield process, upstream


def record(upstream: UpstreamProcess) -> dict[str, Any]:
    return httpx.get(upstream.url.removesuffix("/mcp") + "/record", timeout=5).json()


async def until(check: Any, what: str, seconds: float = 10) -> Any:
    """Poll `check()` until it answers something truthy (bounded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = await anyio.to_thread.run_sync(check)
        if found:
            return found
        await anyio.sleep(0.1)
    pytest.fail(f"not seen within {seconds} s: {what}")


def started(upstream: UpstreamProcess, tag: str) -> Any:
    return lambda: record(upstream)["calls"].get(tag) == "started"


def interrupted_and_told(upstream: UpstreamProcess, tag: str) -> Any:
    """The call's handler was interrupted and a cancellation named the id the call arrived with."""

    def check() -> bool:
        seen = record(upstream)
        return seen["calls"].get(tag) == "interrupted" and seen["call_ids"].get(tag) in seen["cancelled"]

    return check


def audited_outcomes(trail: AuditTrail, count: int = 1) -> Any:
    """The outcomes of the `wait` calls audited since the test began, once there are `count`."""

    def check() -> list[str] | None:
        calls = [r for r in trail.since() if r.get("method") == "tools/call" and r.get("name") == "slow__wait"]
        return sorted(r["outcome"] for r in calls) if len(calls) >= count else None

    return check


async def cancel_once_started(upstream: UpstreamProcess, tag: str, call: Any) -> None:
    """Run `call()` and cancel its task once the upstream's handler has started."""
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(call)
        await until(started(upstream, tag), f"call {tag} started upstream")
        tasks.cancel_scope.cancel()


async def test_a_2025_clients_cancellation_interrupts_the_upstream_call_and_is_audited(
    cancel_gateway: tuple[GatewayProcess, UpstreamProcess], audit_trail: AuditTrail
) -> None:
    gateway, upstream = cancel_gateway
    with anyio.fail_after(TIMEOUT):
        async with Client(gateway.url, mode="legacy", read_timeout_seconds=LONG * 2) as session:

            async def call() -> None:
                await session.call_tool("slow__wait", {"tag": "notified", "seconds": LONG})

            await cancel_once_started(upstream, "notified", call)
            await until(interrupted_and_told(upstream, "notified"), "the upstream call interrupted by its cancellation")
            # The session goes on.
            after = await session.call_tool("slow__wait", {"tag": "after", "seconds": 0})
        outcomes = await until(audited_outcomes(audit_trail, 2), "both calls' audit records")

    assert not after.is_error
    assert outcomes == ["cancelled", "ok"]


@pytest.mark.parametrize("streamed", [True, False], ids=["after-progress", "before-any-answer"])
async def test_a_2025_client_that_goes_away_mid_call_cancels_the_upstream_call(
    cancel_gateway: tuple[GatewayProcess, UpstreamProcess], audit_trail: AuditTrail, streamed: bool
) -> None:
    """Raw HTTP, to drop the connection: with a progress token the answer has started streaming
    (the progress notification) when the client leaves; without, nothing was answered yet."""
    gateway, upstream = cancel_gateway
    tag = f"left-{'streamed' if streamed else 'waiting'}"
    with anyio.fail_after(TIMEOUT):
        async with httpx.AsyncClient(timeout=LONG * 2) as http:
            session = await _open_legacy_session(http, gateway.url)
            headers = {**_headers(), "mcp-session-id": session, "mcp-protocol-version": LEGACY_VERSION}
            params: dict[str, Any] = {"name": "slow__wait", "arguments": {"tag": tag, "seconds": LONG}}
            if streamed:
                params["_meta"] = {"progressToken": "p-1"}
            body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}
            first_event = anyio.Event()

            async def post() -> None:
                async with http.stream("POST", gateway.url, json=body, headers=headers) as response:
                    assert response.headers["content-type"].startswith("text/event-stream")
                    async for line in response.aiter_lines():
                        if line.startswith("data:"):
                            first_event.set()  # the progress notification: then wait on

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(post)
                if streamed:
                    await first_event.wait()
                else:
                    await until(started(upstream, tag), f"call {tag} started upstream")
                tasks.cancel_scope.cancel()  # the client goes away: its connection is closed
        await until(interrupted_and_told(upstream, tag), "the upstream call interrupted after the client left")
        outcomes = await until(audited_outcomes(audit_trail), "the abandoned call's audit record")

    assert outcomes == ["cancelled"]


@pytest.mark.parametrize("streamed", [True, False], ids=["after-progress", "before-any-answer"])
async def test_a_2026_client_that_abandons_a_call_cancels_the_upstream_call(
    cancel_gateway: tuple[GatewayProcess, UpstreamProcess], audit_trail: AuditTrail, streamed: bool
) -> None:
    """At 2026-07-28 closing the call's response is the cancellation: the SDK client closes it when
    the call's task is cancelled, and the gateway closes its own exchange with the upstream. With a
    progress callback the answer is streaming (the progress notification) when the client leaves."""
    gateway, upstream = cancel_gateway
    tag = f"modern-{'streamed' if streamed else 'waiting'}"
    progressed = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        progressed.set()

    with anyio.fail_after(TIMEOUT):
        async with Client(gateway.url, mode="2026-07-28", read_timeout_seconds=LONG * 2) as session:

            async def call() -> None:
                callback = on_progress if streamed else None
                await session.call_tool("slow__wait", {"tag": tag, "seconds": LONG}, progress_callback=callback)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(call)
                await until(started(upstream, tag), f"call {tag} started upstream")
                if streamed:
                    await progressed.wait()
                tasks.cancel_scope.cancel()
            await until(lambda: record(upstream)["calls"].get(tag) == "interrupted", "the 2026 call interrupted")
        outcomes = await until(audited_outcomes(audit_trail), "the abandoned call's audit record")

    assert outcomes == ["cancelled"]


def _headers() -> dict[str, str]:
    return {"accept": "application/json, text/event-stream", "content-type": "application/json"}


async def _open_legacy_session(http: httpx.AsyncClient, url: str) -> str:
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": LEGACY_VERSION, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    answer = await http.post(url, json=init, headers=_headers())
    assert answer.status_code == 200, answer.text
    session = answer.headers["mcp-session-id"]
    headers = {**_headers(), "mcp-session-id": session, "mcp-protocol-version": LEGACY_VERSION}
    done = await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    assert done.status_code == 202
    return session
