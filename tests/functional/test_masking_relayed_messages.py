"""PII masking covers what an upstream and an agent say to each other through the gateway, not
only requests and results.

2025 era (a session whose client accepts an event stream, on a streaming gateway): an upstream's
server-to-client requests (`elicitation/create`, `sampling/createMessage`) and notifications
reach the client masked, and the client's answer to a relayed request (a JSON-RPC response
carrying the relayed id) reaches the upstream masked. 2026-07-28: the questions of an
`input_required` result (`inputRequests`) reach the client masked, and the `inputResponses` of
its retry reach the upstream masked; `requestState`, the upstream's own opaque state, is passed
through unchanged in both directions, whatever it looks like.

The gateway app runs in-process (Starlette TestClient, in-memory stores, masking on) in front of
a `MemoryUpstream` (tests/fixtures/memory_upstream.py), injected (`memory`) or served on
127.0.0.1 (`http`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.fixtures.memory_upstream import (
    LEGACY,
    MODERN,
    WIRES,
    Agent,
    InputRequired,
    MemoryUpstream,
    elicitation,
    gateways,
    progress,
    sampling,
    sse_messages,
    text_result,
    tool,
)

EMAIL = "jane.doe@example.com"
MASKED = "j***@example.com"
STATE = f"v1.{EMAIL}.4242 4242 4242 4242.GB82WEST12345698765432.é\u200b"
"""A requestState that holds what every detector would mask: it must come back as it went."""
QUESTION = {
    "method": "elicitation/create",
    "params": {
        "mode": "form",
        "message": f"Send the invoice to {EMAIL}?",
        "requestedSchema": {"type": "object", "properties": {"email": {"type": "string"}}},
    },
}


@pytest.fixture(params=WIRES)
def wire(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def start(wire: str) -> Iterator[Callable[..., TestClient]]:
    with gateways(wire) as start_app:
        yield start_app


# --- 2025 era: relayed server requests and the client's answers ---------------------------------------
ASKS = {
    "elicitation": elicitation(f"Is {EMAIL} the address to use?", request_id=7),
    "sampling": sampling(f"Write a greeting for {EMAIL}", request_id=7),
}
ANSWERS = {
    "elicitation": {"action": "accept", "content": {"email": EMAIL}},
    "sampling": {
        "role": "assistant",
        "content": {"type": "text", "text": f"Dear {EMAIL}, hello."},
        "model": "test-model",
        "stopReason": "endTurn",
    },
}


def asking_upstream(ask: dict[str, Any]) -> MemoryUpstream:
    """A 2025-era upstream whose `ask` tool reports progress, asks the client, then answers."""
    streamed = [progress(f"Looking up {EMAIL}"), ask, text_result("asked")]
    return MemoryUpstream("mem", modern=False, tools=[tool("ask")], results={"ask": streamed})


def relayed_call(start: Callable[..., TestClient], upstream: MemoryUpstream) -> tuple[Agent, Any]:
    """A 2025 session able to answer questions calls `ask`: the agent, and the event-stream answer."""
    client = start(upstream, streaming=True, masking={"enabled": True})
    agent = Agent(client, LEGACY, capabilities={"elicitation": {}, "sampling": {}})
    response = agent.send("tools/call", {"name": "mem__ask", "arguments": {}}, request_id=1)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream"), response.text
    return agent, response


@pytest.mark.parametrize("kind", ASKS)
def test_a_server_request_relayed_to_a_2025_client_reaches_it_with_the_email_masked(
    start: Callable[..., TestClient], kind: str
) -> None:
    _, response = relayed_call(start, asking_upstream(ASKS[kind]))

    assert EMAIL not in response.text
    notice, asked, final = sse_messages(response.text)
    assert notice["method"] == "notifications/progress"
    assert notice["params"]["message"] == f"Looking up {MASKED}"
    assert asked["method"] == ASKS[kind]["method"]
    assert asked["id"] == "tw:mem:7"
    if kind == "elicitation":
        assert asked["params"]["message"] == f"Is {MASKED} the address to use?"
    else:
        assert asked["params"]["messages"][0]["content"]["text"] == f"Write a greeting for {MASKED}"
    assert final["id"] == 1
    assert final["result"]["content"] == [{"type": "text", "text": "asked"}]


@pytest.mark.parametrize("kind", ASKS)
def test_a_2025_clients_answer_to_a_relayed_request_reaches_the_upstream_with_the_email_masked(
    start: Callable[..., TestClient], kind: str
) -> None:
    upstream = asking_upstream(ASKS[kind])
    agent, response = relayed_call(start, upstream)
    [relayed_id] = [m["id"] for m in sse_messages(response.text) if m.get("method") == ASKS[kind]["method"]]

    assert agent.reply({"id": relayed_id, "result": ANSWERS[kind]}).status_code == 202

    [answer] = upstream.notified
    assert answer.message["id"] == 7  # the upstream's own id again
    assert EMAIL not in str(answer.message)
    if kind == "elicitation":
        assert answer.message["result"] == {"action": "accept", "content": {"email": MASKED}}
    else:
        assert answer.message["result"]["content"] == {"type": "text", "text": f"Dear {MASKED}, hello."}
    [call] = upstream.calls("tools/call")
    assert answer.session == call.session  # in the upstream session the question came from


# --- 2026-07-28: input_required questions and the retry's answers ---------------------------------------
def input_required_upstream() -> MemoryUpstream:
    then = text_result("invoice sent")
    script = InputRequired({"confirm": QUESTION}, state=STATE, then=then)
    return MemoryUpstream("mem", modern=True, tools=[tool("invoice")], results={"invoice": script})


def test_the_questions_of_an_input_required_result_reach_a_2026_client_masked_and_its_request_state_unchanged(
    start: Callable[..., TestClient],
) -> None:
    agent = Agent(start(input_required_upstream(), masking={"enabled": True}), MODERN)

    response = agent.send("tools/call", {"name": "mem__invoice", "arguments": {}})

    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["resultType"] == "input_required"
    assert result["inputRequests"]["confirm"]["params"]["message"] == f"Send the invoice to {MASKED}?"
    assert result["requestState"] == STATE


def test_the_input_responses_of_a_2026_retry_reach_the_upstream_masked_and_its_request_state_unchanged(
    start: Callable[..., TestClient],
) -> None:
    upstream = input_required_upstream()
    agent = Agent(start(upstream, masking={"enabled": True}), MODERN)
    answers = {"confirm": {"action": "accept", "content": {"email": EMAIL}}}

    retry = {"name": "mem__invoice", "arguments": {}, "inputResponses": answers, "requestState": STATE}
    response = agent.send("tools/call", retry)

    assert response.status_code == 200, response.text
    assert response.json()["result"]["content"] == [{"type": "text", "text": "invoice sent"}]
    [call] = upstream.calls("tools/call")
    assert call.params["inputResponses"] == {"confirm": {"action": "accept", "content": {"email": MASKED}}}
    assert call.params["requestState"] == STATE
