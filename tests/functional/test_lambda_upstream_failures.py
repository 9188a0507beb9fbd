"""One upstream down: the others keep working, and callers of the dead one get a stable error."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tollway import spec as c
from tollway.config import GatewayConfig

from tests.functional.lambda_harness import LambdaGateway, assert_lambda_error


@pytest.fixture(scope="module")
def gateway(
    start_gateway: Callable[[GatewayConfig], LambdaGateway],
    make_config: Callable[..., GatewayConfig],
    demo_upstreams: dict[str, str],
    dead_url: str,
) -> LambdaGateway:
    return start_gateway(make_config({**demo_upstreams, "ledger": dead_url}))


@pytest.fixture(scope="module")
def all_down(
    start_gateway: Callable[[GatewayConfig], LambdaGateway],
    make_config: Callable[..., GatewayConfig],
    dead_url: str,
) -> LambdaGateway:
    return start_gateway(make_config({"ledger": dead_url, "archive": dead_url}))


def test_a_modern_list_leaves_out_the_upstream_that_is_down(gateway: LambdaGateway) -> None:
    answer = gateway.modern("tools/list")

    assert answer.status == 200
    prefixes = {tool["name"].split("__")[0] for tool in answer.result()["tools"]}
    assert prefixes == {"support", "finance"}


def test_a_session_opens_and_lists_without_the_upstream_that_is_down(gateway: LambdaGateway) -> None:
    session = gateway.initialize()

    answer = gateway.legacy("tools/list", session=session)

    assert answer.status == 200
    assert len(answer.result()["tools"]) == 8


@pytest.mark.parametrize("era", ["modern", "session"])
def test_calling_a_tool_of_the_dead_upstream_is_a_stable_retryable_error(gateway: LambdaGateway, era: str) -> None:
    params = {"name": "ledger__post_entry", "arguments": {"amount": 10}}
    if era == "modern":
        answer = gateway.modern("tools/call", params, request_id=31)
    else:
        answer = gateway.legacy("tools/call", params, session=gateway.initialize(), request_id=31)

    error = assert_lambda_error(
        answer, 502, c.INTERNAL_ERROR, message="Upstream 'ledger' is unavailable", request_id=31
    )
    assert error["data"] == {"upstream": "ledger", "retryable": True}


def test_the_live_upstreams_still_answer_calls(gateway: LambdaGateway) -> None:
    answer = gateway.modern("tools/call", {"name": "support__list_orders", "arguments": {"customer_id": "C-1002"}})

    assert answer.result()["structuredContent"]["total_orders"] == 1


def test_when_no_upstream_answers_a_list_is_a_retryable_error(all_down: LambdaGateway) -> None:
    answer = all_down.modern("tools/list", request_id=41)

    error = assert_lambda_error(answer, 503, c.INTERNAL_ERROR, message="No upstream is available", request_id=41)
    assert error["data"] == {"retryable": True}


def test_when_no_upstream_answers_a_session_still_opens_with_tools_advertised(all_down: LambdaGateway) -> None:
    session = all_down.initialize()

    answer = all_down.legacy("tools/list", session=session, request_id=42)

    assert_lambda_error(answer, 503, c.INTERNAL_ERROR, message="No upstream is available", request_id=42)
