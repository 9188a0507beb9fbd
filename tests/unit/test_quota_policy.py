"""What the quota policy charges a call to, what it costs, which plan applies, and what it keeps
for the finance record: `QuotaEnforcer` over the in-memory ledger (the rule itself, in DynamoDB
and memory alike, is `test_ledger.py`'s)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from tollway.config import parse_config
from tollway.context import Principal
from tollway.errors import ServiceUnavailable
from tollway.policy import quota
from tollway.policy.quota import FLUSH_SECONDS, QuotaEnforcer, QuotaExceeded
from tollway.store.ledger import MemoryLedger
from tollway.store.usage import UsageReader

ALICE = Principal(subject="alice", tenant="acme")
NOON = datetime(2026, 3, 14, 12, 0, 30, tzinfo=UTC).timestamp()


class Clock:
    """Stands in for `time` in tollway.policy.quota."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(NOON)
    monkeypatch.setattr(quota, "time", clock)
    return clock


def enforcer(quotas: dict[str, Any], tenants: dict[str, Any] | None = None) -> QuotaEnforcer:
    config = parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": [{"name": "finance", "url": "http://127.0.0.1:9/mcp"}],
            "quotas": quotas,
            "tenants": tenants or {},
        }
    )
    return QuotaEnforcer(config, MemoryLedger())


def plan(**scopes: Any) -> dict[str, Any]:
    return {"plans": {"p": scopes}, "default_plan": "p"}


def rows(quota_: QuotaEnforcer) -> list[tuple[str, str, int, int, int, int]]:
    return [
        (r.tenant, r.tool, r.calls, r.units, r.errors, r.rejected) for r in UsageReader(quota_.ledger).month("2026-03")
    ]


# --- scopes: tenant, subject, tool ---------------------------------------------------------------
def test_a_call_is_charged_to_its_subject_and_matching_tool_limits_first_and_its_tenant_last() -> None:
    quota_ = enforcer(
        plan(
            tenant={"per_minute": 100, "per_month": 10_000},
            subject={"per_second": 2, "per_day": 50},
            tools={
                "finance__*": {"per_day": 30},
                "finance__run_forecast": {"per_minute": 3},
                "support__*": {"per_day": 1},
            },
        )
    )

    scopes = quota_.scopes(ALICE, "finance__run_forecast")

    assert [(s.pk, s.tenant, [(lim.name, lim.period, lim.max) for lim in s.limits]) for s in scopes] == [
        ("LIMIT#acme#S#alice", None, [("subject per_second", "second", 2), ("subject per_day", "day", 50)]),
        ("LIMIT#acme#T#finance__*", None, [("tool finance__* per_day", "day", 30)]),
        ("LIMIT#acme#T#finance__run_forecast", None, [("tool finance__run_forecast per_minute", "minute", 3)]),
        ("USAGE#acme", "acme", [("tenant per_minute", "minute", 100), ("tenant per_month", "month", 10_000)]),
    ]


def test_a_tenant_without_a_plan_is_charged_to_its_own_scope_only_to_record_usage() -> None:
    quota_ = enforcer({}, tenants={"acme": {}})

    (scope,) = quota_.scopes(ALICE, "finance__x")
    for _ in range(50):
        quota_.admit(ALICE, "finance__x")

    assert (scope.pk, scope.limits) == ("USAGE#acme", ())
    assert rows(quota_) == [("acme", "finance__x", 50, 50, 0, 0)]


def test_two_subjects_of_a_tenant_share_its_scope_but_not_each_others() -> None:
    quota_ = enforcer(plan(tenant={"per_day": 3}, subject={"per_day": 2}))
    bob = Principal(subject="bob", tenant="acme")

    results = [admits(quota_, who) for who in (ALICE, ALICE, ALICE, bob, bob)]

    assert results == [True, True, False, True, False]  # alice's own 2, then bob's 1 fills the tenant's 3


def test_a_tool_limit_applies_only_to_tools_its_pattern_matches() -> None:
    quota_ = enforcer(plan(tools={"finance__run_*": {"per_minute": 1}}))

    assert [admits(quota_, ALICE, "finance__run_forecast") for _ in range(2)] == [True, False]
    assert all(admits(quota_, ALICE, "finance__fetch_revenue_data") for _ in range(5))


def test_a_later_scope_that_refuses_gives_the_earlier_ones_their_units_back() -> None:
    quota_ = enforcer(plan(tenant={"per_day": 2}, subject={"per_day": 3}))
    bob = Principal(subject="bob", tenant="acme")
    admits(quota_, bob)
    admits(quota_, bob)

    assert admits(quota_, ALICE) is False  # the tenant is full: alice's subject charge is refunded
    roomier = QuotaEnforcer(enforcer(plan(tenant={"per_day": 10}, subject={"per_day": 3})).config, quota_.ledger)
    assert [admits(roomier, ALICE) for _ in range(4)] == [True, True, True, False]  # her 3 are all there


def admits(quota_: QuotaEnforcer, who: Principal = ALICE, tool: str = "finance__x") -> bool:
    try:
        quota_.admit(who, tool)
    except QuotaExceeded:
        return False
    return True


# --- costs ---------------------------------------------------------------------------------------
def test_a_tool_costs_what_the_first_matching_pattern_says_and_one_unit_otherwise() -> None:
    quota_ = enforcer(
        {"costs": {"finance__run_forecast": 10, "finance__*": 2, "finance__fetch_revenue_data": 5, "*__ping": 0}}
    )

    assert {
        tool: quota_.cost(tool)
        for tool in (
            "finance__run_forecast",
            "finance__fetch_revenue_data",
            "finance__validate_transaction",
            "support__ping",
            "support__lookup_customer",
            "Finance__run_forecast",
        )
    } == {
        "finance__run_forecast": 10,
        "finance__fetch_revenue_data": 2,  # finance__* comes first
        "finance__validate_transaction": 2,
        "support__ping": 0,
        "support__lookup_customer": 1,
        "Finance__run_forecast": 1,  # patterns are case-sensitive
    }


def test_rates_count_calls_and_quotas_count_cost_units() -> None:
    quota_ = enforcer({**plan(tenant={"per_minute": 3, "per_day": 20}), "costs": {"finance__x": 7}})

    assert [admits(quota_) for _ in range(4)] == [True, True, False, False]  # 14 units; 21 > 20
    quota_.config.quotas.costs["finance__x"] = 1
    assert admits(quota_) is True  # the third call of the minute: one unit still fits the day
    assert admits(quota_) is False  # the minute's 3 calls are spent


def test_a_tool_costing_nothing_is_admitted_under_a_units_quota_and_recorded() -> None:
    quota_ = enforcer({**plan(tenant={"per_day": 1}), "costs": {"finance__free": 0}})

    assert all(admits(quota_, ALICE, "finance__free") for _ in range(5))
    assert rows(quota_) == [("acme", "finance__free", 5, 0, 0, 0)]


def test_a_refusal_names_the_limit_and_when_it_resets() -> None:
    quota_ = enforcer(plan(tenant={"per_day": 1}))
    quota_.admit(ALICE, "finance__x")

    with pytest.raises(QuotaExceeded) as refused:
        quota_.admit(ALICE, "finance__x")

    assert refused.value.data == {
        "limit": "tenant per_day",
        "max": 1,
        "resetAt": "2026-03-15T00:00:00+00:00",
        "retryAfterSeconds": 43170,
    }
    assert refused.value.headers == {"retry-after": "43170"}


# --- which plan ----------------------------------------------------------------------------------
PLANS = {
    "gold": {"tenant": {"per_minute": 1000}},
    "silver": {"tenant": {"per_minute": 100}},
    "bronze": {"tenant": {"per_minute": 10}},
}


def limit_of(quota_: QuotaEnforcer, tenant: str) -> int | None:
    *_, own = quota_.scopes(Principal(subject="alice", tenant=tenant), "finance__x")
    return own.limits[0].max if own.limits else None


def test_a_tenant_gets_its_own_plan_else_the_star_plan_else_the_default_plan() -> None:
    quota_ = enforcer(
        {"plans": PLANS, "default_plan": "bronze"},
        tenants={"acme": {"plan": "gold"}, "initech": {}, "*": {"plan": "silver"}},
    )

    assert {t: limit_of(quota_, t) for t in ("acme", "globex", "initech")} == {
        "acme": 1000,  # its own plan
        "globex": 100,  # not listed: the "*" policy's plan
        "initech": 10,  # listed without a plan: the default plan (the "*" entry is for unlisted tenants)
    }


def test_without_a_star_plan_an_unlisted_tenant_gets_the_default_plan() -> None:
    quota_ = enforcer({"plans": PLANS, "default_plan": "silver"}, tenants={"acme": {"plan": "gold"}})

    assert (limit_of(quota_, "acme"), limit_of(quota_, "globex")) == (1000, 100)


# --- the finance record --------------------------------------------------------------------------
def test_an_admission_records_the_call_and_a_failed_outcome_adds_its_error_at_once() -> None:
    quota_ = enforcer({"costs": {"finance__x": 3}})

    admission = quota_.admit(ALICE, "finance__x")
    due = quota_.settle(ALICE, "finance__x", admission, error=True, latency_ms=12.4)
    quota_.flush_due()

    assert due is True
    assert rows(quota_) == [("acme", "finance__x", 1, 3, 1, 0)]


def test_latency_and_refusals_ride_on_the_tenants_next_write(clock: Clock) -> None:
    quota_ = enforcer(plan(tenant={"per_minute": 1}))
    first = quota_.admit(ALICE, "finance__x")
    assert quota_.settle(ALICE, "finance__x", first, error=False, latency_ms=40) is False
    admits(quota_)  # refused
    reader = UsageReader(quota_.ledger)
    assert [(r.latency_ms, r.rejected) for r in reader.month("2026-03")] == [(0, 0)]  # not written yet

    clock.now += 60
    quota_.admit(ALICE, "finance__x")

    assert [(r.calls, r.latency_ms, r.rejected) for r in reader.month("2026-03")] == [(2, 40, 1)]


def test_counters_waiting_longer_than_the_flush_interval_get_their_own_write(clock: Clock) -> None:
    quota_ = enforcer({})
    admission = quota_.admit(ALICE, "finance__x")
    quota_.settle(ALICE, "finance__x", admission, error=False, latency_ms=40)

    clock.now += FLUSH_SECONDS
    bob = Principal("bob", "globex")
    assert quota_.settle(bob, "finance__y", quota_.admit(bob, "finance__y"), error=False, latency_ms=1) is True
    quota_.flush_due()

    # acme's latency waited a whole interval: written; globex's own is still waiting for a write.
    assert {(r.tenant, r.latency_ms) for r in UsageReader(quota_.ledger).month("2026-03")} == {
        ("acme", 40),
        ("globex", 0),
    }


@pytest.mark.parametrize("failure_policy", ["closed", "open"])
def test_when_the_ledger_fails_a_closed_tenant_is_refused_and_an_open_one_is_recorded_later(
    failure_policy: str,
) -> None:
    quota_ = enforcer({**plan(tenant={"per_day": 100}), "failure_policy": failure_policy})
    quota_.ledger.fail_with = ConnectionError("down")  # type: ignore[attr-defined]

    if failure_policy == "closed":
        with pytest.raises(ServiceUnavailable):
            quota_.admit(ALICE, "finance__x")
    else:
        quota_.admit(ALICE, "finance__x")
    quota_.ledger.fail_with = None  # type: ignore[attr-defined]
    quota_.admit(ALICE, "finance__x")

    expected_calls = 1 if failure_policy == "closed" else 2
    assert rows(quota_) == [("acme", "finance__x", expected_calls, expected_calls, 0, 0)]


# --- leases ----------------------------------------------------------------------------------------
def test_with_leases_an_instance_writes_once_per_lease_and_its_calls_are_recorded_with_the_next() -> None:
    quota_ = enforcer({**plan(tenant={"per_day": 10_000}), "lease_units": 10})
    writes: list[int] = []
    charge = quota_.ledger.charge
    quota_.ledger.charge = lambda c, at: writes.append(c.units) or charge(c, at)  # type: ignore[method-assign]

    for _ in range(25):
        quota_.admit(ALICE, "finance__x")

    assert writes == [10, 10, 10]
    assert rows(quota_) == [("acme", "finance__x", 21, 21, 0, 0)]  # the last 4 ride on the next write


def test_a_lease_that_does_not_fit_falls_back_to_the_calls_own_units() -> None:
    quota_ = enforcer({**plan(tenant={"per_day": 1000}), "lease_units": 100})  # lease min(100, 1000 // 50) = 20

    assert sum(admits(quota_) for _ in range(1100)) == 1000


def test_scopes_with_a_rate_are_charged_per_call_even_with_leases() -> None:
    quota_ = enforcer({**plan(tenant={"per_minute": 5, "per_day": 10_000}), "lease_units": 10})

    assert [admits(quota_) for _ in range(6)] == [True] * 5 + [False]


def test_without_usage_records_a_tenant_without_a_plan_costs_no_write() -> None:
    config = enforcer({}).config.model_copy(
        update={"finance": enforcer({}).config.finance.model_copy(update={"record_usage": False})}
    )
    quota_ = QuotaEnforcer(config, MemoryLedger())

    admission = quota_.admit(ALICE, "finance__x")

    assert quota_.blocking(ALICE) is False
    assert quota_.settle(ALICE, "finance__x", admission, error=True, latency_ms=5) is False
    assert quota_.ledger.items == {}  # type: ignore[attr-defined]


def test_a_successor_enforcer_writes_the_counters_its_predecessor_still_held() -> None:
    """A live config change replaces the enforcer: latency and refusals still waiting go on."""
    before = enforcer(plan(tenant={"per_minute": 1}))
    admission = before.admit(ALICE, "finance__x")
    before.settle(ALICE, "finance__x", admission, error=False, latency_ms=40)
    admits(before)  # refused

    after = QuotaEnforcer(enforcer({}).config, before.ledger)
    after.take_pending(before)
    after.flush_all()
    before.flush_all()  # nothing left there: written once

    assert [(r.calls, r.rejected, r.latency_ms) for r in UsageReader(after.ledger).month("2026-03")] == [(1, 1, 40)]
