"""2026-07-28 `input_required` round trips through the buffered Lambda handler (Mangum, API Gateway
v2 events), against the conformance fixture over real HTTP: the upstream's questions reach the
client as they are, and the client's retry (inputResponses, requestState) reaches the upstream, so
multi round-trip tools work on the buffered deployment as on the streaming one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tollway.config import GatewayConfig

from tests.fixtures import conformance_upstream
from tests.fixtures.recording_upstream import serve_in_thread
from tests.functional.lambda_harness import LambdaGateway


@pytest.fixture(scope="module")
def asking_url() -> Iterator[str]:
    with serve_in_thread(conformance_upstream.create_app(), lifespan="on") as base:
        yield f"{base}/mcp"


@pytest.fixture
def gateway(
    start_gateway: Callable[[GatewayConfig], LambdaGateway],
    make_config: Callable[..., GatewayConfig],
    asking_url: str,
) -> LambdaGateway:
    return start_gateway(make_config({"ask": asking_url}))


def _result(answer: Any) -> dict[str, Any]:
    assert answer.status == 200, answer.body
    return dict(answer.json()["result"])


def test_a_question_goes_out_and_the_answer_comes_back_on_the_retry(gateway: LambdaGateway) -> None:
    name = "ask__test_input_required_result_elicitation"

    asked = _result(gateway.modern("tools/call", {"name": name, "arguments": {}}))
    answered = _result(
        gateway.modern(
            "tools/call",
            {
                "name": name,
                "arguments": {},
                "inputResponses": {"user_name": {"action": "accept", "content": {"name": "Ada"}}},
            },
            request_id=2,
        )
    )

    assert asked["resultType"] == "input_required"
    question = asked["inputRequests"]["user_name"]
    assert (question["method"], question["params"]["message"]) == ("elicitation/create", "What is your name?")
    assert answered["resultType"] == "complete"
    assert answered["content"][0]["text"] == "Hello, Ada!"


def test_the_request_state_of_round_one_reaches_the_upstream_in_round_two(gateway: LambdaGateway) -> None:
    name = "ask__test_input_required_result_request_state"

    asked = _result(gateway.modern("tools/call", {"name": name, "arguments": {}}))
    retry = {
        "name": name,
        "arguments": {},
        "inputResponses": {"confirm": {"action": "accept", "content": {"ok": True}}},
        "requestState": asked["requestState"],
    }
    answered = _result(gateway.modern("tools/call", retry, request_id=2))

    assert asked["resultType"] == "input_required"
    assert answered["content"][0]["text"] == "state-ok: confirmation received"
