"""A request stream the endpoint paused (SEP-1699) whose call then fails: the failure is kept as the
stream's last event, so the client's GET with `Last-Event-ID` gets a JSON-RPC error answer for its
request instead of a stream that never ends. The endpoint's own pieces, driven directly."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import anyio
from tollway import spec as c
from tollway.context import ANONYMOUS, RequestContext, Session
from tollway.errors import UpstreamTimeout
from tollway.protocol.endpoint import McpEndpoint
from tollway.routing.upstream import STREAM_PAUSED
from tollway.store.events import MemoryEventStore

from tests.conftest import build_config
from tests.fixtures.memory_upstream import sse_messages

LOG = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "started"}}


async def _paused_then_timed_out() -> AsyncGenerator[dict[str, Any]]:
    yield {"jsonrpc": "2.0", "method": STREAM_PAUSED}
    yield LOG
    raise UpstreamTimeout("slow")


def test_a_call_that_fails_after_its_stream_paused_ends_the_resumed_stream_with_its_error() -> None:
    events = MemoryEventStore()
    config = build_config({"slow": "http://127.0.0.1:9/mcp"})
    endpoint = McpEndpoint(config, None, None, None, streaming=True, events=events)  # type: ignore[arg-type]
    session = Session("s-1", "t", "u", "2025-11-25", {}, {}, expires_at=0)
    ctx = RequestContext(ANONYMOUS, False, "2025-11-25", session=session, streaming=True, resumable=True)

    async def run() -> tuple[str, str]:
        stream = _paused_then_timed_out()
        first = await anext(stream)
        response = await endpoint._resumable(ctx, first, stream, 7)
        live = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[attr-defined]
        assert response.background is not None
        await response.background()  # what Starlette runs once the response is written
        stream_id = live.decode().split("\n")[0].removeprefix("id: ")
        resumed = b"".join([chunk async for chunk in endpoint._resumed_call("s-1", *stream_id.split("/"))])
        return live.decode(), resumed.decode()

    live, resumed = anyio.run(run)

    assert sse_messages(live) == []  # the priming event only: it paused before anything else
    log, answer = sse_messages(resumed)
    assert log == LOG
    assert answer["id"] == 7
    assert answer["error"]["code"] == c.REQUEST_TIMEOUT
    assert "slow" in json.dumps(answer["error"])  # the upstream named, as any timeout answer does
