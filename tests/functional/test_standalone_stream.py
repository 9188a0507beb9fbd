"""The 2025 era's standalone stream (`GET /mcp`) in process, as `tollway dev` and the streaming
deployment serve it: a list change of the caller's view arrives as an event with an id; a client
that reconnects with `Last-Event-ID` (to any instance: the events are in the shared store) first
gets what it missed; another principal's session, a client that does not take SSE, the 2026-07-28
era and the buffered deployment are refused."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.auth import dev
from tollway.store import Stores

from tests.fixtures.memory_upstream import LEGACY, MODERN, RESOURCE, Agent, MemoryUpstream, gateways, tool

FAST = {"http": {"listen_max_seconds": 1.5, "listen_check_seconds": 0.1}, "definitions": {"cache_seconds": 0}}


@pytest.fixture
def start() -> Iterator[Callable[..., TestClient]]:
    with gateways("memory") as launch:
        yield launch


def events(text: str) -> list[tuple[str | None, dict[str, Any]]]:
    """(id, message) of each event of an SSE body."""
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "data" in fields:
            out.append((fields.get("id"), json.loads(fields["data"])))
    return out


def capabilities(agent: Agent) -> dict[str, Any]:
    """What the gateway's `initialize` answers this agent (a session of its own)."""
    params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}
    return agent.client.post("/mcp", content=json.dumps(body), headers=agent.headers()).json()["result"]["capabilities"]


def get_stream(client: TestClient, agent: Agent, last_event_id: str | None = None, **extra: str) -> Any:
    session = {c.SESSION_ID_HEADER: agent.session} if agent.session else {}
    headers = {**agent.headers(), **session, c.PROTOCOL_VERSION_HEADER: LEGACY, "accept": "text/event-stream", **extra}
    if last_event_id:
        headers[c.LAST_EVENT_ID_HEADER] = last_event_id
    return client.get("/mcp", headers=headers)


def test_a_list_change_arrives_on_the_session_stream_with_an_id_and_is_replayed_after_a_reconnect(
    start: Callable[..., TestClient],
) -> None:
    upstream = MemoryUpstream("mem", tools=[tool("echo")])
    stores = Stores.memory()
    first = start(upstream, stores=stores, streaming=True, **FAST)
    agent = Agent(first, LEGACY)
    agent.open()
    advertised = capabilities(agent)
    adds = threading.Timer(0.5, lambda: upstream.tools.update({"added": tool("added")}))
    adds.start()

    answer = get_stream(first, agent)
    adds.join()

    assert advertised["tools"]["listChanged"] is True  # advertised where it is delivered
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert "retry: 2000" in answer.text
    [(event_id, message)] = events(answer.text)
    assert message == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": {}}
    assert event_id

    # Another instance (same stores), the stream dropped before the event: it is replayed first.
    second = start(upstream, stores=stores, streaming=True, **FAST)
    before = "0000000000000000-00000000"  # the session's stream from its start
    replayed = get_stream(second, agent, last_event_id=before)
    assert events(replayed.text)[0] == (event_id, message)
    # Resumed after that event: nothing is sent twice.
    after = get_stream(second, agent, last_event_id=event_id)
    assert [e for e in events(after.text) if e[0] == event_id] == []


def test_a_quiet_stream_sends_keep_alives_and_ends_by_itself(start: Callable[..., TestClient]) -> None:
    client = start(MemoryUpstream("mem", tools=[tool("echo")]), streaming=True, **FAST)
    agent = Agent(client, LEGACY)
    agent.open()

    started = time.monotonic()
    answer = get_stream(client, agent)

    assert answer.status_code == 200
    assert events(answer.text) == []
    assert ": keep-alive" in answer.text
    assert time.monotonic() - started < 10  # listen_max_seconds bounds it


def test_another_principals_session_is_answered_like_a_missing_one(
    start: Callable[..., TestClient], dev_key: Any
) -> None:
    client = start(
        MemoryUpstream("mem", tools=[tool("echo")]),
        streaming=True,
        dev_keys=dev.jwk_set(dev_key),
        auth={"issuer": dev.DEV_ISSUER},
        **FAST,
    )
    alice = Agent(client, LEGACY, token=dev.mint(dev_key, subject="alice", tenant="acme", audience=RESOURCE))
    alice.open()
    mallory = Agent(client, LEGACY, token=dev.mint(dev_key, subject="mallory", tenant="acme", audience=RESOURCE))
    mallory.session = alice.session

    answer = get_stream(client, mallory)
    missing = get_stream(client, Agent(client, LEGACY, token=mallory.token), **{c.SESSION_ID_HEADER: "no-such"})

    assert answer.status_code == missing.status_code == 404
    assert answer.json() == missing.json()


def test_what_is_refused(start: Callable[..., TestClient]) -> None:
    streaming = start(MemoryUpstream("mem", tools=[tool("echo")]), streaming=True, **FAST)
    agent = Agent(streaming, LEGACY)
    agent.open()
    buffered = start(MemoryUpstream("mem2", tools=[tool("echo")]), streaming=False, **FAST)
    other = Agent(buffered, LEGACY)
    other.open()

    json_only = streaming.get("/mcp", headers={**agent.headers(), "accept": "application/json"})
    modern = streaming.get("/mcp", headers={"accept": "text/event-stream", c.PROTOCOL_VERSION_HEADER: MODERN})
    no_session = streaming.get("/mcp", headers={"accept": "text/event-stream", c.PROTOCOL_VERSION_HEADER: LEGACY})
    not_streaming = get_stream(buffered, other)

    assert json_only.status_code == 406
    assert (modern.status_code, modern.headers["allow"]) == (405, "POST")
    assert no_session.status_code == 400
    assert (not_streaming.status_code, not_streaming.headers["allow"]) == (405, "POST, DELETE")
    assert capabilities(other)["tools"]["listChanged"] is False
