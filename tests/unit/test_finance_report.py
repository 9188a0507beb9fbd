"""The finance report as finance reads it: totals per tenant, tool and day, an estimated AWS cost
that follows the documented formula, and CSV / JSON / table output whose numbers add up exactly."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict

import pytest
from tollway.config import CostModel
from tollway.finance.report import (
    COST_COMPONENTS,
    CSV_COLUMNS,
    Usage,
    cost_per_million_calls,
    estimate_cost,
    parse_month,
    render,
    summarize,
)
from tollway.store.usage import UsageRow

FORECAST, LOOKUP = "finance__run_forecast", "support__lookup_customer"
ROWS = [
    #        tenant   day           tool      calls units errors rejected latency_ms
    UsageRow("acme", "2026-11-02", FORECAST, 3, 30, 1, 0, 300),
    UsageRow("acme", "2026-11-02", LOOKUP, 2, 2, 0, 1, 50),
    UsageRow("acme", "2026-11-03", LOOKUP, 1, 1, 1, 0, 15),
    UsageRow("acme", "2026-11-03", FORECAST, 0, 0, 0, 2, 0),
    UsageRow("globex", "2026-11-01", FORECAST, 1, 10, 0, 0, 90),
    UsageRow("globex", "2026-11-30", LOOKUP, 4, 4, 1, 1, 40),
]
PER_CALL = 2.463995487307739e-06
"""Default cost model: (1.00 + 0.20 + 0.133334 + 0.625 + 0 + 700 / 2^30 * 0.50 * 10^6) / 10^6 USD."""


def _report(rows: list[UsageRow] = ROWS, **kwargs: object):  # type: ignore[no-untyped-def]
    return summarize(rows, "2026-11", **kwargs)  # type: ignore[arg-type]


# --- summarize -------------------------------------------------------------------------------------
def test_each_tenant_gets_its_calls_units_errors_and_rejected_calls_added_up() -> None:
    report = _report()

    assert list(report.tenants) == ["acme", "globex"]
    assert report.tenants["acme"].usage == Usage(calls=6, units=33, errors=2, rejected=3, latency_ms=365)
    assert report.tenants["globex"].usage == Usage(calls=5, units=14, errors=1, rejected=1, latency_ms=130)
    assert report.totals == Usage(calls=11, units=47, errors=3, rejected=4, latency_ms=495)


def test_a_tenants_usage_is_broken_down_by_tool_and_by_day() -> None:
    acme = _report().tenants["acme"]

    assert acme.tools == {
        FORECAST: Usage(calls=3, units=30, errors=1, rejected=2, latency_ms=300),
        LOOKUP: Usage(calls=3, units=3, errors=1, rejected=1, latency_ms=65),
    }
    assert acme.days == {
        "2026-11-02": Usage(calls=5, units=32, errors=1, rejected=1, latency_ms=350),
        "2026-11-03": Usage(calls=1, units=1, errors=1, rejected=2, latency_ms=15),
    }
    assert [(r.day, r.tool) for r in acme.rows] == [
        ("2026-11-02", FORECAST),
        ("2026-11-02", LOOKUP),
        ("2026-11-03", FORECAST),
        ("2026-11-03", LOOKUP),
    ]


def test_average_latency_is_per_admitted_call_and_empty_when_every_call_was_refused() -> None:
    acme = _report().tenants["acme"]

    assert acme.usage.avg_latency_ms == 60.8  # 365 ms / 6 calls
    assert acme.tools[FORECAST].avg_latency_ms == 100.0
    assert Usage(rejected=2).avg_latency_ms is None


def test_a_month_without_usage_is_an_empty_report_with_zero_totals() -> None:
    report = summarize([], "2026-02")

    assert report.month == "2026-02"
    assert report.tenants == {}
    assert report.totals == Usage()


def test_the_month_is_taken_from_the_rows_when_not_given() -> None:
    assert summarize(ROWS).month == "2026-11"


def test_a_row_from_another_month_is_refused_rather_than_counted() -> None:
    with pytest.raises(ValueError, match="2026-12-01 is not in month 2026-11"):
        _report([*ROWS, UsageRow("acme", "2026-12-01", LOOKUP, 1, 1, 0, 0, 5)])


def test_a_single_tenant_report_refuses_another_tenants_rows() -> None:
    with pytest.raises(ValueError, match="'globex' in a report for tenant 'acme'"):
        _report(tenant="acme")


@pytest.mark.parametrize("month", ["2026-01", "2026-12", "1999-09"])
def test_a_month_is_year_dash_month(month: str) -> None:
    assert parse_month(month) == month


@pytest.mark.parametrize("month", ["2026-13", "2026-00", "2026-1", "202611", "2026-11-01", "", "26-11", " 2026-11"])
def test_anything_else_is_not_a_month(month: str) -> None:
    with pytest.raises(ValueError, match="month must be YYYY-MM"):
        parse_month(month)


# --- cost --------------------------------------------------------------------------------------------
def test_a_million_calls_cost_each_component_by_the_documented_formula() -> None:
    cost = estimate_cost(1_000_000, CostModel())

    assert list(cost) == [*COST_COMPONENTS, "total"]
    assert cost["api_gateway"] == pytest.approx(1.00, rel=1e-12)
    assert cost["lambda_requests"] == pytest.approx(0.20, rel=1e-12)
    assert cost["lambda_compute"] == pytest.approx(1.0 * 0.013 * 0.0000133334 * 1_000_000, rel=1e-12)  # 1 GB x 13 ms
    assert cost["dynamodb_writes"] == pytest.approx(1 * 0.625, rel=1e-12)  # one ledger write per call
    assert cost["dynamodb_reads"] == 0.0
    assert cost["logs"] == pytest.approx(1_000_000_000 / 2**30 * 0.50, rel=1e-12)  # 0.931323 GB
    assert cost["total"] == pytest.approx(sum(cost[name] for name in COST_COMPONENTS), rel=1e-12)


def test_the_default_cost_per_million_calls_is_under_two_dollars_fifty() -> None:
    assert cost_per_million_calls() == pytest.approx(2.463995487307739, rel=1e-12)
    assert round(cost_per_million_calls(CostModel()), 6) == 2.463995


def test_prices_and_sizing_in_the_cost_model_change_the_estimate() -> None:
    model = CostModel(
        api_gateway_per_million_requests=3.5,
        lambda_memory_mb=2048,
        lambda_overhead_ms=50,
        dynamodb_reads_per_call=4,
        log_bytes_per_call=0,
    )
    cost = estimate_cost(2_000_000, model)

    assert cost["api_gateway"] == pytest.approx(7.0, rel=1e-12)
    assert cost["lambda_compute"] == pytest.approx(2_000_000 * 2.0 * 0.050 * 0.0000133334, rel=1e-12)
    assert cost["dynamodb_reads"] == pytest.approx(2 * 4 * 0.125, rel=1e-12)
    assert cost["logs"] == 0.0
    assert cost_per_million_calls(model) == pytest.approx(cost["total"] / 2, rel=1e-12)


def test_refused_calls_are_costed_because_they_still_reach_the_gateway_but_carry_no_units() -> None:
    report = _report()
    forecast = report.tenants["acme"].tools[FORECAST]

    assert forecast.units == 30
    assert report.cost(forecast)["total"] == pytest.approx(5 * PER_CALL, rel=1e-12)  # 3 calls + 2 rejected


# --- csv ---------------------------------------------------------------------------------------------
def _csv(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    return list(reader)


def test_the_csv_has_the_documented_header_and_one_line_per_tenant_day_and_tool() -> None:
    text = render(_report(), "csv")

    header = "month,tenant,tool,day,calls,units,errors,cancelled,rejected,avg_latency_ms,estimated_cost_usd"
    assert text.splitlines()[0] == header
    assert text.splitlines()[1] == "2026-11,acme,finance__run_forecast,2026-11-02,3,30,1,0,0,100.0,0.00000739"
    lines = _csv(text)
    assert [(r["tenant"], r["day"], r["tool"]) for r in lines] == sorted((r.tenant, r.day, r.tool) for r in ROWS)
    assert {r["month"] for r in lines} == {"2026-11"}


def test_csv_unit_and_call_sums_per_tenant_match_the_recorded_rows_exactly() -> None:
    lines = _csv(render(_report(), "csv"))
    sums: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    expected: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for line in lines:
        for column in ("calls", "units", "errors", "rejected"):
            sums[line["tenant"]][column] += int(line[column])
    for row in ROWS:
        for column in ("calls", "units", "errors", "rejected"):
            expected[row.tenant][column] += getattr(row, column)

    assert sums == expected
    assert sums["acme"]["units"] == 33
    assert sums["globex"]["units"] == 14


def test_a_csv_row_without_admitted_calls_has_an_empty_average_latency_and_a_cost() -> None:
    refused = next(r for r in _csv(render(_report(), "csv")) if r["calls"] == "0")

    assert refused["avg_latency_ms"] == ""
    assert refused["rejected"] == "2"
    assert refused["estimated_cost_usd"] == "0.00000493"  # 2 x 2.463995e-06


def test_an_empty_month_is_a_csv_header_alone() -> None:
    assert render(summarize([], "2026-02"), "csv") == ",".join(CSV_COLUMNS) + "\n"


def test_a_tenant_name_with_a_comma_or_quote_survives_the_csv() -> None:
    rows = [UsageRow('Acme, "EU"', "2026-11-02", LOOKUP, 1, 1, 0, 0, 9)]

    assert _csv(render(summarize(rows), "csv"))[0]["tenant"] == 'Acme, "EU"'


# --- json --------------------------------------------------------------------------------------------
USAGE_KEYS = ["calls", "units", "errors", "cancelled", "rejected", "latency_ms", "avg_latency_ms", "estimated_cost_usd"]


def test_the_json_report_has_the_documented_shape() -> None:
    data = json.loads(render(_report(), "json"))

    assert list(data) == [
        "version",
        "month",
        "tenant",
        "currency",
        "cost_model",
        "cost_per_million_calls",
        "totals",
        "tenants",
    ]
    assert data["version"] == 1
    assert (data["month"], data["tenant"], data["currency"]) == ("2026-11", None, "USD")
    assert data["cost_model"] == CostModel().model_dump()
    assert data["cost_per_million_calls"] == 2.46399549
    assert list(data["totals"]) == [*USAGE_KEYS, "estimated_cost"]
    assert list(data["totals"]["estimated_cost"]) == [*COST_COMPONENTS, "total"]
    acme = data["tenants"][0]
    assert list(acme) == ["tenant", *USAGE_KEYS, "tools", "days", "rows"]
    assert list(acme["tools"][0]) == ["tool", *USAGE_KEYS]
    assert list(acme["days"][0]) == ["day", *USAGE_KEYS]
    assert list(acme["rows"][0]) == ["day", "tool", *USAGE_KEYS]


def test_the_json_report_carries_the_exact_totals_per_tenant_tool_and_day() -> None:
    data = json.loads(render(_report(), "json"))
    acme, globex = data["tenants"]

    assert data["totals"] | {"estimated_cost": None} == {
        "calls": 11,
        "units": 47,
        "errors": 3,
        "cancelled": 0,
        "rejected": 4,
        "latency_ms": 495,
        "avg_latency_ms": 45.0,
        "estimated_cost_usd": round(15 * PER_CALL, 8),
        "estimated_cost": None,
    }
    assert data["totals"]["estimated_cost"]["total"] == 3.696e-05
    assert (acme["tenant"], acme["units"], acme["calls"], acme["rejected"]) == ("acme", 33, 6, 3)
    assert (globex["tenant"], globex["units"], globex["calls"], globex["rejected"]) == ("globex", 14, 5, 1)
    assert [(t["tool"], t["units"]) for t in acme["tools"]] == [(FORECAST, 30), (LOOKUP, 3)]
    assert [(d["day"], d["units"]) for d in globex["days"]] == [("2026-11-01", 10), ("2026-11-30", 4)]
    assert sum(r["units"] for r in acme["rows"]) == 33


def test_a_single_tenant_json_report_names_its_tenant() -> None:
    rows = [r for r in ROWS if r.tenant == "globex"]
    data = json.loads(render(summarize(rows, "2026-11", tenant="globex"), "json"))

    assert data["tenant"] == "globex"
    assert [t["tenant"] for t in data["tenants"]] == ["globex"]


# --- table -------------------------------------------------------------------------------------------
def _section(text: str, title: str) -> list[list[str]]:
    lines = text.splitlines()
    start = lines.index(title) + 1
    block: list[list[str]] = []
    for line in lines[start:]:
        if not line.strip():
            break
        block.append(line.split())
    return block


def test_the_table_shows_each_tenant_by_tool_with_a_total_line_and_the_estimated_cost() -> None:
    text = render(_report(), "table")

    assert text.splitlines()[0] == "Tollway usage 2026-11 (all tenants, UTC days)"
    assert "Estimated AWS cost: $2.463995 per million calls" in text
    assert _section(text, "Tenant acme") == [
        ["Tool", "Calls", "Units", "Errors", "Cancelled", "Rejected", "Avg", "ms", "Est.", "USD"],
        [FORECAST, "3", "30", "1", "0", "2", "100.0", "0.000012"],
        [LOOKUP, "3", "3", "1", "0", "1", "21.7", "0.000010"],
        ["Total", "6", "33", "2", "0", "3", "60.8", "0.000022"],
    ]
    assert _section(text, "All tenants")[1:] == [
        ["acme", "6", "33", "2", "0", "3", "60.8", "0.000022"],
        ["globex", "5", "14", "1", "0", "1", "26.0", "0.000015"],
        ["Total", "11", "47", "3", "0", "4", "45.0", "0.000037"],
    ]
    assert _section(text, "Estimated cost by component (USD)")[-1] == ["total", "0.000037"]


def test_cancelled_calls_are_reported_as_the_part_of_the_errors_they_are() -> None:
    rows = [UsageRow("acme", "2026-11-02", LOOKUP, 3, 3, 2, 0, 30, cancelled=1)]

    data = json.loads(render(_report(rows), "json"))
    (line,) = csv.DictReader(io.StringIO(render(_report(rows), "csv")))

    assert (data["totals"]["errors"], data["totals"]["cancelled"]) == (2, 1)
    assert data["tenants"][0]["tools"][0]["cancelled"] == 1
    assert (line["errors"], line["cancelled"]) == ("2", "1")


def test_the_table_columns_line_up() -> None:
    block = render(_report(), "table").split("Tenant acme\n", 1)[1].split("\n\n", 1)[0].splitlines()

    assert len({len(line) for line in block}) == 1


def test_an_empty_month_says_so_in_the_table() -> None:
    text = render(summarize([], "2026-02"), "table")

    assert "No usage recorded in 2026-02." in text


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format must be one of table, csv, json"):
        render(_report(), "xml")  # type: ignore[arg-type]
