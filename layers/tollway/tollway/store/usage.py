"""Usage for finance, read from the ledger: its tenant items (`store/ledger.py`) hold, per tenant
and UTC day, each tool's calls, units, errors, rejected calls and latency — written by the same
write that admits a call, so usage and quotas can never disagree.

  pk USAGE#<tenant>   sk <YYYY-MM-DD>          one tenant's month: Query begins_with
  gsi1pk USAGE#<YYYY-MM>   gsi1sk <tenant>#<day>   every tenant's month: Query index ByMonth

No TTL: usage is kept. Key parts are escaped (`store.table.key`): a tenant named `a#b` never
shares another's items.
"""

from __future__ import annotations

from dataclasses import dataclass

from tollway.store.ledger import Ledger, usage_rows
from tollway.store.table import key


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


class UsageReader:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def month(self, month: str, tenant: str | None = None) -> list[UsageRow]:
        """Every row of `month` (YYYY-MM), for one tenant or all; Query only, never Scan."""
        items = self.ledger.days(key("USAGE", tenant), month) if tenant is not None else self.ledger.month(month)
        rows = [
            UsageRow(
                tenant=row_tenant,
                day=day,
                tool=tool,
                calls=counts.get("c", 0),
                units=counts.get("u", 0),
                errors=counts.get("e", 0),
                rejected=counts.get("r", 0),
                latency_ms=counts.get("l", 0),
            )
            for row_tenant, day, tool, counts in usage_rows(items)
        ]
        return sorted(rows, key=lambda r: (r.tenant, r.day, r.tool))
