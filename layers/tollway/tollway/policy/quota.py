"""Rate limits and quotas: which windows a call touches, what it costs, whether it may run.

Limits come from the tenant's plan (`quotas.plans`): per tenant, per subject within it, and
per tool (glob) within it. Rates (per second / minute) count calls; quotas (per day / month)
count cost units (`quotas.costs`, default 1). All windows a call touches are charged in one
atomic write (see store/counters.py), so no limit is ever exceeded under concurrency.

Leases (`quotas.lease_units` > 1): a warm instance reserves several units of a window in one
write and spends them locally. Lease size per window is min(lease_units, limit // 50), so
small (quiet) limits stay exact. If a lease cannot be had, the call retries with its exact
cost before it is refused. Bound: never over-admits; may under-admit by at most
(lease size - 1) units per warm instance per window, until the window ends.
"""

from __future__ import annotations

import calendar
import fnmatch
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from tollway.config import GatewayConfig, Limits, Plan
from tollway.context import Principal
from tollway.errors import QuotaExceeded, ServiceUnavailable
from tollway.policy.authorization import tenant_policy
from tollway.store.counters import CounterStore, CounterStoreUnavailable, LimitReached, Window
from tollway.store.table import key
from tollway.telemetry import count, logger
from tollway.telemetry.metrics import tenant_count

LEASE_DIVISOR = 50


@dataclass(frozen=True)
class Admission:
    units: int


class QuotaEnforcer:
    def __init__(self, config: GatewayConfig, store: CounterStore) -> None:
        self.config = config
        self.store = store
        self._leases: dict[Window, int] = {}
        """Units this instance has reserved and not yet spent, per window."""
        self._lock = threading.Lock()
        """Admissions run in worker threads on the local server: one at a time per process."""

    def cost(self, tool: str) -> int:
        for pattern, units in self.config.quotas.costs.items():
            if fnmatch.fnmatchcase(tool, pattern):
                return units
        return 1

    def plan(self, tenant: str) -> Plan | None:
        policy = tenant_policy(self.config, tenant)
        name = (policy.plan if policy else None) or self.config.quotas.default_plan
        return self.config.quotas.plans.get(name) if name else None

    def windows(self, principal: Principal, tool: str, at: float, units: int | None = None) -> list[tuple[Window, int]]:
        """Every (window, charge) a call of `tool` by `principal` touches at time `at`;
        `units`: the call's cost, when the caller has it already."""
        plan = self.plan(principal.tenant)
        if plan is None:
            return []
        if units is None:
            units = self.cost(tool)
        # Key parts escaped: a tenant or subject containing `#` never shares another's windows.
        charges = _charges(plan.tenant, "tenant", key("LIMIT", principal.tenant), units, at)
        subject_key = key("LIMIT", principal.tenant, "S", principal.subject)
        charges += _charges(plan.subject, "subject", subject_key, units, at)
        for pattern, limits in plan.tools.items():
            if fnmatch.fnmatchcase(tool, pattern):
                charges += _charges(limits, f"tool {pattern}", key("LIMIT", principal.tenant, "T", pattern), units, at)
        return charges

    def admit(self, principal: Principal, tool: str) -> Admission:
        with self._lock:
            return self._admit(principal, tool)

    def _admit(self, principal: Principal, tool: str) -> Admission:
        at = time.time()
        units = self.cost(tool)
        charges = self.windows(principal, tool, at, units)
        if not charges:
            return Admission(units)
        needed = [(w, u) for w, u in charges if self._leases.get(w, 0) < u]
        try:
            for window, charge in charges:
                if charge > window.limit:  # could never fit, even in an empty window
                    raise LimitReached(window)
            if needed:
                self._reserve(needed, keep={w for w, _ in charges})
        except LimitReached as reached:
            window = reached.window
            retry_after = max(1, int(window.resets_at - at + 0.999))
            logger.info(
                "call refused by a limit",
                extra={"tenant": principal.tenant, "tool": tool, "limit": window.name},
            )
            tenant_count("RateLimited", self.config.metric_tenant(principal.tenant))
            raise QuotaExceeded(
                f"Rate limit exceeded: {window.name} ({window.limit})",
                data={
                    "limit": window.name,
                    "max": window.limit,
                    "resetAt": datetime.fromtimestamp(window.resets_at, UTC).isoformat(),
                    "retryAfterSeconds": retry_after,
                },
                headers={"retry-after": str(retry_after)},
            ) from None
        except CounterStoreUnavailable:
            policy = tenant_policy(self.config, principal.tenant)
            failure_policy = (policy.failure_policy if policy else None) or self.config.quotas.failure_policy
            logger.warning(
                "quota store unavailable",
                extra={"tenant": principal.tenant, "failure_policy": failure_policy},
            )
            count("QuotaStoreFailures", 1)
            if failure_policy == "open":
                return Admission(units)
            raise ServiceUnavailable("Quota service unavailable, retry shortly") from None
        for window, charge in charges:
            self._leases[window] = self._leases.get(window, 0) - charge
        return Admission(units)

    def _reserve(self, needed: list[tuple[Window, int]], keep: set[Window]) -> None:
        """Reserve a lease per window (exact cost if the lease does not fit), all or nothing."""
        lease_units = self.config.quotas.lease_units
        attempts = [needed]
        if lease_units > 1:
            leased = [(w, max(u, min(lease_units, w.limit // LEASE_DIVISOR))) for w, u in needed]
            if leased != needed:
                attempts.insert(0, leased)
        for index, attempt in enumerate(attempts):
            try:
                self.store.consume(attempt)
            except LimitReached:
                if index == len(attempts) - 1:
                    raise
                continue
            at = time.time()
            # Units left in ended windows expire with them (not those this admission is charging).
            self._leases = {w: n for w, n in self._leases.items() if w.resets_at > at or w in keep}
            for window, reserved in attempt:
                self._leases[window] = self._leases.get(window, 0) + reserved
            return


def _charges(limits: Limits, scope: str, pk: str, units: int, at: float) -> list[tuple[Window, int]]:
    moment = datetime.fromtimestamp(at, UTC)
    result = []
    for period, limit in (
        ("per_second", limits.per_second),
        ("per_minute", limits.per_minute),
        ("per_day", limits.per_day),
        ("per_month", limits.per_month),
    ):
        if limit is None:
            continue
        start, end = _bounds(period, moment)
        charge = 1 if period in ("per_second", "per_minute") else units  # rates count calls
        if charge:  # a free tool uses no quota units
            result.append((Window(f"{scope} {period}", pk, f"{period}#{start}", limit, end), charge))
    return result


def _bounds(period: str, moment: datetime) -> tuple[str, float]:
    """Window id and end (epoch seconds) of the window containing `moment`."""
    epoch = moment.timestamp()
    if period == "per_second":
        return str(int(epoch)), float(int(epoch) + 1)
    if period == "per_minute":
        start = int(epoch) // 60 * 60
        return str(start), float(start + 60)
    if period == "per_day":
        start = int(epoch) // 86400 * 86400
        return moment.strftime("%Y-%m-%d"), float(start + 86400)
    days = calendar.monthrange(moment.year, moment.month)[1]
    first = datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp()
    return moment.strftime("%Y-%m"), first + days * 86400
