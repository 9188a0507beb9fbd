"""Routing behind one endpoint, with in-memory upstreams: fan-out, cursors, failures, lost sessions.

Each fake upstream stands where `tollway.routing.upstream.UpstreamClient` would (handed to
`create_app(upstreams=...)`) and answers from plain data, so these tests see exactly what a
client of the gateway sees.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.config import UpstreamConfig, parse_config
from tollway.context import Principal, Session, UpstreamSession
from tollway.errors import UpstreamUnavailable
from tollway.http import create_app
from tollway.routing.upstream import NotSpoken, SessionLost, UpstreamInfo
from tollway.store.sessions import MemorySessionStore

from tests.unit.wire import assert_http_error

MODERN = "2026-07-28"
HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}


class FakeUpstream:
    """An upstream MCP server in memory. `pages` maps an incoming cursor (None first) to one page.

    `call_stream`: what tools/call streams instead of its response (it ends without one).
    `list_errors`: how many tools/list requests answer a JSON-RPC error before it recovers.
    """

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        tools: dict[str | None, tuple[list[str], str | None]] | None = None,
        modern: bool = True,
        down: bool = False,
        loses_sessions: int = 0,
        call_stream: list[dict[str, Any]] | None = None,
        list_errors: int = 0,
    ) -> None:
        self.config = config
        self.name = config.name
        self.pages = tools or {None: ([], None)}
        self.modern = modern
        self.down = down
        self.loses_sessions = loses_sessions
        self.call_stream = call_stream
        self.list_errors = list_errors
        self.received: list[tuple[str, dict[str, Any], str | None]] = []
        self.opened: list[str] = []
        self.deleted: list[str] = []

    async def discover(self, deadline: Any) -> UpstreamInfo:
        if self.down:
            raise UpstreamUnavailable(self.name, sent=False)
        if not self.modern:
            raise NotSpoken()
        return UpstreamInfo(modern=True, legacy=False, capabilities={"tools": {}})

    async def initialize(
        self, capabilities: dict[str, Any], info: dict[str, Any], deadline: Any
    ) -> tuple[UpstreamSession, dict[str, Any]]:
        if self.modern:
            raise NotSpoken()
        if info["name"] == "tollway-probe":  # the era probe: a session the gateway ends at once
            return UpstreamSession(None, "2025-11-25"), {"capabilities": {"tools": {}}}
        self.opened.append(f"{self.name}-session-{len(self.opened) + 1}")
        return UpstreamSession(session_id=self.opened[-1], protocol_version="2025-11-25"), {}

    async def delete_session(self, session: UpstreamSession) -> None:
        if session.session_id:
            self.deleted.append(session.session_id)

    async def decline(self, server_request: dict[str, Any], **kwargs: Any) -> None:
        pass

    async def exchange(
        self, message: dict[str, Any], *, session: str | None = None, **kwargs: Any
    ) -> AsyncIterator[dict[str, Any]]:
        if self.down:
            raise UpstreamUnavailable(self.name, sent=False)
        method, params = message["method"], message.get("params") or {}
        self.received.append((method, params, session))
        if session is not None and self.loses_sessions > 0:
            self.loses_sessions -= 1
            raise SessionLost(self.name)
        if method == "tools/call" and self.call_stream is not None:
            for item in self.call_stream:
                yield item
            return
        if method == "tools/list" and self.list_errors > 0:
            self.list_errors -= 1
            yield {"jsonrpc": "2.0", "id": message["id"], "error": {"code": c.INTERNAL_ERROR, "message": "list failed"}}
            return
        yield {"jsonrpc": "2.0", "id": message["id"], "result": self._answer(method, params)}

    def _answer(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == "tools/list":
            names, next_cursor = self.pages[params.get("cursor")]
            result: dict[str, Any] = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in names]}
            if next_cursor:
                result["nextCursor"] = next_cursor
            return result
        if method == "tools/call":
            return {
                "content": [
                    {"type": "text", "text": f"{params['name']} ran on {self.name}"},
                    {"type": "resource_link", "uri": "mem://reports/1", "name": "report"},
                ],
                "isError": False,
            }
        raise AssertionError(f"unexpected {method}")


CATALOG: dict[str | None, tuple[list[str], str | None]] = {None: (["one", "two"], None)}
"""What the fake upstream lists: the gateway answers names outside it as unknown without a call."""


def _upstream(name: str) -> UpstreamConfig:
    return UpstreamConfig(name=name, url=f"http://127.0.0.1:9/{name}")


class Gateway:
    def __init__(self, *upstreams: FakeUpstream) -> None:
        config = parse_config(
            {
                "resource": "https://gateway.example.com/mcp",
                "auth": {"allow_anonymous": True},
                "upstreams": [{"name": u.name, "url": u.config.url} for u in upstreams],
            }
        )
        self.store = MemorySessionStore()
        app = create_app(config, store=self.store, streaming=False, upstreams={u.name: u for u in upstreams})
        self.client = TestClient(app, raise_server_exceptions=False)

    def modern(self, method: str, params: dict[str, Any] | None = None, name: str | None = None) -> Any:
        meta = {c.META_PROTOCOL_VERSION: MODERN, c.META_CLIENT_CAPABILITIES: {}}
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**(params or {}), "_meta": meta}}
        headers = {**HEADERS, "mcp-protocol-version": MODERN, "mcp-method": method}
        if name:
            headers["mcp-name"] = name
        return self.client.post("/mcp", json=body, headers=headers)

    def in_session(self, session_id: str, method: str, params: dict[str, Any] | None = None) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        return self.client.post("/mcp", json=body, headers={**HEADERS, "mcp-session-id": session_id})

    def open_session(self) -> str:
        session = Session("s-1", "default", "anonymous", "2025-11-25", {}, {}, int(time.time()) + 600)
        self.store.create(session)
        return session.id


def _tool_names(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [t["name"] for t in response.json()["result"]["tools"]]


def _cursor(state: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(state).encode()).decode()


@pytest.fixture
def paging() -> Iterator[tuple[Gateway, FakeUpstream, FakeUpstream]]:
    alpha = FakeUpstream(_upstream("alpha"), tools={None: (["one", "two"], "a-2"), "a-2": (["three"], None)})
    beta = FakeUpstream(_upstream("beta"), tools={None: (["uno"], None)})
    gateway = Gateway(alpha, beta)
    with gateway.client:
        yield gateway, alpha, beta


def test_a_list_merges_every_upstream_under_its_prefix(paging: tuple[Gateway, FakeUpstream, FakeUpstream]) -> None:
    gateway, _, _ = paging

    response = gateway.modern("tools/list")

    assert sorted(_tool_names(response)) == ["alpha__one", "alpha__two", "beta__uno"]


def test_a_paginating_upstream_yields_a_gateway_cursor_that_fetches_only_what_is_left(
    paging: tuple[Gateway, FakeUpstream, FakeUpstream],
) -> None:
    gateway, alpha, beta = paging

    first = gateway.modern("tools/list").json()["result"]
    second = gateway.modern("tools/list", {"cursor": first["nextCursor"]})

    assert isinstance(first["nextCursor"], str)
    assert _tool_names(second) == ["alpha__three"]
    assert "nextCursor" not in second.json()["result"]
    assert ("tools/list", "a-2") in [(m, p.get("cursor")) for m, p, _ in alpha.received]
    assert len([m for m, _, _ in beta.received if m == "tools/list"]) == 1


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor({"ghost": "x"}),
        _cursor({"alpha": 2}),
        _cursor({}),
        _cursor(["alpha", "a-2"]),
        "%%%",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
    ids=["unknown-upstream", "non-string-page", "empty", "not-an-object", "not-base64", "not-utf8"],
)
def test_a_cursor_the_gateway_did_not_issue_is_invalid_params(
    paging: tuple[Gateway, FakeUpstream, FakeUpstream], cursor: str
) -> None:
    gateway, _, _ = paging

    response = gateway.modern("tools/list", {"cursor": cursor})

    assert_http_error(
        response, 400, c.INVALID_PARAMS, message="Invalid params: cursor is not one this gateway issued", request_id=1
    )


def test_an_upstream_that_is_down_is_left_out_of_lists() -> None:
    gateway = Gateway(
        FakeUpstream(_upstream("alpha"), tools={None: (["one"], None)}), FakeUpstream(_upstream("beta"), down=True)
    )

    assert _tool_names(gateway.modern("tools/list")) == ["alpha__one"]


def test_when_every_upstream_is_down_a_list_is_a_retryable_error() -> None:
    gateway = Gateway(FakeUpstream(_upstream("alpha"), down=True), FakeUpstream(_upstream("beta"), down=True))

    response = gateway.modern("tools/list")

    error = assert_http_error(response, 503, c.INTERNAL_ERROR, message="No upstream is available", request_id=1)
    assert error["data"] == {"retryable": True}


def test_a_tool_name_that_cannot_be_mounted_is_withheld_from_the_list() -> None:
    gateway = Gateway(FakeUpstream(_upstream("alpha"), tools={None: (["fine", "not fine", "x" * 125], None)}))

    assert _tool_names(gateway.modern("tools/list")) == ["alpha__fine"]


def test_a_call_reaches_the_upstream_under_its_own_name_and_links_come_back_prefixed() -> None:
    alpha = FakeUpstream(_upstream("alpha"), tools=CATALOG)
    gateway = Gateway(alpha, FakeUpstream(_upstream("beta")))

    response = gateway.modern("tools/call", {"name": "alpha__one", "arguments": {}}, name="alpha__one")

    assert response.status_code == 200
    result = response.json()["result"]
    assert result["content"][0] == {"type": "text", "text": "one ran on alpha"}
    assert result["content"][1]["uri"] == "alpha+mem://reports/1"
    assert result["resultType"] == "complete"
    assert result["_meta"][c.META_SERVER_INFO]["name"] == "tollway"
    method, params, _ = alpha.received[-1]
    assert (method, params["name"]) == ("tools/call", "one")
    assert params["_meta"][c.META_PROTOCOL_VERSION] == MODERN


def test_a_legacy_upstream_session_is_opened_once_and_kept_in_the_client_session() -> None:
    alpha = FakeUpstream(_upstream("alpha"), tools=CATALOG, modern=False)
    gateway = Gateway(alpha)
    session = gateway.open_session()

    first = gateway.in_session(session, "tools/call", {"name": "alpha__one", "arguments": {}})
    second = gateway.in_session(session, "tools/call", {"name": "alpha__two", "arguments": {}})

    assert first.json()["result"]["content"][0]["text"] == "one ran on alpha"
    assert second.json()["result"]["content"][0]["text"] == "two ran on alpha"
    assert alpha.opened == ["alpha-session-1"]
    assert gateway.store.sessions[session].upstreams["alpha"].session_id == "alpha-session-1"


def test_a_legacy_upstream_that_lost_its_session_is_reinitialized_once_and_the_call_succeeds() -> None:
    alpha = FakeUpstream(_upstream("alpha"), tools=CATALOG, modern=False, loses_sessions=1)
    gateway = Gateway(alpha)
    session = gateway.open_session()

    response = gateway.in_session(session, "tools/call", {"name": "alpha__one", "arguments": {}})

    assert response.status_code == 200
    assert response.json()["result"]["content"][0]["text"] == "one ran on alpha"
    assert alpha.opened == ["alpha-session-1", "alpha-session-2"]
    assert gateway.store.sessions[session].upstreams["alpha"].session_id == "alpha-session-2"


def test_a_legacy_upstream_that_keeps_losing_sessions_gives_a_stable_error() -> None:
    alpha = FakeUpstream(_upstream("alpha"), modern=False, loses_sessions=5)
    gateway = Gateway(alpha)
    session = gateway.open_session()

    response = gateway.in_session(session, "tools/call", {"name": "alpha__one", "arguments": {}})

    assert_http_error(
        response, 502, c.INTERNAL_ERROR, message="Upstream 'alpha' keeps losing its session", request_id=1
    )
    assert len(alpha.opened) == 2


def test_a_sessionless_caller_shares_one_legacy_upstream_session_per_principal() -> None:
    alpha = FakeUpstream(_upstream("alpha"), tools=CATALOG, modern=False)
    gateway = Gateway(alpha)

    for tool in ("one", "two"):
        response = gateway.modern("tools/call", {"name": f"alpha__{tool}", "arguments": {}}, name=f"alpha__{tool}")
        assert response.json()["result"]["content"][0]["text"] == f"{tool} ran on alpha"

    assert alpha.opened == ["alpha-session-1"]
    stored = gateway.store.get_principal_upstream(Principal("anonymous", "default"), "alpha")
    assert stored is not None and stored.session_id == "alpha-session-1"


def test_ending_a_session_closes_its_upstream_sessions_without_renewing_it_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alpha = FakeUpstream(_upstream("alpha"), tools=CATALOG, modern=False)
    gateway = Gateway(alpha)
    session = gateway.open_session()
    gateway.in_session(session, "tools/call", {"name": "alpha__one", "arguments": {}})
    gateway.store.sessions[session].expires_at = int(time.time()) + 10  # past half its lifetime: a call would renew
    renewed: list[str] = []
    monkeypatch.setattr(gateway.store, "renew", lambda s, e: renewed.append(s))

    response = gateway.client.delete("/mcp", headers={**HEADERS, "mcp-session-id": session})

    assert response.status_code == 204
    assert alpha.deleted == ["alpha-session-1"]
    assert renewed == []
    assert session not in gateway.store.sessions
