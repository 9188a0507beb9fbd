"""The Lambda handler with 2026-07-28 clients: stateless requests, routing headers, no session store."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from tollway import spec as c
from tollway.config import GatewayConfig

from examples.upstreams import customer_support, finance
from tests.functional.lambda_harness import MODERN, LambdaGateway, assert_lambda_error, event_body, load_event

LIST_TTL_MS = 30_000


@pytest.fixture(scope="module")
def gateway_sections() -> dict[str, Any]:
    return {"http": {"list_ttl_ms": LIST_TTL_MS}}


def _assert_from_gateway(result: dict[str, Any]) -> None:
    assert result["resultType"] == "complete"
    assert result["_meta"][c.META_SERVER_INFO]["name"] == "tollway"


def test_server_discover_describes_the_gateway(gateway: LambdaGateway) -> None:
    answer = gateway.invoke(load_event("server_discover_modern"))

    assert answer.status == 200
    assert c.SESSION_ID_HEADER not in answer.headers
    final = answer.json()
    assert final["id"] == "discover-1"
    result = final["result"]
    assert result["supportedVersions"] == [MODERN]
    assert {"tools", "resources", "prompts"} <= set(result["capabilities"])
    assert (result["ttlMs"], result["cacheScope"]) == (LIST_TTL_MS, "private")
    _assert_from_gateway(result)


def test_tools_list_is_cacheable_and_merges_both_upstreams(gateway: LambdaGateway) -> None:
    answer = gateway.invoke(load_event("tools_list_modern"))

    assert answer.status == 200
    result = answer.result()
    names = {tool["name"] for tool in result["tools"]}
    assert {"support__get_customer_profile", "finance__run_forecast"} <= names
    assert len(names) == 8
    assert (result["ttlMs"], result["cacheScope"]) == (LIST_TTL_MS, "private")
    _assert_from_gateway(result)


@pytest.mark.parametrize(
    ("method", "key", "expected"),
    [
        ("prompts/list", "prompts", {"support__draft_reply", "finance__explain_variance"}),
        ("resources/list", "resources", {"support+support://policies/refunds", "finance+finance://reports/latest"}),
        ("resources/templates/list", "resourceTemplates", {"support+support://customers/{customer_id}"}),
    ],
)
def test_every_list_is_merged_and_cacheable(gateway: LambdaGateway, method: str, key: str, expected: set[str]) -> None:
    result = gateway.modern(method).result()

    field = {"prompts": "name", "resources": "uri", "resourceTemplates": "uriTemplate"}[key]
    assert {item[field] for item in result[key]} == expected
    assert (result["ttlMs"], result["cacheScope"]) == (LIST_TTL_MS, "private")


def test_a_tool_call_is_routed_and_answered_by_the_gateway(gateway: LambdaGateway) -> None:
    event = load_event("tools_call_modern")

    answer = gateway.invoke(event)

    assert answer.status == 200
    assert answer.final()["id"] == event_body(event)["id"]
    result = answer.result()
    assert result["structuredContent"]["revenue"] == 1_395_000
    assert result["isError"] is False
    _assert_from_gateway(result)


def test_a_base64_encoded_event_body_is_decoded(gateway: LambdaGateway) -> None:
    event = load_event("tools_call_modern_base64")
    assert event["isBase64Encoded"] is True

    answer = gateway.invoke(event)

    assert answer.status == 200
    assert answer.result()["structuredContent"] == customer_support.REFUNDS["ORD-50002"].model_dump()


def test_a_modern_request_touches_no_session_store(gateway: LambdaGateway) -> None:
    for name in ("server_discover_modern", "tools_list_modern", "tools_call_modern", "tools_call_modern_base64"):
        gateway.dynamodb_calls.clear()

        answer = gateway.invoke(load_event(name))

        assert answer.status == 200, answer.body
        assert gateway.dynamodb_calls == [], name


def test_a_cold_instance_answers_a_modern_tool_call_without_dynamodb(
    start_gateway: Callable[[GatewayConfig], LambdaGateway],
    make_config: Callable[..., GatewayConfig],
    demo_upstreams: dict[str, str],
) -> None:
    cold = start_gateway(make_config(demo_upstreams))

    answer = cold.invoke(load_event("tools_call_modern"))

    assert answer.status == 200
    assert cold.dynamodb_calls == []


def test_a_resource_is_read_through_its_prefixed_uri(gateway: LambdaGateway) -> None:
    answer = gateway.modern("resources/read", {"uri": "support+support://policies/refunds"})

    contents = answer.result()["contents"]
    assert contents == [
        {
            "uri": "support+support://policies/refunds",
            "mimeType": "text/markdown",
            "text": customer_support.REFUND_POLICY,
        }
    ]


def test_a_prompt_is_fetched_by_its_prefixed_name(gateway: LambdaGateway) -> None:
    answer = gateway.modern("prompts/get", {"name": "finance__explain_variance", "arguments": {"region": "AMER"}})

    text = answer.result()["messages"][0]["content"]["text"]
    assert text.startswith("Compare AMER revenue for 2025-Q3 and 2025-Q4")


def test_a_streamed_tool_call_still_ends_with_its_result(gateway: LambdaGateway) -> None:
    answer = gateway.modern(
        "tools/call", {"name": "finance__run_forecast", "arguments": {"region": "AMER", "months": 2}}
    )

    assert answer.status == 200
    points = answer.result()["structuredContent"]["points"]
    monthly = finance.revenue_for("AMER", "2025-Q4") // 3
    assert points == [
        {"month": "2026-01", "revenue": monthly + 10_000},
        {"month": "2026-02", "revenue": monthly + 20_000},
    ]


# --- the envelope ladder through API Gateway -----------------------------------------------------
def test_a_name_header_that_disagrees_with_the_body_is_answered_400(gateway: LambdaGateway) -> None:
    event = load_event("tools_call_modern", headers={c.NAME_HEADER: "finance__run_forecast"})

    answer = gateway.invoke(event)

    assert_lambda_error(
        answer,
        400,
        c.HEADER_MISMATCH,
        message="mcp-name header does not match the request body's 'name' parameter",
        request_id=2,
    )


def test_a_version_header_that_disagrees_with_the_envelope_is_answered_400(gateway: LambdaGateway) -> None:
    body = event_body(load_event("tools_list_modern"))
    body["params"]["_meta"][c.META_PROTOCOL_VERSION] = "2025-11-25"

    answer = gateway.invoke(load_event("tools_list_modern", body=body))

    assert_lambda_error(answer, 400, c.HEADER_MISMATCH, request_id=1)


def test_a_routing_header_sent_twice_arrives_comma_joined_and_is_answered_400(gateway: LambdaGateway) -> None:
    # Payload v2 folds repeated headers into one comma-separated value.
    event = load_event("tools_list_modern", headers={c.METHOD_HEADER: "tools/list, tools/list"})

    answer = gateway.invoke(event)

    assert_lambda_error(
        answer,
        400,
        c.HEADER_MISMATCH,
        message="mcp-method header does not match the request body's method",
        request_id=1,
    )


def test_an_unsupported_version_is_answered_400_with_the_supported_ones(gateway: LambdaGateway) -> None:
    answer = gateway.modern("tools/list", version="2027-01-01", request_id="v")

    error = assert_lambda_error(
        answer, 400, c.UNSUPPORTED_PROTOCOL_VERSION, message="Unsupported protocol version", request_id="v"
    )
    assert error["data"] == {"supported": [MODERN], "requested": "2027-01-01"}


def test_an_unknown_method_is_answered_404(gateway: LambdaGateway) -> None:
    answer = gateway.modern("tools/frobnicate", request_id=4)

    error = assert_lambda_error(answer, 404, c.METHOD_NOT_FOUND, message="Method not found", request_id=4)
    assert error["data"] == {"method": "tools/frobnicate"}


def test_an_unknown_tool_is_answered_400_naming_it(gateway: LambdaGateway) -> None:
    answer = gateway.modern("tools/call", {"name": "crm__lookup", "arguments": {}}, request_id=5)

    assert_lambda_error(answer, 400, c.INVALID_PARAMS, message="Unknown tool: crm__lookup", request_id=5)


def test_a_cursor_the_gateway_did_not_issue_is_answered_400(gateway: LambdaGateway) -> None:
    answer = gateway.modern("tools/list", {"cursor": "eyJub3BlIjoieCJ9"})

    assert_lambda_error(
        answer, 400, c.INVALID_PARAMS, message="Invalid params: cursor is not one this gateway issued", request_id=1
    )


def _bare(method: str) -> dict[str, Any]:
    event = load_event("delete_session", without=(c.SESSION_ID_HEADER,), headers={c.PROTOCOL_VERSION_HEADER: MODERN})
    event["requestContext"]["http"]["method"] = method
    event["routeKey"] = event["requestContext"]["routeKey"] = f"{method} /mcp"
    return event


def test_get_is_405_for_a_stateless_client(gateway: LambdaGateway) -> None:
    answer = gateway.invoke(_bare("GET"))

    assert_lambda_error(answer, 405, c.INVALID_REQUEST, message="Method not allowed")
    assert answer.headers["allow"] == "POST"


def test_delete_is_405_allowing_only_post_for_a_stateless_client(gateway: LambdaGateway) -> None:
    gateway.dynamodb_calls.clear()

    answer = gateway.invoke(_bare("DELETE"))

    assert_lambda_error(answer, 405, c.INVALID_REQUEST, message="Method not allowed")
    assert answer.headers["allow"] == "POST"
    assert gateway.dynamodb_calls == []


# --- a stateless caller in front of a legacy-only upstream ---------------------------------------
@pytest.fixture(scope="module")
def legacy_upstream_config(make_config: Callable[..., GatewayConfig], demo_upstreams: dict[str, str]) -> GatewayConfig:
    config = make_config({"support": demo_upstreams["support"]})
    upstream = config.upstreams[0].model_copy(update={"protocol": "legacy"})
    return config.model_copy(update={"upstreams": [upstream]})


def _principal_items(client: Any) -> list[dict[str, Any]]:
    from tests.functional.lambda_harness import TABLE

    items = client.scan(TableName=TABLE)["Items"]
    return [i for i in items if i["pk"]["S"].startswith("PRINCIPAL#")]


def test_a_stateless_caller_shares_one_legacy_upstream_session_per_principal(
    start_gateway: Callable[[GatewayConfig], LambdaGateway], legacy_upstream_config: GatewayConfig, moto_dynamodb: Any
) -> None:
    first_instance = start_gateway(legacy_upstream_config)
    call = {"name": "support__check_refund_status", "arguments": {"order_id": "ORD-50004"}}

    first = first_instance.modern("tools/call", call)
    first_instance.dynamodb_calls.clear()
    second = first_instance.modern("tools/call", call)

    assert first.result()["structuredContent"]["status"] == "pending_review"
    assert second.result()["structuredContent"]["status"] == "pending_review"
    assert first_instance.dynamodb_calls == []
    [item] = _principal_items(moto_dynamodb)
    assert (item["pk"]["S"], item["sk"]["S"]) == ("PRINCIPAL#default#anonymous", "UPSTREAM#support")
    assert item["up"]["M"]["sid"]["S"]
    assert int(item["expires_at"]["N"]) > time.time()

    other_instance = start_gateway(legacy_upstream_config)
    third = other_instance.modern("tools/call", call)

    assert third.result()["structuredContent"]["order_id"] == "ORD-50004"
    assert other_instance.dynamodb_calls == ["GetItem"]
    assert _principal_items(moto_dynamodb) == [item]


def test_the_buffered_deployment_offers_no_listen_stream(gateway: LambdaGateway) -> None:
    """Held whole, an answer cannot carry notifications as they happen: no listChanged, no
    subscribe, and `subscriptions/listen` does not exist there."""
    capabilities = gateway.modern("server/discover").result()["capabilities"]
    assert capabilities["tools"]["listChanged"] is False
    assert capabilities["resources"] == {"subscribe": False, "listChanged": False}
    assert capabilities["prompts"]["listChanged"] is False

    answer = gateway.modern("subscriptions/listen", {"notifications": {"toolsListChanged": True}}, request_id="sub-1")
    assert answer.status == 404
    assert answer.json()["error"]["code"] == c.METHOD_NOT_FOUND
    assert answer.json()["id"] == "sub-1"
