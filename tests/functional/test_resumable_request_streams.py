"""A 2025-11-25 session's request streams (SEP-1699), in-process against a real upstream.

The upstream is the conformance fixture over real HTTP; its `test_reconnection` closes its event
stream mid-call. The gateway closes its caller's stream there too (where its process outlives a
response: the local server) and keeps the rest of the call in the event store, which the
caller's `GET` with `Last-Event-ID` replays. A store that cannot keep the pause keeps the
stream live instead: the caller still gets the whole answer on its request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from tollway.config import parse_config
from tollway.http import create_app
from tollway.store import Stores
from tollway.store.events import MemoryEventStore

from tests.fixtures import conformance_upstream
from tests.fixtures.memory_upstream import sse_messages
from tests.fixtures.recording_upstream import Caller, serve_in_thread

RESUMABLE = "2025-11-25"
BOTH = "application/json, text/event-stream"
CALL = {"name": "conf__test_reconnection", "arguments": {}}


class UnwritableEvents(MemoryEventStore):
    """An event store whose writes fail, as DynamoDB's would when it is unavailable."""

    def append(self, stream: str, message: dict[str, Any]) -> str:
        raise RuntimeError("the table is unavailable")


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    with serve_in_thread(conformance_upstream.create_app(), lifespan="on") as base:
        yield f"{base}/mcp"


def gateway(upstream_url: str, events: MemoryEventStore) -> TestClient:
    config = parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": [{"name": "conf", "url": upstream_url, "prefix": "conf"}],
            "masking": {"enabled": False},
        }
    )
    stores = Stores.memory()
    stores.events = events
    return TestClient(create_app(config, stores=stores, streaming=True), raise_server_exceptions=False)


def first_event_id(body: str) -> str:
    return next(line[3:].strip() for line in body.splitlines() if line.startswith("id:"))


def test_the_rest_of_a_paused_call_is_kept_for_the_callers_get_and_only_for_its_session(upstream_url: str) -> None:
    events = MemoryEventStore()
    with gateway(upstream_url, events) as client:
        caller = Caller(client, None)
        session = caller.open_session(RESUMABLE)
        posted = caller.legacy("tools/call", CALL, session=session, request_id=5, version=RESUMABLE)
        stream_id = first_event_id(posted.text)
        headers = caller.headers(mcp_session_id=session, mcp_protocol_version=RESUMABLE, last_event_id=stream_id)
        resumed = client.get("/mcp", headers={**headers, "accept": "text/event-stream"})
        other = caller.open_session(RESUMABLE)
        foreign = client.get("/mcp", headers={**headers, "mcp-session-id": other, "accept": "text/event-stream"})

    assert all("id" not in message for message in sse_messages(posted.text))  # paused before its response
    [kept] = [stream for stream in events.events if stream.startswith(f"{session}/")]
    assert kept == f"{session}/{stream_id.split('/')[0]}"
    answer = sse_messages(resumed.text)[-1]
    assert (answer["id"], answer["result"]["content"][0]["text"]) == (5, "Reconnection test completed")
    assert sse_messages(foreign.text) == []  # another session's call: nothing to resume


def test_a_pause_the_store_cannot_keep_leaves_the_stream_live_to_its_response(upstream_url: str) -> None:
    with gateway(upstream_url, UnwritableEvents()) as client:
        caller = Caller(client, None)
        session = caller.open_session(RESUMABLE)
        posted = caller.legacy("tools/call", CALL, session=session, request_id=6, version=RESUMABLE)

    assert posted.status_code == 200
    messages = sse_messages(posted.text)
    logs = [m["params"]["data"] for m in messages if m.get("method") == "notifications/message"]
    assert logs == ["Before disconnect", "After reconnect"]
    assert messages[-1]["id"] == 6
    assert messages[-1]["result"]["content"] == [{"type": "text", "text": "Reconnection test completed"}]
