"""Regressions: behaviour a client relies on that an earlier version of the gateway got wrong."""

from __future__ import annotations

import time
from typing import Any

from starlette.testclient import TestClient
from tollway import spec as c
from tollway.config import parse_config
from tollway.http import create_app
from tollway.store.sessions import MemorySessionStore

from tests.functional.lambda_harness import TABLE, LambdaGateway, load_event
from tests.unit.wire import assert_error


def _key(session: str) -> dict[str, Any]:
    return {"pk": {"S": f"SESSION#{session}"}, "sk": {"S": "META"}}


def test_an_active_session_is_renewed_when_used(gateway: LambdaGateway, dynamodb: Any) -> None:
    # sessions.ttl_seconds is documented as "lifetime of a 2025-era session after its last renewal",
    # but nothing renews a session: a busy session dies ttl_seconds after initialize.
    session = gateway.initialize()
    soon = int(time.time()) + 120
    dynamodb.update_item(
        TableName=TABLE,
        Key=_key(session),
        UpdateExpression="SET expires_at = :soon",
        ExpressionAttributeValues={":soon": {"N": str(soon)}},
    )

    assert gateway.legacy("tools/list", session=session).status == 200

    item = dynamodb.get_item(TableName=TABLE, Key=_key(session), ConsistentRead=True)["Item"]
    assert int(item["expires_at"]["N"]) >= int(time.time()) + 86400 - 5


def test_resource_subscriptions_are_not_advertised_while_updates_cannot_be_delivered(gateway: LambdaGateway) -> None:
    # Update notifications need a standalone stream the gateway does not open, so a client must
    # not be told subscriptions work (the upstreams' own answers differ by era besides).
    capabilities = gateway.invoke(load_event("initialize")).result()["capabilities"]

    assert capabilities["resources"]["subscribe"] is False


def test_a_tool_call_without_a_name_does_not_show_a_python_none(gateway: LambdaGateway) -> None:
    answer = gateway.modern("tools/call", {"arguments": {}}, request_id=3)

    error = assert_error(
        answer.status, answer.headers, answer.body, expected_status=400, code=c.INVALID_PARAMS, request_id=3
    )
    assert "None" not in error["message"], error


def test_an_upstream_error_about_a_resource_names_the_public_uri(gateway: LambdaGateway) -> None:
    session = gateway.initialize()

    answer = gateway.legacy("resources/read", {"uri": "support+support://customers/C-9999"}, session=session)

    error = answer.json()["error"]
    assert error["data"]["uri"] == "support+support://customers/C-9999", error


def test_an_unsupported_http_method_on_mcp_gets_a_json_rpc_answer_with_the_right_allow() -> None:
    config = parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": [{"name": "support", "url": "http://127.0.0.1:9/mcp"}],
        }
    )
    client = TestClient(create_app(config, store=MemorySessionStore(), streaming=False))

    response = client.put("/mcp", content=b"{}", headers={"content-type": "application/json"})

    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"POST", "DELETE"}
    assert_error(response.status_code, response.headers, response.text, expected_status=405, code=c.INVALID_REQUEST)
