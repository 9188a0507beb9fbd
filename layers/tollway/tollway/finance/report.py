"""The monthly usage report: per tenant, per tool, per day, with an estimated AWS cost.

Pure functions over the `UsageRow`s that `UsageReader.month` returns (one per tenant, UTC day
and tool) and a `CostModel`; no I/O. `summarize` adds them up, `render` writes them out.

Counts, as the gateway records them
    calls           admitted calls (the tool ran, or tried to)
    units           cost units charged for those calls (the quota weights: a forecast may cost 10)
    errors          admitted calls that ended in an error (a subset of `calls`)
    cancelled       errors that were cancellations: the caller cancelled or went away (a subset of `errors`)
    rejected        calls refused by a rate limit or quota (not in `calls`; they cost no units)
    avg_latency_ms  total latency / calls, one decimal; empty (null) when there were no calls

Estimated AWS cost, `estimate_cost(requests, model)`, in USD. Every request the gateway served
is counted, admitted or rejected (`requests = calls + rejected`): a refused call still crosses
API Gateway and Lambda and writes its quota counter. With M = 1,000,000 and GB = 2^30 bytes:

    api_gateway      = requests * api_gateway_per_million_requests / M
    lambda_requests  = requests * lambda_per_million_requests / M
    lambda_compute   = requests * (lambda_memory_mb / 1024) GB * (lambda_overhead_ms / 1000) s
                       * lambda_per_gb_second
    dynamodb_writes  = requests * dynamodb_writes_per_call * dynamodb_per_million_writes / M
    dynamodb_reads   = requests * dynamodb_reads_per_call * dynamodb_per_million_reads / M
    logs             = requests * log_bytes_per_call / GB * cloudwatch_logs_per_gb
    total            = the sum of the above

It is the gateway's own cost: Lambda time spent waiting on an upstream tool is not in
`lambda_overhead_ms` (add it there to include it), nor is the upstreams' own bill.
`cost_per_million_calls(model)` is `estimate_cost(1_000_000, model)["total"]`.

Formats (`render`)
    csv    header `month,tenant,tool,day,calls,units,errors,cancelled,rejected,avg_latency_ms,estimated_cost_usd`,
           then one row per tenant, day and tool, sorted in that order, and nothing else: no
           totals rows, so any sum over the file (per tenant, tool or day) is a true total and
           matches the JSON and table totals exactly for calls, units, errors and rejected.
           Costs have 8 decimals; a total's cost is computed from its own request count, so a
           sum of rounded row costs may differ from it in the last decimals.
    json   one object, `"version": 1`:
             {"version": 1, "month": "2026-11", "tenant": null | "acme", "currency": "USD",
              "cost_model": {...the prices used...}, "cost_per_million_calls": 2.9092969,
              "totals": {USAGE, "estimated_cost": {"api_gateway": …, …, "total": …}},
              "tenants": [{"tenant": "acme", USAGE,
                           "tools": [{"tool": …, USAGE}, …],         sorted by tool
                           "days":  [{"day": "2026-11-03", USAGE}, …],  sorted by day
                           "rows":  [{"day": …, "tool": …, USAGE}, …]}]}  sorted by day, tool
           where USAGE is "calls", "units", "errors", "cancelled", "rejected", "latency_ms" (total),
           "avg_latency_ms" (null without calls) and "estimated_cost_usd" (8 decimals).
           Indented from `render`; GET /admin/usage sends the same object compact.
    table  for people: per tenant a by-tool and a by-day table with totals, then (all tenants)
           one line per tenant with the grand total, and the estimated cost by component
           (costs with 6 decimals).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from tollway.config import CostModel
from tollway.store.usage import UsageRow

Format = Literal["table", "csv", "json"]
FORMATS: tuple[Format, ...] = ("table", "csv", "json")
CSV_COLUMNS = (
    "month",
    "tenant",
    "tool",
    "day",
    "calls",
    "units",
    "errors",
    "cancelled",
    "rejected",
    "avg_latency_ms",
    "estimated_cost_usd",
)
COST_COMPONENTS = ("api_gateway", "lambda_requests", "lambda_compute", "dynamodb_writes", "dynamodb_reads", "logs")
COST_DECIMALS = 8
"""Decimals of USD amounts in CSV and JSON (a call costs a few millionths of a dollar)."""
JSON_VERSION = 1

_MILLION = 1_000_000
_GB = 2**30
_MONTH_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def parse_month(value: str) -> str:
    """`value` if it is a month as `YYYY-MM` (UTC), else ValueError with a message for people."""
    if not isinstance(value, str) or not _MONTH_RE.match(value):
        raise ValueError(f"month must be YYYY-MM, e.g. 2026-11 (got {value!r})")
    return value


@dataclass(frozen=True)
class Usage:
    """The counts of one slice of a month: a row, a tool, a day, a tenant or everything."""

    calls: int = 0
    units: int = 0
    errors: int = 0
    rejected: int = 0
    latency_ms: int = 0
    cancelled: int = 0

    @classmethod
    def of(cls, row: UsageRow) -> Usage:
        return cls(row.calls, row.units, row.errors, row.rejected, row.latency_ms, row.cancelled)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.calls + other.calls,
            self.units + other.units,
            self.errors + other.errors,
            self.rejected + other.rejected,
            self.latency_ms + other.latency_ms,
            self.cancelled + other.cancelled,
        )

    @property
    def requests(self) -> int:
        """Requests the gateway served: admitted and rejected calls (what the cost counts)."""
        return self.calls + self.rejected

    @property
    def avg_latency_ms(self) -> float | None:
        return round(self.latency_ms / self.calls, 1) if self.calls else None


@dataclass(frozen=True)
class TenantReport:
    tenant: str
    usage: Usage
    tools: dict[str, Usage]
    """By tool, sorted by name."""
    days: dict[str, Usage]
    """By UTC day (`YYYY-MM-DD`), sorted."""
    rows: tuple[UsageRow, ...]
    """The rows summed, sorted by day then tool."""


@dataclass(frozen=True)
class Report:
    month: str
    tenant: str | None
    """The tenant asked for, or None for every tenant."""
    tenants: dict[str, TenantReport]
    """Sorted by tenant id."""
    totals: Usage
    model: CostModel = field(default_factory=CostModel)

    def cost(self, usage: Usage) -> dict[str, float]:
        return estimate_cost(usage.requests, self.model)


def summarize(
    rows: Iterable[UsageRow],
    month: str | None = None,
    *,
    tenant: str | None = None,
    model: CostModel | None = None,
) -> Report:
    """Add up one month's rows per tenant, tool and day.

    `month` defaults to the rows' own (an empty month needs it); a row from another month, or
    from another tenant than `tenant`, is a ValueError rather than a silently wrong total.
    """
    rows = sorted(rows, key=lambda r: (r.tenant, r.day, r.tool))
    if month is None:
        if not rows:
            raise ValueError("an empty report needs its month")
        month = rows[0].day[:7]
    parse_month(month)
    by_tenant: dict[str, list[UsageRow]] = {}
    for row in rows:
        if row.day[:7] != month:
            raise ValueError(f"usage row of {row.day} is not in month {month}")
        if tenant is not None and row.tenant != tenant:
            raise ValueError(f"usage row of tenant {row.tenant!r} in a report for tenant {tenant!r}")
        by_tenant.setdefault(row.tenant, []).append(row)
    tenants = {name: _tenant_report(name, tenant_rows) for name, tenant_rows in by_tenant.items()}
    totals = sum((t.usage for t in tenants.values()), Usage())
    return Report(month, tenant, tenants, totals, model or CostModel())


def _tenant_report(tenant: str, rows: list[UsageRow]) -> TenantReport:
    tools: dict[str, Usage] = {}
    days: dict[str, Usage] = {}
    for row in rows:
        usage = Usage.of(row)
        tools[row.tool] = tools.get(row.tool, Usage()) + usage
        days[row.day] = days.get(row.day, Usage()) + usage
    return TenantReport(
        tenant=tenant,
        usage=sum(tools.values(), Usage()),
        tools=dict(sorted(tools.items())),
        days=dict(sorted(days.items())),
        rows=tuple(rows),
    )


def estimate_cost(requests: int, model: CostModel) -> dict[str, float]:
    """Estimated AWS cost in USD of `requests` gateway requests, per component and `total`
    (the formula is in this module's docstring)."""
    gb_seconds = (model.lambda_memory_mb / 1024) * (model.lambda_overhead_ms / 1000)
    cost = {
        "api_gateway": requests * model.api_gateway_per_million_requests / _MILLION,
        "lambda_requests": requests * model.lambda_per_million_requests / _MILLION,
        "lambda_compute": requests * gb_seconds * model.lambda_per_gb_second,
        "dynamodb_writes": requests * model.dynamodb_writes_per_call * model.dynamodb_per_million_writes / _MILLION,
        "dynamodb_reads": requests * model.dynamodb_reads_per_call * model.dynamodb_per_million_reads / _MILLION,
        "logs": requests * model.log_bytes_per_call / _GB * model.cloudwatch_logs_per_gb,
    }
    cost["total"] = sum(cost.values())
    return cost


def cost_per_million_calls(model: CostModel | None = None) -> float:
    """Estimated AWS cost in USD of one million calls through the gateway (default prices if no model)."""
    return estimate_cost(_MILLION, model or CostModel())["total"]


def render(report: Report, format: Format = "table") -> str:
    """The report as text in `format` (see the module docstring for each shape)."""
    if format == "csv":
        return _csv(report)
    if format == "json":
        return json.dumps(to_json(report), indent=2, ensure_ascii=False) + "\n"
    if format == "table":
        return _table(report)
    raise ValueError(f"format must be one of {', '.join(FORMATS)} (got {format!r})")


# --- csv -------------------------------------------------------------------------------------------
def _csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for tenant in report.tenants.values():
        for row in tenant.rows:
            usage = Usage.of(row)
            writer.writerow(
                [
                    report.month,
                    tenant.tenant,
                    row.tool,
                    row.day,
                    usage.calls,
                    usage.units,
                    usage.errors,
                    usage.cancelled,
                    usage.rejected,
                    "" if usage.avg_latency_ms is None else f"{usage.avg_latency_ms:.1f}",
                    f"{report.cost(usage)['total']:.{COST_DECIMALS}f}",
                ]
            )
    return out.getvalue()


# --- json ------------------------------------------------------------------------------------------
def to_json(report: Report) -> dict[str, Any]:
    """The report as the documented JSON object (plain dicts, lists, numbers and strings)."""
    costs = report.cost(report.totals)
    return {
        "version": JSON_VERSION,
        "month": report.month,
        "tenant": report.tenant,
        "currency": "USD",
        "cost_model": report.model.model_dump(mode="json"),
        "cost_per_million_calls": _usd(cost_per_million_calls(report.model)),
        "totals": {
            **_usage_json(report, report.totals),
            "estimated_cost": {name: _usd(value) for name, value in costs.items()},
        },
        "tenants": [
            {
                "tenant": t.tenant,
                **_usage_json(report, t.usage),
                "tools": [{"tool": name, **_usage_json(report, u)} for name, u in t.tools.items()],
                "days": [{"day": day, **_usage_json(report, u)} for day, u in t.days.items()],
                "rows": [{"day": r.day, "tool": r.tool, **_usage_json(report, Usage.of(r))} for r in t.rows],
            }
            for t in report.tenants.values()
        ],
    }


def _usage_json(report: Report, usage: Usage) -> dict[str, Any]:
    return {
        "calls": usage.calls,
        "units": usage.units,
        "errors": usage.errors,
        "cancelled": usage.cancelled,
        "rejected": usage.rejected,
        "latency_ms": usage.latency_ms,
        "avg_latency_ms": usage.avg_latency_ms,
        "estimated_cost_usd": _usd(report.cost(usage)["total"]),
    }


def _usd(value: float) -> float:
    return round(value, COST_DECIMALS)


# --- table -----------------------------------------------------------------------------------------
_TABLE_HEADER = ("Calls", "Units", "Errors", "Cancelled", "Rejected", "Avg ms", "Est. USD")


def _table(report: Report) -> str:
    scope = f"tenant {report.tenant}" if report.tenant is not None else "all tenants"
    lines = [
        f"Tollway usage {report.month} ({scope}, UTC days)",
        f"Estimated AWS cost: ${cost_per_million_calls(report.model):.6f} per million calls",
        "",
    ]
    if not report.tenants:
        lines.append(f"No usage recorded in {report.month}.")
        return "\n".join(lines) + "\n"
    for tenant in report.tenants.values():
        lines.append(f"Tenant {tenant.tenant}")
        lines += _grid(report, "Tool", tenant.tools, tenant.usage)
        lines.append("")
        lines += _grid(report, "Day", tenant.days, tenant.usage)
        lines.append("")
    if report.tenant is None:
        lines.append("All tenants")
        lines += _grid(report, "Tenant", {t.tenant: t.usage for t in report.tenants.values()}, report.totals)
        lines.append("")
    costs = report.cost(report.totals)
    lines.append("Estimated cost by component (USD)")
    width = max(len(name) for name in costs)
    lines += [f"  {name.ljust(width)}  {value:>12.6f}" for name, value in costs.items()]
    return "\n".join(lines) + "\n"


def _grid(report: Report, label: str, parts: dict[str, Usage], total: Usage) -> list[str]:
    def cells(usage: Usage) -> list[str]:
        avg = "-" if usage.avg_latency_ms is None else f"{usage.avg_latency_ms:.1f}"
        cost = report.cost(usage)["total"]
        counts = (usage.calls, usage.units, usage.errors, usage.cancelled, usage.rejected)
        return [*map(str, counts), avg, f"{cost:.6f}"]

    table = [[label, *_TABLE_HEADER], *([name, *cells(u)] for name, u in parts.items()), ["Total", *cells(total)]]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return [
        "  " + "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
        for row in table
    ]
