"""Upstreams that fail mid-way: a caller always gets one stable JSON-RPC error, never `{}` or a crash."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from tollway import spec as c
from tollway.context import Deadline, UpstreamSession
from tollway.errors import UpstreamError
from tollway.routing import upstream as upstream_module
from tollway.routing.upstream import NotSpoken, UpstreamClient
from tollway.routing.wire import HttpxHttp

from tests.unit.test_router import CATALOG, HEADERS, FakeUpstream, Gateway, _upstream
from tests.unit.wire import assert_http_error

NO_RESPONSE = "Upstream 'alpha' returned an invalid response"
PROGRESS = {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}}
CALL = {"name": "alpha__one", "arguments": {}}


def _call(gateway: Gateway, accept: str = HEADERS["accept"]) -> Any:
    meta = {c.META_PROTOCOL_VERSION: "2026-07-28", c.META_CLIENT_CAPABILITIES: {}}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {**CALL, "_meta": meta}}
    headers = {**HEADERS, "accept": accept, "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call"}
    return gateway.client.post("/mcp", json=body, headers={**headers, "mcp-name": CALL["name"]})


def _events(response: Any) -> list[dict[str, Any]]:
    assert response.headers["content-type"].startswith(c.CONTENT_TYPE_SSE), response.text
    return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]


@pytest.mark.parametrize("modern", [True, False], ids=["2026-upstream", "2025-upstream"])
def test_an_upstream_that_ends_without_a_response_is_an_upstream_error(modern: bool) -> None:
    gateway = Gateway(FakeUpstream(_upstream("alpha"), tools=CATALOG, modern=modern, call_stream=[]))

    response = _call(gateway)

    error = assert_http_error(response, 502, c.INTERNAL_ERROR, message=NO_RESPONSE, request_id=1)
    assert error["data"] == {"upstream": "alpha"}


@pytest.mark.parametrize("modern", [True, False], ids=["2026-upstream", "2025-upstream"])
def test_an_upstream_that_sends_notifications_then_ends_is_an_upstream_error_for_a_json_client(modern: bool) -> None:
    gateway = Gateway(FakeUpstream(_upstream("alpha"), tools=CATALOG, modern=modern, call_stream=[PROGRESS] * 2))

    response = _call(gateway, accept=c.CONTENT_TYPE_JSON)

    error = assert_http_error(response, 502, c.INTERNAL_ERROR, message=NO_RESPONSE, request_id=1)
    assert error["data"] == {"upstream": "alpha"}


def test_an_upstream_that_sends_notifications_then_ends_closes_the_stream_with_an_upstream_error() -> None:
    gateway = Gateway(FakeUpstream(_upstream("alpha"), tools=CATALOG, call_stream=[PROGRESS]))

    events = _events(_call(gateway))

    assert events[0]["method"] == "notifications/progress"
    assert events[-1] == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": c.INTERNAL_ERROR, "message": NO_RESPONSE, "data": {"upstream": "alpha"}},
    }


def test_a_catalog_error_is_an_upstream_error_not_an_unknown_tool_and_is_not_cached() -> None:
    alpha = FakeUpstream(_upstream("alpha"), tools=CATALOG, list_errors=1)
    gateway = Gateway(alpha)

    during = _call(gateway)
    after = _call(gateway)

    error = assert_http_error(
        during, 502, c.INTERNAL_ERROR, message="Upstream 'alpha' refused tools/list", request_id=1
    )
    assert error["data"] == {"upstream": "alpha"}
    assert after.status_code == 200
    assert after.json()["result"]["content"][0]["text"] == "one ran on alpha"
    assert [m for m, _, _ in alpha.received] == ["tools/list", "tools/list", "tools/call"]


# --- opening a 2025-era upstream session, over (mock) HTTP -----------------------------------------
def _over_http(monkeypatch: pytest.MonkeyPatch, handler: Callable[[httpx.Request], httpx.Response]) -> UpstreamClient:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    monkeypatch.setattr(upstream_module, "http_client", lambda: HttpxHttp(client))
    return UpstreamClient(_upstream("alpha"))


def _initialize(upstream: UpstreamClient) -> tuple[UpstreamSession, dict[str, Any]]:
    async def run() -> tuple[UpstreamSession, dict[str, Any]]:
        return await upstream.initialize({}, {"name": "t", "version": "1"}, Deadline(time.monotonic() + 5))

    return asyncio.run(run())


@pytest.mark.parametrize("sse", [False, True], ids=["json", "sse"])
def test_initialize_keeps_the_session_id_the_upstream_answers_with(monkeypatch: pytest.MonkeyPatch, sse: bool) -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        message = json.loads(request.content)
        seen.append((message["method"], request.headers.get(c.SESSION_ID_HEADER)))
        if message["method"] != "initialize":
            return httpx.Response(202)
        reply = {"jsonrpc": "2.0", "id": message["id"], "result": {"protocolVersion": "2025-06-18"}}
        headers = {c.SESSION_ID_HEADER: "s-9"}
        if sse:
            body = f"event: message\ndata: {json.dumps(PROGRESS)}\n\nevent: message\ndata: {json.dumps(reply)}\n\n"
            return httpx.Response(200, text=body, headers={**headers, "content-type": c.CONTENT_TYPE_SSE})
        return httpx.Response(200, json=reply, headers=headers)

    opened, result = _initialize(_over_http(monkeypatch, handler))

    assert opened == UpstreamSession(session_id="s-9", protocol_version="2025-06-18")
    assert result == {"protocolVersion": "2025-06-18"}
    assert seen == [("initialize", None), ("notifications/initialized", "s-9")]


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (httpx.ReadTimeout("slow"), "Upstream 'alpha' timed out"),
        (httpx.ConnectError("refused"), "Upstream 'alpha' is unavailable"),
    ],
    ids=["timeout", "unreachable"],
)
def test_an_initialize_nobody_answers_is_the_same_error_as_any_other_request(
    monkeypatch: pytest.MonkeyPatch, failure: Exception, message: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    with pytest.raises(UpstreamError) as raised:
        _initialize(_over_http(monkeypatch, handler))

    assert raised.value.message == message


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"jsonrpc": "2.0", "method": "notifications/progress"}),
        httpx.Response(200, text="<html>", headers={"content-type": "text/html"}),
        httpx.Response(200, json={"jsonrpc": "2.0", "id": "other", "result": {"protocolVersion": "2025-06-18"}}),
    ],
    ids=["no-response", "not-json", "another-id"],
)
def test_an_initialize_answered_with_something_else_says_the_era_is_not_spoken(
    monkeypatch: pytest.MonkeyPatch, answer: httpx.Response
) -> None:
    with pytest.raises(NotSpoken):
        _initialize(_over_http(monkeypatch, lambda request: answer))
