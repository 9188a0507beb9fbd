"""Which windows a call is charged to, when each one resets, and what a call costs.

`QuotaEnforcer.windows(principal, tool, at)` is pure: it reads the config and the instant, so
every boundary (second, minute, day, month, leap day, year end) is checked at a chosen time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from tollway.config import parse_config
from tollway.context import Principal
from tollway.policy.quota import QuotaEnforcer
from tollway.store.counters import MemoryCounterStore

ALICE = Principal(subject="alice", tenant="acme")


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
    return QuotaEnforcer(config, MemoryCounterStore())


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def only_window(period: str, moment: float) -> tuple[str, str]:
    """(window id, reset time) of the one `period` window a call at `moment` touches."""
    (window, _), *others = enforcer({"plans": {"p": {"tenant": {period: 5}}}, "default_plan": "p"}).windows(
        ALICE, "finance__run_forecast", moment
    )
    assert others == []
    return window.sk, iso(window.resets_at)


# --- window ids and reset times ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("moment", "window", "resets"),
    [
        ("2026-03-14T12:00:30", "per_second#1773489630", "2026-03-14T12:00:31+00:00"),
        ("2026-03-14T12:00:30.999999", "per_second#1773489630", "2026-03-14T12:00:31+00:00"),
        ("2026-12-31T23:59:59.5", "per_second#1798761599", "2027-01-01T00:00:00+00:00"),
    ],
)
def test_a_second_window_starts_on_the_whole_second_and_resets_at_the_next(
    moment: str, window: str, resets: str
) -> None:
    assert only_window("per_second", at(moment)) == (window, resets)


@pytest.mark.parametrize(
    ("moment", "window", "resets"),
    [
        ("2026-03-14T12:00:00", "per_minute#1773489600", "2026-03-14T12:01:00+00:00"),
        ("2026-03-14T12:00:59.999", "per_minute#1773489600", "2026-03-14T12:01:00+00:00"),
        ("2026-03-14T12:01:00", "per_minute#1773489660", "2026-03-14T12:02:00+00:00"),
        ("2026-03-14T23:59:30", "per_minute#1773532740", "2026-03-15T00:00:00+00:00"),
    ],
)
def test_a_minute_window_starts_on_the_whole_minute_and_resets_at_the_next(
    moment: str, window: str, resets: str
) -> None:
    assert only_window("per_minute", at(moment)) == (window, resets)


@pytest.mark.parametrize(
    ("moment", "window", "resets"),
    [
        ("2026-03-14T00:00:00", "per_day#2026-03-14", "2026-03-15T00:00:00+00:00"),
        ("2026-03-14T23:59:59.999", "per_day#2026-03-14", "2026-03-15T00:00:00+00:00"),
        ("2024-02-28T12:00:00", "per_day#2024-02-28", "2024-02-29T00:00:00+00:00"),
        ("2024-02-29T12:00:00", "per_day#2024-02-29", "2024-03-01T00:00:00+00:00"),
        ("2026-12-31T18:00:00", "per_day#2026-12-31", "2027-01-01T00:00:00+00:00"),
    ],
)
def test_a_day_window_is_the_utc_date_and_resets_at_utc_midnight(moment: str, window: str, resets: str) -> None:
    assert only_window("per_day", at(moment)) == (window, resets)


@pytest.mark.parametrize(
    ("moment", "window", "resets"),
    [
        ("2026-01-31T23:59:59", "per_month#2026-01", "2026-02-01T00:00:00+00:00"),
        ("2026-02-01T00:00:00", "per_month#2026-02", "2026-03-01T00:00:00+00:00"),
        ("2026-02-28T23:59:59", "per_month#2026-02", "2026-03-01T00:00:00+00:00"),
        ("2024-02-29T23:59:59", "per_month#2024-02", "2024-03-01T00:00:00+00:00"),
        ("2000-02-15T00:00:00", "per_month#2000-02", "2000-03-01T00:00:00+00:00"),
        ("2100-02-15T00:00:00", "per_month#2100-02", "2100-03-01T00:00:00+00:00"),
        ("2026-04-30T12:00:00", "per_month#2026-04", "2026-05-01T00:00:00+00:00"),
        ("2026-12-31T23:59:59.999", "per_month#2026-12", "2027-01-01T00:00:00+00:00"),
    ],
    ids=["jan-31", "feb-1", "feb-28", "leap-feb-29", "leap-2000", "no-leap-2100", "april", "year-end"],
)
def test_a_month_window_is_the_utc_month_and_resets_on_the_first_of_the_next(
    moment: str, window: str, resets: str
) -> None:
    assert only_window("per_month", at(moment)) == (window, resets)


def test_a_leap_february_has_a_day_more_to_reset_than_a_common_one() -> None:
    _, leap = only_window("per_month", at("2024-02-28T00:00:00"))
    _, common = only_window("per_month", at("2026-02-28T00:00:00"))

    assert (leap, common) == ("2024-03-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00")


# --- scopes: tenant, subject, tool ---------------------------------------------------------------
def test_a_call_is_charged_to_its_tenant_its_subject_and_every_matching_tool_limit() -> None:
    plan = {
        "tenant": {"per_minute": 100, "per_month": 10_000},
        "subject": {"per_second": 2, "per_day": 50},
        "tools": {
            "finance__*": {"per_day": 30},
            "finance__run_forecast": {"per_minute": 3},
            "support__*": {"per_day": 1},
        },
    }
    quota = enforcer({"plans": {"p": plan}, "default_plan": "p", "costs": {"finance__run_forecast": 4}})

    charges = quota.windows(ALICE, "finance__run_forecast", at("2026-03-14T12:00:30"))

    assert [(w.name, w.pk, w.sk, w.limit, units) for w, units in charges] == [
        ("tenant per_minute", "LIMIT#acme", "per_minute#1773489600", 100, 1),
        ("tenant per_month", "LIMIT#acme", "per_month#2026-03", 10_000, 4),
        ("subject per_second", "LIMIT#acme#S#alice", "per_second#1773489630", 2, 1),
        ("subject per_day", "LIMIT#acme#S#alice", "per_day#2026-03-14", 50, 4),
        ("tool finance__* per_day", "LIMIT#acme#T#finance__*", "per_day#2026-03-14", 30, 4),
        ("tool finance__run_forecast per_minute", "LIMIT#acme#T#finance__run_forecast", "per_minute#1773489600", 3, 1),
    ]


def test_rates_count_calls_and_quotas_count_cost_units() -> None:
    plan = {"tenant": {"per_second": 10, "per_minute": 10, "per_day": 100, "per_month": 1000}}
    quota = enforcer({"plans": {"p": plan}, "default_plan": "p", "costs": {"finance__run_forecast": 7}})

    charges = quota.windows(ALICE, "finance__run_forecast", at("2026-03-14T12:00:30"))

    assert {w.name: units for w, units in charges} == {
        "tenant per_second": 1,
        "tenant per_minute": 1,
        "tenant per_day": 7,
        "tenant per_month": 7,
    }


def test_two_subjects_of_a_tenant_share_its_windows_but_not_each_others() -> None:
    quota = enforcer({"plans": {"p": {"tenant": {"per_day": 9}, "subject": {"per_day": 3}}}, "default_plan": "p"})
    moment = at("2026-03-14T12:00:30")

    alice = {w.name: w for w, _ in quota.windows(ALICE, "finance__x", moment)}
    bob = {w.name: w for w, _ in quota.windows(Principal(subject="bob", tenant="acme"), "finance__x", moment)}

    assert alice["tenant per_day"] == bob["tenant per_day"]
    assert alice["subject per_day"] != bob["subject per_day"]
    assert bob["subject per_day"].pk == "LIMIT#acme#S#bob"


def test_a_tool_limit_applies_only_to_tools_its_pattern_matches() -> None:
    quota = enforcer({"plans": {"p": {"tools": {"finance__run_*": {"per_minute": 3}}}}, "default_plan": "p"})
    moment = at("2026-03-14T12:00:30")

    assert [w.name for w, _ in quota.windows(ALICE, "finance__run_forecast", moment)] == [
        "tool finance__run_* per_minute"
    ]
    assert quota.windows(ALICE, "finance__fetch_revenue_data", moment) == []
    assert quota.windows(ALICE, "support__run_report", moment) == []


# --- costs ---------------------------------------------------------------------------------------
def test_a_tool_costs_what_the_first_matching_pattern_says_and_one_unit_otherwise() -> None:
    quota = enforcer(
        {"costs": {"finance__run_forecast": 10, "finance__*": 2, "finance__fetch_revenue_data": 5, "*__ping": 0}}
    )

    assert {
        tool: quota.cost(tool)
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


def test_an_admission_prices_the_call_once_and_charges_that_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    quota = enforcer({"plans": {"p": {"tenant": {"per_day": 100}}}, "default_plan": "p", "costs": {"finance__*": 7}})
    priced: list[str] = []
    cost = quota.cost
    monkeypatch.setattr(quota, "cost", lambda tool: priced.append(tool) or cost(tool))

    admission = quota.admit(ALICE, "finance__run_forecast")

    assert (admission.units, priced) == (7, ["finance__run_forecast"])
    assert list(quota.store.used.values()) == [7]  # type: ignore[attr-defined]
    moment = at("2026-03-14T12:00:30")
    assert quota.windows(ALICE, "finance__x", moment, units=7) == quota.windows(ALICE, "finance__x", moment)


# --- which plan ----------------------------------------------------------------------------------
PLANS = {
    "gold": {"tenant": {"per_minute": 1000}},
    "silver": {"tenant": {"per_minute": 100}},
    "bronze": {"tenant": {"per_minute": 10}},
}


def limit_of(quota: QuotaEnforcer, tenant: str) -> int | None:
    charges = quota.windows(Principal(subject="alice", tenant=tenant), "finance__x", at("2026-03-14T12:00:30"))
    return charges[0][0].limit if charges else None


def test_a_tenant_gets_its_own_plan_else_the_star_plan_else_the_default_plan() -> None:
    quota = enforcer(
        {"plans": PLANS, "default_plan": "bronze"},
        tenants={"acme": {"plan": "gold"}, "initech": {}, "*": {"plan": "silver"}},
    )

    assert {t: limit_of(quota, t) for t in ("acme", "globex", "initech")} == {
        "acme": 1000,  # its own plan
        "globex": 100,  # not listed: the "*" policy's plan
        "initech": 10,  # listed without a plan: the default plan (the "*" entry is for unlisted tenants)
    }


def test_without_a_star_plan_an_unlisted_tenant_gets_the_default_plan() -> None:
    quota = enforcer({"plans": PLANS, "default_plan": "silver"}, tenants={"acme": {"plan": "gold"}})

    assert (limit_of(quota, "acme"), limit_of(quota, "globex")) == (1000, 100)


def test_a_tenant_with_no_plan_and_no_default_plan_is_not_limited_and_nothing_is_written() -> None:
    quota = enforcer({"plans": PLANS}, tenants={"acme": {}})
    store = quota.store

    admissions = [quota.admit(Principal(subject="alice", tenant="acme"), "finance__x") for _ in range(50)]

    assert quota.windows(ALICE, "finance__x", at("2026-03-14T12:00:30")) == []
    assert {a.units for a in admissions} == {1}
    assert store.used == {}  # type: ignore[attr-defined]
