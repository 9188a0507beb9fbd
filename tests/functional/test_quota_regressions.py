"""Quota regressions: behaviour that must hold and that an earlier version got wrong (free tools,
charges larger than a limit, leases across a window boundary, DynamoDB transaction conflicts)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from starlette.testclient import TestClient
from tollway.config import parse_config
from tollway.context import Principal
from tollway.http import create_app
from tollway.policy import quota
from tollway.policy.quota import QuotaEnforcer, QuotaExceeded
from tollway.store import Stores
from tollway.store.counters import DynamoCounterStore, MemoryCounterStore
from tollway.store.tables import ensure_tables, find_template

from tests.fixtures.recording_upstream import Caller, RecordingUpstream

ALICE = Principal(subject="alice", tenant="acme")
NOON = datetime(2026, 3, 14, 12, 0, 30, tzinfo=UTC).timestamp()


class Clock:
    """Stands in for `time` in tollway.policy.quota: returns `times` in turn, then the last one forever."""

    def __init__(self, *times: float) -> None:
        self.times = list(times)

    def time(self) -> float:
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


def config_data(quotas: dict[str, Any], upstream: str = "http://127.0.0.1:9/mcp") -> dict[str, Any]:
    return {
        "resource": "https://gateway.example.com/mcp",
        "auth": {"allow_anonymous": True},
        "upstreams": [{"name": "rec", "url": upstream}],
        "quotas": quotas,
    }


# --- 1. a free tool (cost 0) under a units quota ---------------------------------------------------
FREE = {
    "plans": {"p": {"tenant": {"per_minute": 100, "per_day": 100}}},
    "default_plan": "p",
    "costs": {"rec__echo": 0},
}


def test_a_tool_costing_nothing_is_admitted_under_a_daily_units_quota() -> None:
    enforcer = QuotaEnforcer(parse_config(config_data(FREE)), MemoryCounterStore())

    admission = enforcer.admit(ALICE, "rec__echo")  # KeyError: the per_day window, charged 0, has no lease entry

    assert admission.units == 0


def test_a_caller_of_a_free_tool_gets_its_result_not_an_internal_error() -> None:
    with RecordingUpstream().running() as upstream:
        app = create_app(parse_config(config_data(FREE, upstream.url)), stores=Stores.memory(), streaming=False)
        with TestClient(app, raise_server_exceptions=False) as client:
            response = Caller(client, None).modern("tools/call", {"name": "rec__echo", "arguments": {}})

        assert response.json().get("result", {}).get("isError") is False, response.text
        assert len(upstream.calls("tools/call")) == 1


# --- 2. DynamoDB admits a call costing more than the whole limit, once per window ------------------
@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb")
        ensure_tables(client, find_template(), {"TollwayTable": "tollway-bugs"})
        yield client


def test_a_call_costing_more_than_the_whole_quota_is_refused_by_dynamodb_as_by_memory(dynamodb: Any) -> None:
    config = parse_config(
        config_data({"plans": {"p": {"tenant": {"per_day": 5}}}, "default_plan": "p", "costs": {"rec__echo": 10}})
    )
    in_memory = QuotaEnforcer(config, MemoryCounterStore())
    in_dynamodb = QuotaEnforcer(config, DynamoCounterStore("tollway-bugs", dynamodb))

    with pytest.raises(QuotaExceeded):
        in_memory.admit(ALICE, "rec__echo")
    # `attribute_not_exists(used) OR used <= :room` passes on a new window whatever :room (here -5) is.
    with pytest.raises(QuotaExceeded):
        in_dynamodb.admit(ALICE, "rec__echo")


# --- 3. leases: a held lease whose window ends during another window's write -----------------------
def test_a_lease_call_that_straddles_a_minute_boundary_is_admitted(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(
        config_data(
            {
                "plans": {"p": {"tenant": {"per_minute": 1000, "per_day": 1000}}},
                "default_plan": "p",
                "costs": {"rec__echo": 3},
                "lease_units": 10,
            }
        )
    )
    enforcer = QuotaEnforcer(config, MemoryCounterStore())
    monkeypatch.setattr(quota, "time", Clock(NOON))
    for _ in range(3):  # per_minute lease: 10 - 3 = 7 left; per_day lease: 10 - 9 = 1 left (< 3)
        enforcer.admit(ALICE, "rec__echo")

    # The 4th call starts at :59.999 and renews only the day lease; the write returns at :00.010,
    # the minute lease it relies on is pruned as expired, and `self._leases[window] -= 1` raises KeyError.
    monkeypatch.setattr(quota, "time", Clock(NOON + 29.999, NOON + 30.010))

    assert enforcer.admit(ALICE, "rec__echo").units == 3


# --- 4. DynamoDB transaction conflicts are not "the store is unavailable" -------------------------
class ConflictingDynamoDB:
    """DynamoDB as documented for concurrent TransactWriteItems on one item: the later one is
    cancelled with reason TransactionConflict (botocore does not retry it). `conflicts` calls
    conflict, the rest succeed."""

    def __init__(self, conflicts: int) -> None:
        self.conflicts = conflicts
        self.writes = 0

    def transact_write_items(self, TransactItems: list[dict[str, Any]]) -> dict[str, Any]:
        self.writes += 1
        if self.conflicts > 0:
            self.conflicts -= 1
            reasons = [{"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}] + [
                {"Code": "None"} for _ in TransactItems[1:]
            ]
            error = {"Code": "TransactionCanceledException", "Message": "Transaction cancelled [TransactionConflict]"}
            raise ClientError({"Error": error, "CancellationReasons": reasons}, "TransactWriteItems")
        return {}


@pytest.mark.parametrize("failure_policy", ["closed", "open"])
def test_a_call_that_meets_a_concurrent_transaction_is_charged_and_admitted(failure_policy: str) -> None:
    config = parse_config(
        config_data(
            {
                "plans": {"p": {"tenant": {"per_minute": 100}}},
                "default_plan": "p",
                "failure_policy": failure_policy,
            }
        )
    )
    client = ConflictingDynamoDB(conflicts=1)
    enforcer = QuotaEnforcer(config, DynamoCounterStore("tollway", client))

    enforcer.admit(ALICE, "rec__echo")  # closed: QuotaUnavailable (503); open: admitted without a charge

    assert client.writes == 2, "the conflicting write is retried, so the admitted call is charged"


# --- 4. a call admitted (units charged) that fails before reaching the upstream --------------------
def test_units_charged_for_a_call_whose_argument_masking_fails_are_recorded_as_usage() -> None:
    # The hash key's secret cannot be read (no such secret): masking the arguments fails after
    # the quota admitted the call. The caller gets a plain internal error, the upstream nothing,
    # and finance still sees the call (as an error) with its units.
    data = config_data({"plans": {"p": {"tenant": {"per_day": 100}}}, "default_plan": "p", "costs": {"rec__echo": 3}})
    data["masking"] = {
        "hash_key_secret": "tollway/missing-hash-key",
        "tools": {"rec__echo": {"arguments": [{"path": "account", "action": "hash"}]}},
    }
    stores = Stores.memory()
    with mock_aws(), RecordingUpstream().running() as upstream:
        data["upstreams"][0]["url"] = upstream.url
        app = create_app(parse_config(data), stores=stores, streaming=False)
        with TestClient(app, raise_server_exceptions=False) as client:
            response = Caller(client, None).modern("tools/call", {"name": "rec__echo", "arguments": {"account": "A1"}})

        assert response.json()["error"] == {"code": -32603, "message": "Internal error"}, response.text
        assert upstream.calls("tools/call") == []
    [row] = stores.usage.month(datetime.now(UTC).strftime("%Y-%m"), "default")
    assert (row.tool, row.calls, row.units, row.errors) == ("rec__echo", 1, 3, 1)
