"""`subscriptions/listen` in process (the app as `tollway dev` and the streaming deployment serve it):
the stream's frames, its bounded lifetime, and what is refused. No upstream answers here: the
gateway's own list checks are what the stream honors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.config import GatewayConfig, parse_config
from tollway.http import create_app
from tollway.protocol import endpoint
from tollway.store import Stores

MODERN = "2026-07-28"
LISTEN_SECONDS = 0.5
BOUND_SECONDS = 60  # far beyond the invocation's 1.5 s, far below the stream's 290 s


def config(listen_seconds: float) -> GatewayConfig:
    return parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": [{"name": "gone", "url": "http://127.0.0.1:9/mcp", "retries": 0}],
            "http": {"listen_max_seconds": listen_seconds, "listen_check_seconds": 0.1},
        }
    )


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    app = create_app(config(LISTEN_SECONDS), stores=Stores.memory(), streaming=True)
    with TestClient(app, raise_server_exceptions=False) as tc:
        yield tc


def listen(
    client: TestClient,
    notifications: Any,
    accept: str = "application/json, text/event-stream",
    headers: dict[str, str] | None = None,
) -> Any:
    meta = {c.META_PROTOCOL_VERSION: MODERN, c.META_CLIENT_CAPABILITIES: {}}
    body = {
        "jsonrpc": "2.0",
        "id": "sub-1",
        "method": "subscriptions/listen",
        "params": {"_meta": meta, "notifications": notifications},
    }
    sent = {"accept": accept, c.PROTOCOL_VERSION_HEADER: MODERN, c.METHOD_HEADER: "subscriptions/listen"}
    return client.post("/mcp", json=body, headers={**sent, **(headers or {})})


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


def test_on_lambda_the_stream_closes_before_the_invocation_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streamed on Lambda (behind the Lambda Web Adapter), the invocation's deadline bounds the
    stream, whatever `listen_max_seconds` says: here the invocation has 1.5 s left, the stream
    may last 290 s, and it is closed gracefully (its result) within the invocation."""
    monkeypatch.setattr(endpoint, "_BEHIND_ADAPTER", True)  # as under the adapter (AWS_LWA_INVOKE_MODE)
    deadline_ms = int((time.time() + 1.5) * 1000)
    invocation = {"x-amzn-lambda-context": json.dumps({"request_id": "invocation-1", "deadline": deadline_ms})}
    app = create_app(config(290), stores=Stores.memory(), streaming=True)
    answers: list[Any] = []

    def run() -> None:
        with TestClient(app, raise_server_exceptions=False) as tc:
            answers.append(listen(tc, {"toolsListChanged": True}, headers=invocation))

    caller = threading.Thread(target=run, daemon=True)  # daemon: a stream left open must not hold the run
    caller.start()
    caller.join(BOUND_SECONDS)
    assert answers, f"the stream was still open after {BOUND_SECONDS} s: the invocation's deadline did not end it"
    acknowledgement, closing = frames(answers[0])
    assert acknowledgement["method"] == c.LISTEN_ACKNOWLEDGED
    assert closing["result"]["_meta"][c.META_SUBSCRIPTION_ID] == "sub-1"
