"""The ledger's one rule, in DynamoDB (moto, in-process) and in memory alike: rates as GCRA, day
and month units, a month carried across days, a late write after midnight, the finance record.

Every test runs against both ledgers: the in-memory one is what `Stores.memory()` gives the
functional tests, so it must decide exactly as the DynamoDB expressions do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from tollway.store.ledger import Charge, DynamoLedger, Ledger, Limit, LimitReached, MemoryLedger, Scope, day_of
from tollway.store.usage import UsageReader

from tests.conftest import moto_table

NOON = datetime(2026, 3, 14, 12, 0, 30, tzinfo=UTC).timestamp()
DAY = 86400.0


@pytest.fixture(params=["dynamodb", "memory"])
def ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    if request.param == "memory":
        yield MemoryLedger()
        return
    with moto_table("ledger") as client:
        yield DynamoLedger("ledger", client)


def tenant(*limits: Limit, name: str = "acme") -> Scope:
    return Scope(f"USAGE#{name}", limits, tenant=name)


def call(tool: str = "t", units: int = 1) -> dict[str, int]:
    return {f"c:{tool}": 1, f"u:{tool}": units}


def admitted(ledger: Ledger, scope: Scope, moments: list[float], units: int = 1, tool: str = "t") -> list[bool]:
    results = []
    for moment in moments:
        try:
            ledger.charge(Charge(scope, 1, units, call(tool, units) if scope.tenant else {}), moment)
        except LimitReached:
            results.append(False)
        else:
            results.append(True)
    return results


def refusal(ledger: Ledger, scope: Scope, moment: float, units: int = 1) -> LimitReached:
    with pytest.raises(LimitReached) as caught:
        ledger.charge(Charge(scope, 1, units, {}), moment)
    return caught.value


# --- rates ---------------------------------------------------------------------------------------
def test_a_rate_admits_its_whole_burst_at_once_and_refuses_the_next_call(ledger: Ledger) -> None:
    scope = tenant(Limit("tenant per_second", "second", 3))

    assert admitted(ledger, scope, [NOON] * 4) == [True, True, True, False]


def test_a_refused_rate_names_itself_and_says_when_a_call_fits_again(ledger: Ledger) -> None:
    scope = tenant(Limit("tenant per_minute", "minute", 4))
    admitted(ledger, scope, [NOON] * 4)

    refused = refusal(ledger, scope, NOON)

    assert (refused.limit.name, refused.retry_after, refused.resets_at) == ("tenant per_minute", 15.0, NOON + 15)


def test_a_rate_refills_continuously_one_call_per_period_over_max(ledger: Ledger) -> None:
    scope = tenant(Limit("tenant per_minute", "minute", 4))
    admitted(ledger, scope, [NOON] * 4)

    assert admitted(ledger, scope, [NOON + 14.9, NOON + 15, NOON + 15, NOON + 30]) == [False, True, False, True]


def test_a_steady_caller_at_the_rate_is_never_refused(ledger: Ledger) -> None:
    scope = tenant(Limit("tenant per_second", "second", 10))

    assert all(admitted(ledger, scope, [NOON + i / 10 for i in range(50)]))


def test_a_changed_rate_starts_from_a_full_burst(ledger: Ledger) -> None:
    admitted(ledger, tenant(Limit("tenant per_second", "second", 2)), [NOON] * 2)

    assert admitted(ledger, tenant(Limit("tenant per_second", "second", 3)), [NOON] * 4) == [True, True, True, False]


# --- day and month units -------------------------------------------------------------------------
def test_a_day_counts_units_and_resets_at_utc_midnight(ledger: Ledger) -> None:
    scope = tenant(Limit("tenant per_day", "day", 10))

    assert admitted(ledger, scope, [NOON] * 4, units=3) == [True, True, True, False]
    refused = refusal(ledger, scope, NOON, units=3)
    assert (refused.limit.name, datetime.fromtimestamp(refused.resets_at, UTC).isoformat()) == (
        "tenant per_day",
        "2026-03-15T00:00:00+00:00",
    )
    assert admitted(ledger, scope, [NOON], units=1) == [True]  # one unit still fits
    assert admitted(ledger, scope, [NOON + DAY], units=3) == [True]


def test_a_charge_larger_than_the_limit_is_refused_even_on_an_empty_day(ledger: Ledger) -> None:
    assert refusal(ledger, tenant(Limit("tenant per_day", "day", 5)), NOON, units=6).limit.name == "tenant per_day"


def test_a_month_carries_its_units_from_day_to_day_and_resets_on_the_first(ledger: Ledger) -> None:
    scope = tenant(Limit("tenant per_month", "month", 5))

    assert admitted(ledger, scope, [NOON, NOON + DAY, NOON + 3 * DAY], units=2) == [True, True, False]
    assert admitted(ledger, scope, [NOON + 3 * DAY], units=1) == [True]
    refused = refusal(ledger, scope, NOON + 4 * DAY)
    assert datetime.fromtimestamp(refused.resets_at, UTC).isoformat() == "2026-04-01T00:00:00+00:00"
    assert admitted(ledger, scope, [datetime(2026, 4, 1, tzinfo=UTC).timestamp()], units=5) == [True]


def test_december_resets_on_the_first_of_january(ledger: Ledger) -> None:
    new_years_eve = datetime(2026, 12, 31, 23, 59, tzinfo=UTC).timestamp()
    scope = tenant(Limit("tenant per_month", "month", 1))

    assert admitted(ledger, scope, [new_years_eve, new_years_eve], units=1) == [True, False]
    refused = refusal(ledger, scope, new_years_eve)
    assert datetime.fromtimestamp(refused.resets_at, UTC).isoformat() == "2027-01-01T00:00:00+00:00"


def test_a_write_from_a_clock_behind_midnight_lands_on_the_new_day_and_the_month_stays_exact(ledger: Ledger) -> None:
    scope = tenant(Limit("tenant per_month", "month", 4))
    admitted(ledger, scope, [NOON], units=2)
    admitted(ledger, scope, [NOON + DAY], units=1)  # the new day's first write closes the old day

    assert admitted(ledger, scope, [NOON + 60], units=1) == [True]  # a late instance, yesterday by its clock
    assert admitted(ledger, scope, [NOON + DAY], units=1) == [False]
    rows = UsageReader(ledger).month("2026-03", "acme")
    assert [(r.day, r.units) for r in rows] == [("2026-03-14", 2), ("2026-03-15", 2)]


def test_every_limit_of_a_scope_holds_in_one_charge(ledger: Ledger) -> None:
    scope = tenant(
        Limit("tenant per_second", "second", 5),
        Limit("tenant per_day", "day", 4),
        Limit("tenant per_month", "month", 100),
    )

    assert admitted(ledger, scope, [NOON] * 5) == [True] * 4 + [False]
    assert refusal(ledger, scope, NOON + 10).limit.name == "tenant per_day"


# --- the finance record --------------------------------------------------------------------------
def test_a_charge_records_calls_and_units_per_tool_and_later_counters_add_up(ledger: Ledger) -> None:
    scope = tenant()
    admitted(ledger, scope, [NOON, NOON], units=3, tool="finance__run_forecast")
    admitted(ledger, scope, [NOON], units=1, tool="support__lookup")
    ledger.add(
        scope, "2026-03-14", {"e:finance__run_forecast": 1, "l:finance__run_forecast": 250, "r:support__lookup": 2}
    )

    rows = UsageReader(ledger).month("2026-03", "acme")

    assert [(r.tool, r.calls, r.units, r.errors, r.rejected, r.latency_ms) for r in rows] == [
        ("finance__run_forecast", 2, 6, 1, 0, 250),
        ("support__lookup", 1, 1, 0, 2, 0),
    ]


def test_a_refused_charge_records_nothing(ledger: Ledger) -> None:
    scope = tenant(Limit("tenant per_day", "day", 1))
    admitted(ledger, scope, [NOON, NOON])

    assert [(r.calls, r.units) for r in UsageReader(ledger).month("2026-03")] == [(1, 1)]


def test_the_month_of_every_tenant_reads_each_tenants_own_rows(ledger: Ledger) -> None:
    admitted(ledger, tenant(name="acme"), [NOON], tool="a")
    admitted(ledger, tenant(name="acme#x"), [NOON + DAY], units=4, tool="b")
    admitted(ledger, tenant(name="globex"), [datetime(2026, 4, 1, tzinfo=UTC).timestamp()], tool="c")

    rows = UsageReader(ledger).month("2026-03")

    assert [(r.tenant, r.day, r.tool, r.units) for r in rows] == [
        ("acme", "2026-03-14", "a", 1),
        ("acme#x", "2026-03-15", "b", 4),
    ]


def test_a_limit_scope_holds_no_finance_record(ledger: Ledger) -> None:
    admitted(ledger, Scope("LIMIT#acme#S#alice", (Limit("subject per_day", "day", 5),)), [NOON])

    assert UsageReader(ledger).month("2026-03") == []


def test_a_refund_gives_the_units_back(ledger: Ledger) -> None:
    scope = Scope("LIMIT#acme#S#alice", (Limit("subject per_day", "day", 2),))
    admitted(ledger, scope, [NOON, NOON])

    ledger.refund(Charge(scope, 1, 1), "2026-03-14")

    assert admitted(ledger, scope, [NOON, NOON]) == [True, False]


# --- a hot tenant spread over several items --------------------------------------------------------
def hot(*limits: Limit, shards: int = 4) -> Scope:
    return Scope("USAGE#acme", limits, tenant="acme", shards=shards)


def test_a_sharded_scope_splits_every_limit_into_shares_that_sum_to_it_and_never_into_zero() -> None:
    items = hot(Limit("tenant per_minute", "minute", 10), Limit("tenant per_day", "day", 1001)).items()
    capped = hot(Limit("tenant per_second", "second", 3), shards=10).items()

    assert [s.pk for s in items] == ["USAGE#acme", "USAGE#acme#1", "USAGE#acme#2", "USAGE#acme#3"]
    assert [[limit.max for limit in s.limits] for s in items] == [[3, 251], [3, 250], [2, 250], [2, 250]]
    assert [[limit.max for limit in s.limits] for s in capped] == [[1], [1], [1]]
    assert hot(shards=1).items() == (hot(shards=1),)


def test_a_sharded_quota_of_cost_one_calls_admits_exactly_the_limit_and_its_usage_sums(ledger: Ledger) -> None:
    scope = hot(Limit("tenant per_day", "day", 10))

    assert admitted(ledger, scope, [NOON] * 14) == [True] * 10 + [False] * 4
    assert refusal(ledger, scope, NOON).limit == Limit("tenant per_day", "day", 10)  # the tenant's, not a share
    assert admitted(ledger, scope, [NOON + DAY] * 11) == [True] * 10 + [False]
    rows = UsageReader(ledger).month("2026-03", "acme")
    assert [(r.day, r.calls, r.units) for r in rows] == [("2026-03-14", 10, 10), ("2026-03-15", 10, 10)]
    assert UsageReader(ledger).month("2026-03") == rows


def test_a_sharded_quota_leaves_less_than_the_cost_of_a_call_on_each_item(ledger: Ledger) -> None:
    scope = hot(Limit("tenant per_day", "day", 10))  # shares 3, 3, 2, 2

    units = 2 * sum(admitted(ledger, scope, [NOON] * 8, units=2))

    assert units == 8  # one item would take 10: the bound is shards x (cost - 1) = 4
    assert 10 - 4 * (2 - 1) <= units <= 10


def test_a_sharded_rate_admits_its_whole_burst_and_refills_at_the_same_rate(ledger: Ledger) -> None:
    scope = hot(Limit("tenant per_second", "second", 8))  # 2 per second per item

    burst = admitted(ledger, scope, [NOON] * 9)
    refused = refusal(ledger, scope, NOON + 0.25)  # one item would admit 2 more: each share is half a token short
    half_a_second = admitted(ledger, scope, [NOON + 0.5] * 5)
    ten_seconds = admitted(ledger, scope, [NOON + 10.5] * 9)

    assert burst == [True] * 8 + [False]
    assert (refused.limit.max, refused.retry_after) == (8, 0.25)
    assert half_a_second == [True] * 4 + [False]
    assert ten_seconds == [True] * 8 + [False]


def test_a_changed_shard_count_over_admits_a_day_by_at_most_what_was_used_before_the_change(ledger: Ledger) -> None:
    """The stated cost of changing `shards` mid-period (README: change it at a month's start)."""
    limit = Limit("tenant per_day", "day", 8)
    before = sum(admitted(ledger, hot(limit, shards=2), [NOON] * 5))
    after = sum(admitted(ledger, hot(limit, shards=4), [NOON] * 20))

    assert before == 5  # on items 0 and 1 (shares 4 and 4)
    # Items 2 and 3 are new (2 units each); 0 and 1 keep their counts against shares of 2: the day
    # admits 9 or 10 in all, over its 8 by less than the 5 used before the change.
    assert after in (4, 5)
    assert before + after - limit.max < before


# --- DynamoDB requests -----------------------------------------------------------------------------
@pytest.fixture
def dynamo() -> Iterator[tuple[DynamoLedger, Callable[[], dict[str, int]]]]:
    with moto_table("ledger") as client:
        sent: dict[str, int] = {}

        def count(request: Any, **_: Any) -> None:
            operation = request.headers["X-Amz-Target"].decode().split(".")[-1]
            sent[operation] = sent.get(operation, 0) + 1

        client.meta.events.register("before-send.dynamodb", count)
        yield DynamoLedger("ledger", client), lambda: dict(sent)


def test_a_charge_is_one_update_and_a_days_first_charge_reads_the_month_once(
    dynamo: tuple[DynamoLedger, Callable[[], dict[str, int]]],
) -> None:
    ledger, sent = dynamo
    scope = tenant(Limit("tenant per_second", "second", 1000), Limit("tenant per_month", "month", 10_000))
    admitted(ledger, scope, [NOON + i for i in range(10)])
    first_day = sent()
    admitted(ledger, scope, [NOON + DAY + i for i in range(10)])

    # a day's first charge: the item's index entry (PutItem) and the month so far (Query), once
    assert first_day == {"PutItem": 1, "Query": 1, "UpdateItem": 10}
    assert sent() == {"PutItem": 2, "Query": 2, "UpdateItem": 21}  # the second day: and one sealing write


def test_an_instance_forgets_the_rate_state_and_month_bases_of_days_gone_by(monkeypatch: pytest.MonkeyPatch) -> None:
    from tollway.store import ledger as module

    monkeypatch.setattr(module, "_REMEMBERED", 2)
    with moto_table("ledger") as client:
        ledger = DynamoLedger("ledger", client)
        for name in ("a", "b", "c"):
            admitted(ledger, tenant(Limit("tenant per_second", "second", 5), name=name), [NOON])
        admitted(ledger, tenant(Limit("tenant per_second", "second", 5), name="a"), [NOON + DAY])

        assert {day for _, day in ledger._seen} == {"2026-03-15"}
        assert {day for _, day in ledger._bases} == {"2026-03-15"}


def test_a_sharded_scope_tries_each_item_until_it_saw_it_refuse_then_a_refused_call_costs_one_write(
    dynamo: tuple[DynamoLedger, Callable[[], dict[str, int]]],
) -> None:
    ledger, sent = dynamo
    scope = hot(Limit("tenant per_day", "day", 8))  # 2 per item

    calls = admitted(ledger, scope, [NOON] * 18)

    assert calls == [True] * 8 + [False] * 10
    # 8 admitted + each item's one refusal before this instance knew it full + one per later refusal
    assert sent() == {"PutItem": 4, "Query": 4, "UpdateItem": 8 + 4 + 9}  # an index entry per item


@pytest.mark.parametrize("offset", [-1.0, -1e-6, -4e-7, 0.0, 4e-7, 1e-6, 1.0])
def test_the_day_of_an_instant_is_its_utc_day_at_the_edges_of_midnight(offset: float) -> None:
    """`day_of` (remembered per day) names the day `datetime` names, to the microsecond."""
    for midnight in (
        86_400.0,
        datetime(2026, 3, 15, tzinfo=UTC).timestamp(),
        datetime(2027, 1, 1, tzinfo=UTC).timestamp(),
    ):
        at = midnight + offset
        assert day_of(at) == datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d")
