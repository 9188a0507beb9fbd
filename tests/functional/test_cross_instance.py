"""A 2025-era session's messages may land on any instance: what a client sends about a call in
progress on one instance works when another instance receives it.

Two gateway instances (two apps, each with its own routers and caches, each served by uvicorn on
127.0.0.1) share one session store, as Lambda instances share DynamoDB. The call runs on instance
A (its SSE answer open); the client's answer to the upstream's elicitation, or its
`notifications/cancelled`, is POSTed to instance B. Upstreams: tests/fixtures/conformance_upstream.py
(its test_elicitation tool) and tests/fixtures/cancel_upstream.py (its wait tool records what
cancelled it), in-process. Last, a client that leaves mid-call has the call's outcome written to the
usage the instances share: cancelled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from tollway.config import parse_config
from tollway.http import create_app
from tollway.store import Stores
from tollway.store.usage import UsageRow

from tests.fixtures import cancel_upstream, conformance_upstream
from tests.fixtures.recording_upstream import LEGACY, serve_in_thread

ACCEPT_BOTH = "application/json, text/event-stream"
REQUEST_CANCELLED = -32800


@pytest.fixture(scope="module")
def instances() -> Iterator[tuple[str, str, Stores]]:
    """The /mcp URLs of instances A and B, and the stores they share."""
    with (
        serve_in_thread(conformance_upstream.create_app(), lifespan="on") as conf,
        serve_in_thread(cancel_upstream.create_app(), lifespan="on") as slow,
    ):
        config = parse_config(
            {
                "resource": "https://gateway.example.com/mcp",
                "auth": {"allow_anonymous": True},
                "masking": {"enabled": False},
                "upstreams": [
                    {"name": "conf", "url": f"{conf}/mcp", "prefix": "conf", "protocol": "legacy"},
                    {"name": "slow", "url": f"{slow}/mcp", "prefix": "slow", "protocol": "legacy"},
                ],
            }
        )
        shared = Stores.memory()
        with (
            serve_in_thread(create_app(config, stores=shared, streaming=True)) as a,
            serve_in_thread(create_app(config, stores=shared, streaming=True)) as b,
        ):
            yield f"{a}/mcp", f"{b}/mcp", shared


def open_session(http: httpx.Client, url: str) -> dict[str, str]:
    """Initialize a 2025-era session (declaring elicitation) on `url`; the headers that use it."""
    params = {
        "protocolVersion": LEGACY,
        "capabilities": {"elicitation": {}},
        "clientInfo": {"name": "t", "version": "1"},
    }
    answer = http.post(url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}, headers=_base())
    assert answer.status_code == 200, answer.text
    headers = {**_base(), "mcp-session-id": answer.headers["mcp-session-id"], "mcp-protocol-version": LEGACY}
    initialized = http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    assert initialized.status_code == 202
    return headers


def events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.startswith("data:") and line[5:].strip():
            yield json.loads(line[5:])


def test_an_elicitation_answer_posted_to_another_instance_reaches_the_call(
    instances: tuple[str, str, Stores],
) -> None:
    a, b, _ = instances
    with httpx.Client(timeout=20) as http:
        headers = open_session(http, a)
        call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call"}
        call["params"] = {"name": "conf__test_elicitation", "arguments": {"message": "Who are you?"}}
        with http.stream("POST", a, json=call, headers=headers) as response:
            stream = events(response)
            ask = next(m for m in stream if m.get("method") == "elicitation/create")
            reply = {"action": "accept", "content": {"username": "ada", "email": "ada@example.com"}}
            answered = http.post(b, json={"jsonrpc": "2.0", "id": ask["id"], "result": reply}, headers=headers)
            final = next(m for m in stream if m.get("id") == 5)

    assert ask["params"]["message"] == "Who are you?"
    assert answered.status_code == 202
    assert final["result"]["content"][0]["text"] == (
        'User response: action=accept, content={"username": "ada", "email": "ada@example.com"}'
    )


def test_a_cancellation_posted_to_another_instance_interrupts_the_upstream_call(
    instances: tuple[str, str, Stores],
) -> None:
    a, b, stores = instances
    with httpx.Client(timeout=20) as http:
        headers = open_session(http, a)
        params = {"name": "slow__wait", "arguments": {"tag": "elsewhere", "seconds": 15}, "_meta": {"progressToken": 1}}
        call = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": params}
        with http.stream("POST", a, json=call, headers=headers) as response:
            stream = events(response)
            assert next(stream)["method"] == "notifications/progress"  # the upstream's handler is running
            cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9}}
            cancelled = http.post(b, json=cancel, headers=headers)
            final = next(m for m in stream if m.get("id") == 9)

    record = cancel_upstream.RECORD
    assert cancelled.status_code == 202
    assert record["calls"]["elsewhere"] == "interrupted"
    assert record["call_ids"]["elsewhere"] in record["cancelled"]  # (and the ids a retry would have had)
    assert final["error"]["code"] == REQUEST_CANCELLED  # the upstream's answer to a cancelled request
    usage = usage_of(stores, "slow__wait", lambda row: row.errors > 0)
    assert usage is not None
    assert (usage.calls, usage.errors, usage.cancelled) == (1, 1, 1)  # a cancelled call: an error, and says so


def usage_of(stores: Stores, tool: str, written: Callable[[UsageRow], bool]) -> UsageRow | None:
    """`tool`'s usage row this month (the anonymous tenant's) once `written(row)` (bounded wait:
    the admitting write comes first, the outcome's write follows the answer)."""
    deadline = time.monotonic() + 5
    while True:
        rows = [r for r in stores.usage.month(datetime.now(UTC).strftime("%Y-%m")) if r.tool == tool]
        if (rows and written(rows[0])) or time.monotonic() > deadline:
            return rows[0] if rows else None
        time.sleep(0.05)


def test_a_client_that_leaves_mid_call_has_the_call_counted_as_cancelled(instances: tuple[str, str, Stores]) -> None:
    a, _, stores = instances
    before = usage_of(stores, "slow__wait", lambda row: True)
    cancelled_before = before.cancelled if before else 0
    with httpx.Client(timeout=20) as http:
        headers = open_session(http, a)
        params = {"name": "slow__wait", "arguments": {"tag": "left", "seconds": 15}, "_meta": {"progressToken": 1}}
        call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": params}
        with http.stream("POST", a, json=call, headers=headers) as response:
            assert next(events(response))["method"] == "notifications/progress"
        # Leaving the block closes the connection mid-answer.

    after = usage_of(stores, "slow__wait", lambda row: row.cancelled > cancelled_before)
    assert after is not None and after.cancelled == cancelled_before + 1
    deadline = time.monotonic() + 5
    while cancel_upstream.RECORD["calls"].get("left") != "interrupted" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cancel_upstream.RECORD["calls"]["left"] == "interrupted"


def _base() -> dict[str, str]:
    return {"content-type": "application/json", "accept": ACCEPT_BOTH}
