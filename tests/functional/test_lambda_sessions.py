"""The Lambda handler with 2025-era clients: sessions minted by the gateway, kept in DynamoDB,
and every method routed to the demo upstreams under their prefixes.

Most tests change session items in the table behind the gateway's back, so this module's
gateway reads its session on every request (`sessions.cache_seconds: 0`); the last tests show
what an instance that remembers sessions does."""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

import httpx
import pytest
from tollway import spec as c

from examples.upstreams import customer_support, finance
from tests.functional.lambda_harness import TABLE, LambdaGateway, assert_lambda_error, event_body, load_event

SUPPORT_TOOLS = {"get_customer_profile", "list_orders", "check_refund_status", "create_ticket"}
FINANCE_TOOLS = {"fetch_revenue_data", "run_forecast", "validate_transaction", "download_statement"}


def _key(session: str) -> dict[str, Any]:
    return {"pk": {"S": f"SESSION#{session}"}, "sk": {"S": "META"}}


def _item(client: Any, session: str) -> dict[str, Any] | None:
    return client.get_item(TableName=TABLE, Key=_key(session), ConsistentRead=True).get("Item")


@pytest.fixture(scope="module")
def gateway_sections() -> dict[str, Any]:
    return {"sessions": {"cache_seconds": 0}}


@pytest.fixture
def session(gateway: LambdaGateway) -> str:
    return gateway.initialize()


# --- the handshake ------------------------------------------------------------------------------
def test_initialize_answers_with_a_random_session_id_and_the_gateways_identity(gateway: LambdaGateway) -> None:
    event = load_event("initialize")

    first = gateway.invoke(event)
    second = gateway.invoke(event)

    assert first.status == 200
    assert first.content_type == "application/json"
    answer = first.json()
    assert answer["id"] == event_body(event)["id"]
    result = answer["result"]
    assert result["protocolVersion"] == "2025-11-25"
    assert result["serverInfo"] == {"name": "tollway", "version": result["serverInfo"]["version"]}
    assert {"tools", "resources", "prompts"} <= set(result["capabilities"])
    session_id = first.headers[c.SESSION_ID_HEADER]
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{43}", session_id)  # never a leading "-": the CLI takes it
    assert second.headers[c.SESSION_ID_HEADER] != session_id


def test_a_new_session_is_stored_with_its_principal_and_a_future_expiry(
    gateway: LambdaGateway, moto_dynamodb: Any
) -> None:
    before = int(time.time())

    session = gateway.initialize()

    item = _item(moto_dynamodb, session)
    assert item is not None
    assert item["tenant"] == {"S": "default"}
    assert item["sub"] == {"S": "anonymous"}
    assert item["ver"] == {"S": "2025-11-25"}
    expires_at = int(item["expires_at"]["N"])
    assert before + 86400 <= expires_at <= int(time.time()) + 86400
    ttl = moto_dynamodb.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")
    assert json.loads(item["client"]["S"])["info"] == {"name": "agent-under-test", "version": "1.4.0"}


@pytest.mark.parametrize(
    ("offered", "agreed"), [("2025-06-18", "2025-06-18"), ("2025-03-26", "2025-03-26"), ("2099-01-01", "2025-11-25")]
)
def test_initialize_agrees_on_the_clients_version_or_offers_the_latest(
    gateway: LambdaGateway, offered: str, agreed: str
) -> None:
    body = event_body(load_event("initialize"))
    body["params"]["protocolVersion"] = offered

    answer = gateway.invoke(load_event("initialize", body=body))

    assert answer.status == 200
    assert answer.result()["protocolVersion"] == agreed


def test_resource_subscriptions_are_not_advertised_while_updates_cannot_be_delivered(gateway: LambdaGateway) -> None:
    # Update notifications need a standalone stream the gateway does not open, so a client must
    # not be told subscriptions work (the upstreams' own answers differ by era besides).
    capabilities = gateway.invoke(load_event("initialize")).result()["capabilities"]

    assert capabilities["resources"]["subscribe"] is False


# --- lists and calls ------------------------------------------------------------------------------
def test_tools_list_merges_both_upstreams_under_their_prefixes(gateway: LambdaGateway, session: str) -> None:
    answer = gateway.invoke(load_event("tools_list_legacy", headers={c.SESSION_ID_HEADER: session}))

    assert answer.status == 200
    tools = {tool["name"]: tool for tool in answer.result()["tools"]}
    assert set(tools) == {f"support__{n}" for n in SUPPORT_TOOLS} | {f"finance__{n}" for n in FINANCE_TOOLS}
    assert tools["support__list_orders"]["inputSchema"]["properties"]["limit"]["default"] == 10
    assert tools["finance__run_forecast"]["annotations"]["readOnlyHint"] is True
    assert "nextCursor" not in answer.result()
    assert "ttlMs" not in answer.result()


def test_a_support_tool_call_is_routed_to_the_support_upstream(gateway: LambdaGateway, session: str) -> None:
    answer = gateway.invoke(load_event("tools_call_legacy", headers={c.SESSION_ID_HEADER: session}))

    assert answer.status == 200
    final = answer.final()
    assert final["id"] == 2
    result = final["result"]
    assert result["isError"] is False
    assert result["structuredContent"] == customer_support.CUSTOMERS["C-1001"].model_dump()
    assert json.loads(result["content"][0]["text"])["email"] == "ada.lovelace@example.com"


def test_a_finance_tool_call_is_routed_to_the_finance_upstream(gateway: LambdaGateway, session: str) -> None:
    answer = gateway.legacy(
        "tools/call",
        {"name": "finance__fetch_revenue_data", "arguments": {"region": "EMEA", "quarter": "2025-Q1"}},
        session=session,
        request_id="rev-1",
    )

    assert answer.final()["id"] == "rev-1"
    report = answer.result()["structuredContent"]
    assert (report["revenue"], report["cost"], report["margin_pct"]) == (1_395_000, 864_900, 38.0)
    assert [a["name"] for a in report["top_accounts"]] == ["Initech GmbH", "Globex Ltd"]


def test_the_same_ticket_request_always_yields_the_same_ticket(gateway: LambdaGateway, session: str) -> None:
    arguments = {
        "customer_id": "C-1002",
        "subject": "Late parcel",
        "body": "Order ORD-50004 is late.",
        "priority": "high",
    }
    expected = hashlib.sha256(b"C-1002|Late parcel|Order ORD-50004 is late.|high").hexdigest()[:8].upper()

    answer = gateway.legacy("tools/call", {"name": "support__create_ticket", "arguments": arguments}, session=session)

    ticket = answer.result()["structuredContent"]
    assert ticket["ticket_id"] == f"TCK-{expected}"
    assert ticket["callback_phone"] == "+1 (555) 010-4477"


def test_a_tool_error_of_an_upstream_comes_back_as_a_tool_result(gateway: LambdaGateway, session: str) -> None:
    answer = gateway.legacy(
        "tools/call", {"name": "support__get_customer_profile", "arguments": {"customer_id": "C-9999"}}, session=session
    )

    result = answer.result()
    assert result["isError"] is True
    assert "unknown customer 'C-9999'" in result["content"][0]["text"]


def test_a_streamed_tool_call_relays_progress_and_logs_before_its_result(gateway: LambdaGateway, session: str) -> None:
    params = {
        "name": "finance__run_forecast",
        "arguments": {"region": "EMEA", "months": 3},
        "_meta": {"progressToken": "p-1"},
    }

    answer = gateway.legacy("tools/call", params, session=session, request_id=7)

    assert answer.status == 200
    assert answer.content_type == "text/event-stream"
    messages = answer.messages()
    progress = [m["params"] for m in messages if m.get("method") == "notifications/progress"]
    assert [(p["progressToken"], p["progress"], p["total"]) for p in progress] == [("p-1", n, 4) for n in (1, 2, 3, 4)]
    assert [p["message"] for p in progress] == list(finance.FORECAST_STEPS)
    logs = [m["params"] for m in messages if m.get("method") == "notifications/message"]
    assert logs == [{"level": "info", "data": "forecast for EMEA ready: 3 months"}]
    final = messages[-1]
    assert final["id"] == 7
    assert [p["revenue"] for p in final["result"]["structuredContent"]["points"]] == [500_000, 510_000, 520_000]


def test_a_client_that_accepts_only_json_gets_the_streamed_calls_result_alone(
    gateway: LambdaGateway, session: str
) -> None:
    params = {
        "name": "finance__run_forecast",
        "arguments": {"region": "APAC", "months": 1},
        "_meta": {"progressToken": 9},
    }

    answer = gateway.legacy("tools/call", params, session=session, headers={"accept": "application/json"})

    assert answer.content_type == "application/json"
    assert answer.json()["result"]["structuredContent"]["points"] == [{"month": "2026-01", "revenue": 410_000}]


def test_resources_are_listed_and_read_through_prefixed_uris(gateway: LambdaGateway, session: str) -> None:
    listed = gateway.legacy("resources/list", session=session).result()["resources"]
    read = gateway.legacy("resources/read", {"uri": "finance+finance://reports/latest"}, session=session).result()

    assert {r["uri"] for r in listed} == {"support+support://policies/refunds", "finance+finance://reports/latest"}
    assert read["contents"] == [
        {"uri": "finance+finance://reports/latest", "mimeType": "text/markdown", "text": finance.LATEST_REPORT}
    ]


def test_resource_templates_are_prefixed_and_their_uris_readable(gateway: LambdaGateway, session: str) -> None:
    templates = gateway.legacy("resources/templates/list", session=session).result()["resourceTemplates"]
    read = gateway.legacy("resources/read", {"uri": "support+support://customers/C-1002"}, session=session).result()

    assert [t["uriTemplate"] for t in templates] == ["support+support://customers/{customer_id}"]
    assert read["contents"][0]["uri"] == "support+support://customers/C-1002"
    assert json.loads(read["contents"][0]["text"])["name"] == "Grace Hopper"


def test_prompts_are_listed_and_fetched_under_their_prefixes(gateway: LambdaGateway, session: str) -> None:
    listed = gateway.legacy("prompts/list", session=session).result()["prompts"]
    prompt = gateway.legacy(
        "prompts/get",
        {"name": "support__draft_reply", "arguments": {"customer_id": "C-1001", "tone": "formal"}},
        session=session,
    ).result()

    assert {p["name"] for p in listed} == {"support__draft_reply", "finance__explain_variance"}
    assert [m["role"] for m in prompt["messages"]] == ["user", "assistant"]
    assert prompt["messages"][0]["content"]["text"] == (
        "Draft a formal reply to Ada Lovelace <ada.lovelace@example.com> about their most recent order."
    )


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        (
            "tools/call",
            {"name": "support_get_customer_profile", "arguments": {}},
            "Unknown tool: support_get_customer_profile",
        ),
        ("tools/call", {"name": "get_customer_profile", "arguments": {}}, "Unknown tool: get_customer_profile"),
        ("prompts/get", {"name": "nosuch__prompt"}, "Unknown prompt: nosuch__prompt"),
    ],
)
def test_a_name_no_upstream_serves_is_invalid_params_naming_it(
    gateway: LambdaGateway, session: str, method: str, params: dict[str, Any], message: str
) -> None:
    answer = gateway.legacy(method, params, session=session, request_id=11)

    assert_lambda_error(answer, 200, c.INVALID_PARAMS, message=message, request_id=11)


def test_a_resource_no_upstream_serves_is_resource_not_found(gateway: LambdaGateway, session: str) -> None:
    answer = gateway.legacy("resources/read", {"uri": "nosuch+x://y"}, session=session, request_id=12)

    error = assert_lambda_error(answer, 200, -32002, message="Resource not found", request_id=12)
    assert error["data"] == {"uri": "nosuch+x://y"}


def test_an_upstream_error_about_a_resource_names_the_public_uri(gateway: LambdaGateway) -> None:
    session = gateway.initialize()

    answer = gateway.legacy("resources/read", {"uri": "support+support://customers/C-9999"}, session=session)

    error = answer.json()["error"]
    assert error["data"]["uri"] == "support+support://customers/C-9999", error


def test_ping_is_answered_by_the_gateway(gateway: LambdaGateway, session: str) -> None:
    answer = gateway.legacy("ping", session=session, request_id="p")

    assert answer.json() == {"jsonrpc": "2.0", "id": "p", "result": {}}


# --- the session's life -------------------------------------------------------------------------
def test_a_request_without_a_session_id_is_answered_400(gateway: LambdaGateway) -> None:
    answer = gateway.legacy("tools/list", session=None)

    assert_lambda_error(
        answer, 400, c.INVALID_REQUEST, message="Bad Request: Mcp-Session-Id header is required", request_id=1
    )


def test_an_unknown_session_is_answered_404(gateway: LambdaGateway) -> None:
    answer = gateway.legacy("tools/list", session="never-issued")

    assert answer.status == 404
    assert answer.json()["error"]["message"] == "Session not found"


def test_an_expired_session_still_in_the_table_is_answered_404(gateway: LambdaGateway, moto_dynamodb: Any) -> None:
    session = gateway.initialize()
    moto_dynamodb.update_item(
        TableName=TABLE,
        Key=_key(session),
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 1)}},
    )

    answer = gateway.legacy("tools/list", session=session)

    assert answer.status == 404


def test_an_active_session_is_renewed_when_used(gateway: LambdaGateway, moto_dynamodb: Any) -> None:
    # sessions.ttl_seconds is the lifetime of a 2025-era session after its last renewal: a busy
    # session must not die ttl_seconds after initialize.
    session = gateway.initialize()
    soon = int(time.time()) + 120
    moto_dynamodb.update_item(
        TableName=TABLE,
        Key=_key(session),
        UpdateExpression="SET expires_at = :soon",
        ExpressionAttributeValues={":soon": {"N": str(soon)}},
    )

    assert gateway.legacy("tools/list", session=session).status == 200

    item = moto_dynamodb.get_item(TableName=TABLE, Key=_key(session), ConsistentRead=True)["Item"]
    assert int(item["expires_at"]["N"]) >= int(time.time()) + 86400 - 5


def test_another_principals_session_is_answered_404(gateway: LambdaGateway, moto_dynamodb: Any) -> None:
    session = gateway.initialize()
    moto_dynamodb.update_item(
        TableName=TABLE,
        Key=_key(session),
        UpdateExpression="SET tenant = :t, #s = :s",
        ExpressionAttributeNames={"#s": "sub"},
        ExpressionAttributeValues={":t": {"S": "acme"}, ":s": {"S": "alice"}},
    )

    answer = gateway.legacy("tools/list", session=session)

    assert answer.status == 404
    assert answer.json()["error"]["message"] == "Session not found"


def test_an_unsupported_protocol_version_on_a_session_is_answered_400(gateway: LambdaGateway, session: str) -> None:
    answer = gateway.legacy("tools/list", session=session, headers={c.PROTOCOL_VERSION_HEADER: "2030-01-01"})

    error = assert_lambda_error(
        answer, 400, c.INVALID_REQUEST, message="Bad Request: Unsupported protocol version", request_id=1
    )
    assert error["data"]["requested"] == "2030-01-01"


def test_delete_ends_the_session_then_it_is_answered_404(gateway: LambdaGateway, moto_dynamodb: Any) -> None:
    session = gateway.initialize()

    ended = gateway.delete(session)
    used = gateway.legacy("tools/list", session=session)
    again = gateway.delete(session)

    assert ended.status == 204
    assert ended.body == ""
    assert used.status == 404
    assert again.status == 404
    assert _item(moto_dynamodb, session) is None


def test_ending_a_session_also_ends_the_upstream_sessions_it_opened(gateway: LambdaGateway, moto_dynamodb: Any) -> None:
    session = gateway.initialize()
    gateway.invoke(load_event("tools_call_legacy", headers={c.SESSION_ID_HEADER: session}))
    upstream = _item(moto_dynamodb, session)["ups"]["M"]["support"]["M"]  # type: ignore[index]
    upstream_session, version = upstream["sid"]["S"], upstream["ver"]["S"]

    assert gateway.delete(session).status == 204

    probe = httpx.post(
        gateway.app.state.config.upstream("support").url,
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        headers={
            "accept": "application/json, text/event-stream",
            c.SESSION_ID_HEADER: upstream_session,
            c.PROTOCOL_VERSION_HEADER: version,
        },
    )
    assert probe.status_code == 404


def test_a_lost_upstream_session_is_reopened_and_the_call_still_succeeds(
    gateway: LambdaGateway, moto_dynamodb: Any
) -> None:
    session = gateway.initialize()
    event = load_event("tools_call_legacy", headers={c.SESSION_ID_HEADER: session})
    assert gateway.invoke(event).result()["isError"] is False
    lost = _item(moto_dynamodb, session)["ups"]["M"]["support"]["M"]  # type: ignore[index]
    # The upstream forgets the session (restart, expiry): end it behind the gateway's back.
    ended = httpx.delete(
        gateway.app.state.config.upstream("support").url,
        headers={c.SESSION_ID_HEADER: lost["sid"]["S"], c.PROTOCOL_VERSION_HEADER: lost["ver"]["S"]},
    )
    assert ended.status_code == 200

    answer = gateway.invoke(event)

    assert answer.status == 200
    assert answer.result()["structuredContent"]["customer_id"] == "C-1001"
    reopened = _item(moto_dynamodb, session)["ups"]["M"]["support"]["M"]  # type: ignore[index]
    assert reopened["sid"]["S"] not in ("", lost["sid"]["S"])


def test_a_session_item_with_both_upstream_sessions_stays_under_one_write_unit(
    gateway: LambdaGateway, moto_dynamodb: Any
) -> None:
    session = gateway.initialize()
    gateway.legacy("tools/list", session=session)

    item = _item(moto_dynamodb, session)

    assert item is not None
    assert set(item["ups"]["M"]) == {"support", "finance"}
    # JSON of the typed item over-counts DynamoDB's size rules, so this bounds the real size.
    assert len(json.dumps(item)) < 1024


# --- an instance that remembers the sessions it read ---------------------------------------------
@pytest.fixture(scope="module")
def remembering(start_gateway: Any, make_config: Any, demo_upstreams: dict[str, str]) -> LambdaGateway:
    return start_gateway(make_config(demo_upstreams, sessions={"cache_seconds": 60}))


def test_an_instance_reads_a_session_once_and_answers_its_calls_from_memory(remembering: LambdaGateway) -> None:
    session = remembering.initialize()
    remembering.dynamodb_calls.clear()

    answers = [remembering.legacy("tools/list", session=session) for _ in range(3)]

    assert [a.status for a in answers] == [200, 200, 200]
    assert "GetItem" not in remembering.dynamodb_calls


def test_a_session_ended_through_this_instance_is_gone_at_once(remembering: LambdaGateway, moto_dynamodb: Any) -> None:
    session = remembering.initialize()
    assert remembering.legacy("tools/list", session=session).status == 200

    assert remembering.delete(session).status == 204
    assert remembering.legacy("tools/list", session=session).status == 404
    assert _item(moto_dynamodb, session) is None
