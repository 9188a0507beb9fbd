"""`subscriptions/listen` in process (the app as `tollway dev` and the streaming deployment serve it):
the stream's frames, its bounded lifetime, and what is refused. No upstream answers here: the
gateway's own list checks are what the stream honors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.config import parse_config
from tollway.http import create_app
from tollway.store import Stores

MODERN = "2026-07-28"
LISTEN_SECONDS = 0.5


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    config = parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": [{"name": "gone", "url": "http://127.0.0.1:9/mcp", "retries": 0}],
            "http": {"listen_max_seconds": LISTEN_SECONDS, "listen_check_seconds": 0.1},
        }
    )
    with TestClient(create_app(config, stores=Stores.memory(), streaming=True), raise_server_exceptions=False) as tc:
        yield tc


def listen(client: TestClient, notifications: Any, accept: str = "application/json, text/event-stream") -> Any:
    meta = {c.META_PROTOCOL_VERSION: MODERN, c.META_CLIENT_CAPABILITIES: {}}
    body = {
        "jsonrpc": "2.0",
        "id": "sub-1",
        "method": "subscriptions/listen",
        "params": {"_meta": meta, "notifications": notifications},
    }
    headers = {"accept": accept, c.PROTOCOL_VERSION_HEADER: MODERN, c.METHOD_HEADER: "subscriptions/listen"}
    return client.post("/mcp", json=body, headers=headers)


def frames(answer: Any) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in answer.text.splitlines() if line.startswith("data:")]


def test_the_stream_is_acknowledged_tagged_and_closed_gracefully(client: TestClient) -> None:
    answer = listen(client, {"toolsListChanged": True, "promptsListChanged": True, "resourceSubscriptions": ["x://y"]})

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    acknowledgement, closing = frames(answer)  # nothing changed in between: nothing else is sent
    assert acknowledgement == {
        "jsonrpc": "2.0",
        "method": c.LISTEN_ACKNOWLEDGED,
        # Tools: the gateway watches the caller's view itself. No upstream answers: no prompts, no URIs.
        "params": {"notifications": {"toolsListChanged": True}, "_meta": {c.META_SUBSCRIPTION_ID: "sub-1"}},
    }
    assert closing["id"] == "sub-1"
    assert closing["result"]["resultType"] == "complete"
    assert closing["result"]["_meta"][c.META_SUBSCRIPTION_ID] == "sub-1"
    assert closing["result"]["_meta"][c.META_SERVER_INFO]["name"] == "tollway"


@pytest.mark.parametrize(
    "notifications",
    [None, {"toolsListChanged": "yes"}, {"resourceSubscriptions": "x://y"}, {"resourceSubscriptions": [""]}],
)
def test_a_malformed_filter_is_invalid_params(client: TestClient, notifications: Any) -> None:
    answer = listen(client, notifications)

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == c.INVALID_PARAMS
    assert answer.json()["id"] == "sub-1"


def test_a_client_that_cannot_read_a_stream_is_told_so(client: TestClient) -> None:
    answer = listen(client, {"toolsListChanged": True}, accept="application/json")

    assert answer.status_code == 406
    assert "text/event-stream" in answer.json()["error"]["message"]
