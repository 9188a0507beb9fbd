"""Usage records for finance: one item per tenant, day and tool, updated atomically per call.

  pk USAGE#<tenant>   sk <YYYY-MM-DD>#<tool>             one tenant's month: Query begins_with
  gsi1pk USAGE#<YYYY-MM>   gsi1sk <tenant>#<day>#<tool>  every tenant's month: Query index ByMonth
  calls, units, errors, latency_ms (sums), rejected (calls refused by a limit)

No TTL: usage is kept. Each item stays well under 1 KB whatever the traffic (counters only).
Key parts are escaped (`store.table.key`): a tenant named `a#b` never shares another's items.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from tollway.store.table import DynamoTable, key


@dataclass(frozen=True)
class UsageRow:
    tenant: str
    day: str
    tool: str
    calls: int
    units: int
    errors: int
    rejected: int
    latency_ms: int


class UsageRecorder(Protocol):
    def record(
        self,
        tenant: str,
        tool: str,
        *,
        units: int = 0,
        error: bool = False,
        rejected: bool = False,
        latency_ms: float = 0.0,
        now: datetime | None = None,
    ) -> None: ...

    def month(self, month: str, tenant: str | None = None) -> list[UsageRow]: ...


class MemoryUsageStore:
    """In-process recorder for tests: keeps every record."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, tenant: str, tool: str, **fields: Any) -> None:
        day = (fields.pop("now", None) or datetime.now(UTC)).strftime("%Y-%m-%d")
        self.records.append({"tenant": tenant, "tool": tool, "day": day, **fields})

    def month(self, month: str, tenant: str | None = None) -> list[UsageRow]:
        rows: dict[tuple[str, str, str], UsageRow] = {}
        for r in self.records:
            if not r["day"].startswith(month) or (tenant is not None and r["tenant"] != tenant):
                continue
            key = (r["tenant"], r["day"], r["tool"])
            old = rows.get(key) or UsageRow(r["tenant"], r["day"], r["tool"], 0, 0, 0, 0, 0)
            rejected = bool(r.get("rejected"))
            rows[key] = UsageRow(
                old.tenant,
                old.day,
                old.tool,
                calls=old.calls + (0 if rejected else 1),
                units=old.units + (0 if rejected else r.get("units", 0)),
                errors=old.errors + (1 if r.get("error") and not rejected else 0),
                rejected=old.rejected + (1 if rejected else 0),
                latency_ms=old.latency_ms + (0 if rejected else round(r.get("latency_ms", 0.0))),
            )
        return sorted(rows.values(), key=lambda row: (row.tenant, row.day, row.tool))


class UsageStore(DynamoTable):
    unavailable = "Usage store unavailable"

    def record(
        self,
        tenant: str,
        tool: str,
        *,
        units: int = 0,
        error: bool = False,
        rejected: bool = False,
        latency_ms: float = 0.0,
        now: datetime | None = None,
    ) -> None:
        """One atomic ADD per call: admitted calls count calls/units/errors/latency; refused ones `rejected`."""
        day = (now or datetime.now(UTC)).strftime("%Y-%m-%d")
        values: dict[str, Any] = {
            ":tenant": {"S": tenant},
            ":tool": {"S": tool},
            ":day": {"S": day},
            ":gpk": {"S": key("USAGE", day[:7])},
            ":gsk": {"S": key(tenant, day, tool)},
        }
        if rejected:
            add = "rejected :one"
            values[":one"] = {"N": "1"}
        else:
            add = "calls :one, units :units, errors :errors, latency_ms :latency"
            values.update(
                {
                    ":one": {"N": "1"},
                    ":units": {"N": str(units)},
                    ":errors": {"N": "1" if error else "0"},
                    ":latency": {"N": str(round(latency_ms))},
                }
            )
        self._call(
            "update_item",
            Key={"pk": {"S": key("USAGE", tenant)}, "sk": {"S": key(day, tool)}},
            UpdateExpression=f"SET {_KEYS} ADD {add}",
            ExpressionAttributeNames={"#d": "day"},
            ExpressionAttributeValues=values,
        )

    def month(self, month: str, tenant: str | None = None) -> list[UsageRow]:
        """Every record of `month` (YYYY-MM), for one tenant or all; Query only, never Scan."""
        query: dict[str, Any]
        if tenant is not None:
            query = {
                "KeyConditionExpression": "pk = :pk AND begins_with(sk, :month)",
                "ExpressionAttributeValues": {":pk": {"S": key("USAGE", tenant)}, ":month": {"S": month}},
            }
        else:
            query = {
                "IndexName": "ByMonth",
                "KeyConditionExpression": "gsi1pk = :gpk",
                "ExpressionAttributeValues": {":gpk": {"S": key("USAGE", month)}},
            }
        rows: list[UsageRow] = []
        while True:
            page = self._call("query", **query)
            rows.extend(_row(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return sorted(rows, key=lambda r: (r.tenant, r.day, r.tool))
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]


_KEYS = "tenant = :tenant, tool = :tool, #d = :day, gsi1pk = :gpk, gsi1sk = :gsk"


def _row(item: dict[str, Any]) -> UsageRow:
    def n(key: str) -> int:
        return int(item.get(key, {}).get("N", "0"))

    return UsageRow(
        tenant=item["tenant"]["S"],
        day=item["day"]["S"],
        tool=item["tool"]["S"],
        calls=n("calls"),
        units=n("units"),
        errors=n("errors"),
        rejected=n("rejected"),
        latency_ms=n("latency_ms"),
    )
