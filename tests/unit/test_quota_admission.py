"""What the quota enforcer admits and charges at the edges: a tool that costs nothing, a call that
costs more than the whole limit (refused alike by the in-memory and the DynamoDB counters), a call
whose lease window ends while it is charged, and a DynamoDB write that meets a concurrent
transaction (retried, so the call is charged).

`QuotaEnforcer.admit` runs against an in-memory counter store, moto's DynamoDB, or a stand-in
client that answers as DynamoDB does; the quota module's clock is replaced where time matters.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tollway.config import parse_config
from tollway.context import Principal
from tollway.policy import quota
from tollway.policy.quota import QuotaEnforcer, QuotaExceeded
from tollway.store.counters import DynamoCounterStore, MemoryCounterStore

ALICE = Principal(subject="alice", tenant="acme")
TABLE = "tollway-quota-admission"
NOON = datetime(2026, 3, 14, 12, 0, 30, tzinfo=UTC).timestamp()


class Clock:
    """Stands in for `time` in tollway.policy.quota: returns `times` in turn, then the last one forever."""

    def __init__(self, *times: float) -> None:
        self.times = list(times)

    def time(self) -> float:
        return self.times.pop(0) if len(self.times) > 1 else self.times[0]


def config_data(quotas: dict[str, Any]) -> dict[str, Any]:
    return {
        "resource": "https://gateway.example.com/mcp",
        "auth": {"allow_anonymous": True},
        "upstreams": [{"name": "rec", "url": "http://127.0.0.1:9/mcp"}],
        "quotas": quotas,
    }


# --- a free tool (cost 0) under a units quota -------------------------------------------------------
FREE = {
    "plans": {"p": {"tenant": {"per_minute": 100, "per_day": 100}}},
    "default_plan": "p",
    "costs": {"rec__echo": 0},
}


def test_a_tool_costing_nothing_is_admitted_under_a_daily_units_quota() -> None:
    enforcer = QuotaEnforcer(parse_config(config_data(FREE)), MemoryCounterStore())

    admission = enforcer.admit(ALICE, "rec__echo")  # the per_day window, charged 0, holds no lease

    assert admission.units == 0


# --- a call costing more than the whole limit -----------------------------------------------------
@pytest.fixture(scope="module")
def table_name() -> str:
    return TABLE


def test_a_call_costing_more_than_the_whole_quota_is_refused_by_dynamodb_as_by_memory(fresh_dynamodb: Any) -> None:
    config = parse_config(
        config_data({"plans": {"p": {"tenant": {"per_day": 5}}}, "default_plan": "p", "costs": {"rec__echo": 10}})
    )
    in_memory = QuotaEnforcer(config, MemoryCounterStore())
    in_dynamodb = QuotaEnforcer(config, DynamoCounterStore(TABLE, fresh_dynamodb))

    with pytest.raises(QuotaExceeded):
        in_memory.admit(ALICE, "rec__echo")
    # A condition `attribute_not_exists(used) OR used <= :room` alone would pass on a new window
    # whatever :room (here -5) is.
    with pytest.raises(QuotaExceeded):
        in_dynamodb.admit(ALICE, "rec__echo")


# --- leases: a held lease whose window ends during another window's write ---------------------------
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
    # by when the minute lease it relies on has expired and been pruned.
    monkeypatch.setattr(quota, "time", Clock(NOON + 29.999, NOON + 30.010))

    assert enforcer.admit(ALICE, "rec__echo").units == 3


# --- DynamoDB transaction conflicts are not "the store is unavailable" -----------------------------
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

    enforcer.admit(ALICE, "rec__echo")  # neither QuotaUnavailable (closed) nor admitted without a charge (open)

    assert client.writes == 2, "the conflicting write is retried, so the admitted call is charged"
