"""Rate limits and quotas as a caller meets them through the gateway, and what finance is told.

The gateway app runs in-process (Starlette TestClient) with dev-issuer tokens, in front of two
real upstreams on 127.0.0.1: the demo finance server (`finance__*`) and a recording server
(`rec__echo`) that remembers every request, so a test can tell whether a call reached it.
The quota clock is frozen half a minute into a minute of 2026-03-14; usage is recorded on that day.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.auth import dev
from tollway.config import parse_config
from tollway.http import create_app
from tollway.policy import quota
from tollway.spec import RATE_LIMITED
from tollway.store import Stores
from tollway.store.ledger import DynamoLedger, MemoryLedger
from tollway.store.sessions import MemorySessionStore
from tollway.store.usage import UsageReader, UsageRow

from tests.fixtures.recording_upstream import Caller, RecordingUpstream
from tests.unit.wire import assert_http_error

RESOURCE = "https://gateway.example.com/mcp"
NOON = datetime(2026, 3, 14, 12, 0, 30, tzinfo=UTC).timestamp()
ECHO = {"name": "rec__echo", "arguments": {"text": "hi"}}
FETCH = {"name": "finance__fetch_revenue_data", "arguments": {"region": "EMEA", "quarter": "2025-Q1"}}
VALIDATE = {
    "name": "finance__validate_transaction",
    "arguments": {"card_number": "4242 4242 4242 4242", "amount": 12.5, "currency": "USD"},
}
UNKNOWN_STATEMENT = {"name": "finance__download_statement", "arguments": {"account_id": "ACC-0000", "month": "2025-01"}}
UNAVAILABLE = "Quota service unavailable, retry shortly"


class FrozenClock:
    """Stands in for the `time` module in tollway.policy.quota."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


class ThrottledDynamoDB:
    """A DynamoDB client whose every request is throttled, as a hot partition is."""

    def __getattr__(self, operation: str) -> Any:
        def throttled(**_: Any) -> None:
            error = {"Code": "ProvisionedThroughputExceededException", "Message": "Rate of requests exceeds throughput"}
            raise ClientError({"Error": error}, operation)

        return throttled


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    clock = FrozenClock(NOON)
    monkeypatch.setattr(quota, "time", clock)
    return clock


@dataclass
class Gateway:
    client: TestClient
    key: Any

    def caller(self, tenant: str, subject: str = "alice") -> Caller:
        return Caller(self.client, dev.mint(self.key, subject=subject, tenant=tenant, audience=RESOURCE))

    def flush(self) -> None:
        """What the server writes when it stops: usage counters still waiting for a write."""
        self.client.app.state.quota.flush_all()  # type: ignore[attr-defined]


@pytest.fixture
def start(
    recorder: RecordingUpstream, demo_upstreams: dict[str, str], dev_key: Any
) -> Iterator[Callable[..., Gateway]]:
    """`start(quotas, stores=..., tenants=...)`: a gateway in front of `rec` and `finance`."""
    with contextlib.ExitStack() as stack:

        def start(quotas: dict[str, Any], *, stores: Stores | None = None, **sections: Any) -> Gateway:
            config = parse_config(
                {
                    "resource": RESOURCE,
                    "auth": {"issuer": dev.DEV_ISSUER},
                    "upstreams": [
                        {"name": "rec", "url": recorder.url},
                        {"name": "finance", "url": demo_upstreams["finance"]},
                    ],
                    "quotas": quotas,
                    **sections,
                }
            )
            app = create_app(config, stores=stores or Stores.memory(), streaming=False, dev_keys=dev.jwk_set(dev_key))
            client = stack.enter_context(TestClient(app, raise_server_exceptions=False))
            return Gateway(client, dev_key)

        yield start


def call_in(era: str, caller: Caller) -> Callable[..., Any]:
    """A function sending one request in `era`: a 2025 session (opened here) or a stateless 2026 call."""
    if era == "2026-07-28":
        return caller.modern
    session = caller.open_session()

    def legacy(method: str, params: dict[str, Any] | None = None, *, request_id: Any = 1) -> Any:
        return caller.legacy(method, params, session=session, request_id=request_id)

    return legacy


def succeeded(response: Any) -> bool:
    body = response.json()
    return response.status_code == 200 and "result" in body and not body["result"].get("isError")


ERAS = ["2025-11-25", "2026-07-28"]


# --- refused calls -------------------------------------------------------------------------------
@pytest.mark.parametrize("era", ERAS)
def test_a_call_over_the_limit_gets_429_naming_the_limit_and_never_reaches_the_upstream(
    start: Callable[..., Gateway], recorder: RecordingUpstream, era: str
) -> None:
    gateway = start({"plans": {"tight": {"tenant": {"per_minute": 2}}}, "default_plan": "tight"})
    call = call_in(era, gateway.caller("acme"))

    allowed = [call("tools/call", ECHO, request_id=n) for n in (1, 2)]
    refused = call("tools/call", ECHO, request_id=3)

    assert [succeeded(r) for r in allowed] == [True, True]
    error = assert_http_error(
        refused, 429, RATE_LIMITED, message="Rate limit exceeded: tenant per_minute (2)", request_id=3
    )
    assert error["code"] == -32029
    assert error["data"] == {
        "limit": "tenant per_minute",
        "max": 2,
        "resetAt": "2026-03-14T12:01:00+00:00",
        "retryAfterSeconds": 30,
    }
    assert refused.headers["retry-after"] == "30"
    assert len(recorder.calls("tools/call")) == 2


def test_a_subject_over_its_own_limit_is_refused_while_a_colleague_still_gets_through(
    start: Callable[..., Gateway], recorder: RecordingUpstream
) -> None:
    plan = {"tenant": {"per_minute": 100}, "subject": {"per_day": 2}}
    gateway = start({"plans": {"team": plan}, "default_plan": "team"})
    alice, bob = gateway.caller("acme", "alice"), gateway.caller("acme", "bob")

    alice_calls = [alice.modern("tools/call", ECHO, request_id=n) for n in (1, 2, 3)]
    bob_call = bob.modern("tools/call", ECHO, request_id=4)

    assert [succeeded(r) for r in alice_calls[:2]] == [True, True]
    error = assert_http_error(
        alice_calls[2], 429, RATE_LIMITED, message="Rate limit exceeded: subject per_day (2)", request_id=3
    )
    assert error["data"]["resetAt"] == "2026-03-15T00:00:00+00:00"
    assert alice_calls[2].headers["retry-after"] == str(12 * 3600 - 30)
    assert succeeded(bob_call)
    assert len(recorder.calls("tools/call")) == 3


def test_a_per_tool_limit_refuses_that_tool_only(start: Callable[..., Gateway], recorder: RecordingUpstream) -> None:
    plan = {"tenant": {"per_minute": 100}, "tools": {"rec__*": {"per_second": 1}}}
    gateway = start({"plans": {"team": plan}, "default_plan": "team"})
    acme = gateway.caller("acme")

    first, second = (acme.modern("tools/call", ECHO, request_id=n) for n in (1, 2))
    other_tool = acme.modern("tools/call", FETCH, request_id=3)

    assert succeeded(first)
    error = assert_http_error(
        second, 429, RATE_LIMITED, message="Rate limit exceeded: tool rec__* per_second (1)", request_id=2
    )
    assert error["data"]["retryAfterSeconds"] == 1
    assert succeeded(other_tool)
    assert len(recorder.calls("tools/call")) == 1


def test_a_caller_of_a_free_tool_gets_its_result_not_an_internal_error(
    start: Callable[..., Gateway], recorder: RecordingUpstream
) -> None:
    plan = {"tenant": {"per_minute": 100, "per_day": 100}}
    gateway = start({"plans": {"p": plan}, "default_plan": "p", "costs": {"rec__echo": 0}})

    response = gateway.caller("acme").modern("tools/call", {"name": "rec__echo", "arguments": {}})

    assert response.json().get("result", {}).get("isError") is False, response.text
    assert len(recorder.calls("tools/call")) == 1


@pytest.mark.parametrize("era", ERAS)
def test_a_hot_tenant_on_four_items_gets_its_whole_limit_then_429_and_finance_sees_one_row(
    start: Callable[..., Gateway], recorder: RecordingUpstream, era: str
) -> None:
    ledger = MemoryLedger()
    gateway = start(
        {"plans": {"hot": {"tenant": {"per_minute": 6}, "shards": 4}}, "default_plan": "hot"},
        stores=Stores(MemorySessionStore(), ledger),
    )
    call = call_in(era, gateway.caller("acme"))

    allowed = [call("tools/call", ECHO, request_id=n) for n in range(1, 7)]
    refused = call("tools/call", ECHO, request_id=7)
    gateway.flush()

    assert [succeeded(r) for r in allowed] == [True] * 6
    error = assert_http_error(
        refused, 429, RATE_LIMITED, message="Rate limit exceeded: tenant per_minute (6)", request_id=7
    )
    # The items hold 2, 2, 1 and 1 calls a minute: the soonest fits again in half a minute (one
    # item of the whole 6 a minute would in 10 s: a sharded rate refills in steps of its items).
    assert error["data"] == {
        "limit": "tenant per_minute",
        "max": 6,
        "resetAt": "2026-03-14T12:01:00+00:00",
        "retryAfterSeconds": 30,
    }
    assert len(recorder.calls("tools/call")) == 6
    assert len({pk for pk, _ in ledger.items}) == 4
    rows = UsageReader(ledger).month("2026-03", "acme")
    assert [(r.tenant, r.tool, r.calls, r.units, r.rejected) for r in rows] == [("acme", "rec__echo", 6, 6, 1)]


# --- the counter store fails ---------------------------------------------------------------------
def failing_memory_store() -> MemoryLedger:
    store = MemoryLedger()
    store.fail_with = ConnectionError("DynamoDB endpoint unreachable")
    return store


def throttled_dynamodb_store() -> DynamoLedger:
    return DynamoLedger("tollway", ThrottledDynamoDB())


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("failing", [failing_memory_store, throttled_dynamodb_store], ids=["unreachable", "throttled"])
def test_when_the_quota_store_fails_a_closed_gateway_answers_503_retryable_and_calls_nothing(
    start: Callable[..., Gateway], recorder: RecordingUpstream, era: str, failing: Callable[[], Any]
) -> None:
    ledger = failing()
    stores = Stores(MemorySessionStore(), ledger)
    gateway = start({"plans": {"basic": {"tenant": {"per_minute": 100}}}, "default_plan": "basic"}, stores=stores)
    call = call_in(era, gateway.caller("acme"))

    response = call("tools/call", ECHO, request_id=7)

    error = assert_http_error(response, 503, c.INTERNAL_ERROR, message=UNAVAILABLE, request_id=7)
    assert error["data"] == {"retryable": True}
    assert response.headers["retry-after"] == "1"
    assert recorder.calls("tools/call") == []
    assert getattr(ledger, "items", {}) == {}


def test_a_tenant_whose_policy_fails_open_gets_through_when_the_quota_store_fails(
    start: Callable[..., Gateway], recorder: RecordingUpstream
) -> None:
    ledger = failing_memory_store()
    gateway = start(
        {"plans": {"basic": {"tenant": {"per_minute": 100}}}, "default_plan": "basic", "failure_policy": "closed"},
        stores=Stores(MemorySessionStore(), ledger),
        tenants={"acme": {}, "globex": {"failure_policy": "open"}},
    )

    open_tenant = gateway.caller("globex").modern("tools/call", ECHO, request_id=1)
    closed_tenant = gateway.caller("acme").modern("tools/call", ECHO, request_id=2)

    assert succeeded(open_tenant)
    assert_http_error(closed_tenant, 503, c.INTERNAL_ERROR, message=UNAVAILABLE, request_id=2)
    assert len(recorder.calls("tools/call")) == 1
    ledger.fail_with = None  # the store is back: the open tenant's call is written with the next write
    gateway.flush()
    assert [(r.tenant, r.tool, r.calls, r.units, r.errors) for r in UsageReader(ledger).month("2026-03")] == [
        ("globex", "rec__echo", 1, 1, 0)
    ]


def test_a_tenant_may_fail_closed_where_the_gateway_fails_open(
    start: Callable[..., Gateway], recorder: RecordingUpstream
) -> None:
    gateway = start(
        {"plans": {"basic": {"tenant": {"per_minute": 100}}}, "default_plan": "basic", "failure_policy": "open"},
        stores=Stores(MemorySessionStore(), failing_memory_store()),
        tenants={"acme": {}, "bank": {"failure_policy": "closed"}},
    )

    assert succeeded(gateway.caller("acme").modern("tools/call", ECHO, request_id=1))
    assert_http_error(
        gateway.caller("bank").modern("tools/call", ECHO, request_id=2),
        503,
        c.INTERNAL_ERROR,
        message=UNAVAILABLE,
        request_id=2,
    )
    assert len(recorder.calls("tools/call")) == 1


# --- usage, to the unit --------------------------------------------------------------------------
TABLE = "tollway-quota-usage"


@pytest.fixture(scope="module")
def table_name() -> str:
    return TABLE


def totals(rows: list[UsageRow]) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    """(tenant, tool) -> (calls, units, errors, rejected)."""
    return {(r.tenant, r.tool): (r.calls, r.units, r.errors, r.rejected) for r in rows}


def test_usage_in_dynamodb_matches_admitted_failed_and_refused_calls_to_the_unit(
    start: Callable[..., Gateway], recorder: RecordingUpstream, fresh_dynamodb: Any
) -> None:
    stores = Stores(MemorySessionStore(), DynamoLedger(TABLE, fresh_dynamodb))
    quotas = {
        "plans": {"metered": {"tenant": {"per_day": 20}}},
        "default_plan": "metered",
        "costs": {"finance__fetch_revenue_data": 5},
    }
    gateway = start(quotas, stores=stores)
    initech, umbrella = gateway.caller("initech"), gateway.caller("umbrella")

    answers = {
        "fetch x2 (10 units)": [initech.modern("tools/call", FETCH) for _ in range(2)],
        "validate x3 (13)": [initech.modern("tools/call", VALIDATE) for _ in range(3)],
        "statement fails in the tool (14)": [initech.modern("tools/call", UNKNOWN_STATEMENT)],
        "echo (15)": [initech.modern("tools/call", ECHO)],
    }
    recorder.refuse(1)
    answers["echo refused by the upstream (16)"] = [initech.modern("tools/call", ECHO)]
    answers["fetch does not fit"] = [initech.modern("tools/call", FETCH)]
    answers["validate x4 (20)"] = [initech.modern("tools/call", VALIDATE) for _ in range(4)]
    answers["validate does not fit"] = [initech.modern("tools/call", VALIDATE)]
    session = initech.open_session()
    answers["a 2025 session: validate does not fit"] = [initech.legacy("tools/call", VALIDATE, session=session)]
    answers["not metered"] = [
        initech.modern("tools/list"),
        initech.modern("resources/list"),
        initech.legacy("resources/read", {"uri": "finance+finance://reports/latest"}, session=session),
        initech.modern("prompts/get", {"name": "finance__explain_variance", "arguments": {"region": "EMEA"}}),
        initech.legacy("tools/list", session=session),
        initech.legacy("ping", session=session),
    ]
    answers["another tenant"] = [umbrella.modern("tools/call", VALIDATE)]

    outcome = {step: [r.status_code for r in responses] for step, responses in answers.items()}
    assert outcome == {
        "fetch x2 (10 units)": [200, 200],
        "validate x3 (13)": [200, 200, 200],
        "statement fails in the tool (14)": [200],
        "echo (15)": [200],
        "echo refused by the upstream (16)": [502],
        "fetch does not fit": [429],
        "validate x4 (20)": [200] * 4,
        "validate does not fit": [429],
        "a 2025 session: validate does not fit": [429],
        "not metered": [200] * 6,
        "another tenant": [200],
    }
    assert answers["statement fails in the tool (14)"][0].json()["result"]["isError"] is True
    assert "error" in answers["echo refused by the upstream (16)"][0].json()
    assert all("result" in r.json() for r in answers["not metered"])

    gateway.flush()
    month = "2026-03"
    expected = {
        ("initech", "finance__download_statement"): (1, 1, 1, 0),
        ("initech", "finance__fetch_revenue_data"): (2, 10, 0, 1),
        ("initech", "finance__validate_transaction"): (7, 7, 0, 2),
        ("initech", "rec__echo"): (2, 2, 1, 0),
    }
    initech_rows = stores.usage.month(month, tenant="initech")  # type: ignore[attr-defined]
    every_row = stores.usage.month(month)  # type: ignore[attr-defined]
    assert totals(initech_rows) == expected
    assert totals(every_row) == {**expected, ("umbrella", "finance__validate_transaction"): (1, 1, 0, 0)}
    assert {r.day for r in every_row} == {"2026-03-14"}
    assert sum(r.units for r in initech_rows) == 20
    item = fresh_dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "USAGE#initech"}, "sk": {"S": "2026-03-14"}})
    assert (item["Item"]["day_units"], item["Item"]["month_units"]) == ({"N": "20"}, {"N": "20"})
    assert len(recorder.calls("tools/call")) == 2
