"""Usage for finance, read from the ledger: its tenant items (`store/ledger.py`) hold, per tenant
and UTC day, each tool's calls, units, errors, rejected calls and latency — written by the same
write that admits a call, so usage and quotas can never disagree.

  pk USAGE#<tenant>[#<shard>]   sk <YYYY-MM-DD>   a day (a hot tenant's: one item per shard)
  pk USAGEINDEX#<item pk>       sk <YYYY-MM-DD>   its index entry: gsi1pk USAGE#<YYYY-MM>,
                                                  gsi1sk <tenant>#<day>, item_pk
                     every tenant's month: Query index ByMonth, then BatchGetItem the items;
                     one tenant's: the same, begins_with(gsi1sk, <tenant>#)

The reader need not know how many items a tenant had (a plan's shards can change mid-month):
each item has its entry, and rows of one tenant, day and tool are summed across items.

No TTL: usage is kept. Key parts are escaped (`store.table.key`): a tenant named `a#b` never
shares another's items.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple

from tollway.store.ledger import Ledger, usage_rows


class UsageRow(NamedTuple):
    tenant: str
    day: str
    tool: str
    calls: int
    units: int
    errors: int
    rejected: int
    latency_ms: int
    cancelled: int = 0
    """Errors that were cancellations: the caller cancelled or went away (a subset of `errors`)."""


class UsageReader:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def month(self, month: str, tenant: str | None = None) -> list[UsageRow]:
        """Every row of `month` (YYYY-MM), for one tenant or all; Query only, never Scan."""
        items = self.ledger.tenant_month(tenant, month) if tenant is not None else self.ledger.month(month)
        totals: dict[tuple[str, str, str], Counter[str]] = {}
        for row_tenant, day, tool, counts in usage_rows(items):  # a hot tenant's day is several items
            totals.setdefault((row_tenant, day, tool), Counter()).update(counts)
        return [
            UsageRow(
                tenant=row_tenant,
                day=day,
                tool=tool,
                calls=counts["c"],
                units=counts["u"],
                errors=counts["e"],
                rejected=counts["r"],
                latency_ms=counts["l"],
                cancelled=counts["x"],
            )
            for (row_tenant, day, tool), counts in sorted(totals.items())
        ]
