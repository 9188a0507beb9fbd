"""Rate limits, quotas and the usage record of each call: which scopes a call touches, what it
costs, whether it may run — and its finance record, written by the same write that admits it.

Limits come from the tenant's plan (`quotas.plans`): per tenant, per subject within it, and per
tool (glob) within it. Rates (per second / minute) count calls; quotas (per day / month) count
cost units (`quotas.costs`, default 1). Each scope is one item per day in the ledger
(`store/ledger.py`), charged with one conditional write: a call of a tenant whose limits are
all per tenant costs ONE DynamoDB request, which admits it and records its calls and units per
tool; each subject or tool limit adds one request (charged first; refunded if a later scope
refuses). Metered calls of a tenant without a plan still write their usage (the same request,
no condition).

What is only known after the call is kept off the path: a failed call adds its error with a
second write; latency and rejected calls are added to the tenant's next write (at the latest
`FLUSH_SECONDS` later, by their own write). Bound: an instance that is reclaimed loses the
latency and rejection counts of at most its last `FLUSH_SECONDS`; calls, units and errors are
written before the answer (a failed write is kept and written with the next one).

Leases (`quotas.lease_units` > 1), for scopes without rate limits: an instance charges several
units of a scope at once and spends them locally (its calls' usage then rides on its next write
of the tenant's item). Lease size is min(lease_units, smallest quota // 50), so small (quiet)
limits stay exact. Never over-admits; may under-admit by at most (lease size - 1) units per
instance per scope and day. Rates are always charged per call.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import NamedTuple

from tollway.config import GatewayConfig, Limits, Plan
from tollway.context import Principal
from tollway.errors import QuotaExceeded, ServiceUnavailable, StorageError
from tollway.policy.authorization import tenant_policy
from tollway.store.ledger import Charge, Ledger, Limit, LimitReached, Scope, day_of, usage_attribute
from tollway.store.table import key
from tollway.telemetry import count, logger
from tollway.telemetry.metrics import tenant_count

LEASE_DIVISOR = 50
FLUSH_SECONDS = 60.0
_PERIODS = (("per_second", "second"), ("per_minute", "minute"), ("per_day", "day"), ("per_month", "month"))


class Admission(NamedTuple):
    units: int
    day: str
    """The UTC day the call was charged to: its outcome is recorded there."""


class _Pending:
    """Finance counters of a tenant's day waiting for that item's next write, since `since`."""

    __slots__ = ("counts", "since")

    def __init__(self, since: float) -> None:
        self.counts: Counter[str] = Counter()
        self.since = since


class QuotaEnforcer:
    def __init__(self, config: GatewayConfig, ledger: Ledger) -> None:
        self.config = config
        self.ledger = ledger
        self._leases: dict[tuple[str, str], int] = {}
        """(scope, day) -> units this instance has charged and not yet spent."""
        self._pending: dict[tuple[str, str], _Pending] = {}
        """(tenant, day) -> counters for the tenant's item, written with its next write."""
        self._lock = threading.Lock()
        """Guards the two dicts above; never held during a write."""

    def cost(self, tool: str) -> int:
        for pattern, units in self.config.quotas.costs.items():
            if fnmatch.fnmatchcase(tool, pattern):
                return units
        return 1

    def plan(self, tenant: str) -> Plan | None:
        policy = tenant_policy(self.config, tenant)
        name = (policy.plan if policy else None) or self.config.quotas.default_plan
        return self.config.quotas.plans.get(name) if name else None

    def scopes(self, principal: Principal, tool: str) -> list[Scope]:
        """The scopes a call of `tool` by `principal` is charged to: subject and tool limits first,
        the tenant's own scope (which carries the usage record) last, always."""
        plan = self.plan(principal.tenant)
        tenant = principal.tenant
        scopes = []
        if plan is not None:
            # Key parts escaped: a tenant or subject containing `#` never shares another's items.
            if limits := _limits(plan.subject, "subject"):
                scopes.append(Scope(key("LIMIT", tenant, "S", principal.subject), limits))
            for pattern, tool_limits in plan.tools.items():
                if fnmatch.fnmatchcase(tool, pattern) and (limits := _limits(tool_limits, f"tool {pattern}")):
                    scopes.append(Scope(key("LIMIT", tenant, "T", pattern), limits))
        own = _limits(plan.tenant, "tenant") if plan is not None else ()
        if own or self.config.finance.record_usage:
            scopes.append(Scope(key("USAGE", tenant), own, tenant=tenant, shards=plan.shards if plan else 1))
        return scopes

    # --- before the call ---------------------------------------------------------------------------
    def admit(self, principal: Principal, tool: str) -> Admission:
        """Charge every scope, or raise QuotaExceeded (nothing charged) / ServiceUnavailable."""
        at = time.time()
        units = self.cost(tool)
        day = day_of(at)
        usage = (
            {usage_attribute("c", tool): 1, usage_attribute("u", tool): units}
            if self.config.finance.record_usage
            else {}
        )
        charged: list[Charge] = []
        try:
            for scope in self.scopes(principal, tool):
                charge = Charge(scope, 1, units, usage if scope.tenant else {})
                if self._spend_lease(charge, day):
                    if scope.tenant:
                        self._add_pending(principal.tenant, day, usage, at)
                    continue
                self._charge(charge, day, at)
                charged.append(charge)
        except LimitReached as reached:
            self._refund(charged, day)
            self._add_pending(principal.tenant, day, {usage_attribute("r", tool): 1}, at)
            raise self._refusal(principal, tool, reached, at) from None
        except StorageError:
            self._refund(charged, day)
            return self._store_failed(principal, units, day, usage, at)
        return Admission(units, day)

    def _charge(self, charge: Charge, day: str, at: float) -> None:
        """One write: a lease where it applies (else the call's own units), with the tenant's
        pending counters riding along (kept pending again if the write fails)."""
        tenant = charge.scope.tenant
        taken = self._take_pending(tenant, day) if tenant else {}
        usage = dict(Counter(charge.usage) + Counter(taken))
        lease = self._lease_size(charge)
        attempts = [lease, charge.units] if lease > charge.units else [charge.units]
        try:
            for units in attempts:
                try:
                    self.ledger.charge(Charge(charge.scope, charge.calls, units, usage), at)
                except LimitReached:
                    if units == attempts[-1]:
                        raise
                    continue
                if units > charge.units:
                    with self._lock:
                        self._leases = {k: v for k, v in self._leases.items() if k[1] == day}  # old days lapse
                        lease_key = (charge.scope.pk, day)
                        self._leases[lease_key] = self._leases.get(lease_key, 0) + units - charge.units
                return
        except (LimitReached, StorageError):
            if tenant and taken:
                self._add_pending(tenant, day, taken, at)
            raise

    def _lease_size(self, charge: Charge) -> int:
        lease_units = self.config.quotas.lease_units
        limits = charge.scope.limits
        if lease_units <= 1 or not limits or any(limit.rate for limit in limits):
            return charge.units
        smallest = min(limit.max for limit in charge.scope.items()[-1].limits)  # a shard's share
        return max(charge.units, min(lease_units, smallest // LEASE_DIVISOR))

    def _spend_lease(self, charge: Charge, day: str) -> bool:
        with self._lock:
            left = self._leases.get((charge.scope.pk, day))
            if left is None or left < charge.units:
                return False
            self._leases[(charge.scope.pk, day)] = left - charge.units
            return True

    def _refund(self, charged: list[Charge], day: str) -> None:
        """Give back the units of scopes charged before a later one refused (best effort: a refund
        that fails only under-admits)."""
        for charge in charged:
            try:
                self.ledger.refund(charge, day)
            except StorageError:
                logger.warning("quota refund failed", extra={"scope": "subject or tool"})

    def _refusal(self, principal: Principal, tool: str, reached: LimitReached, at: float) -> QuotaExceeded:
        limit = reached.limit
        retry_after = max(1, int(reached.retry_after + 0.999))
        logger.info("call refused by a limit", extra={"tenant": principal.tenant, "tool": tool, "limit": limit.name})
        tenant_count("RateLimited", self.config.metric_tenant(principal.tenant))
        return QuotaExceeded(
            f"Rate limit exceeded: {limit.name} ({limit.max})",
            data={
                "limit": limit.name,
                "max": limit.max,
                "resetAt": datetime.fromtimestamp(reached.resets_at, UTC).isoformat(),
                "retryAfterSeconds": retry_after,
            },
            headers={"retry-after": str(retry_after)},
        )

    def _store_failed(self, principal: Principal, units: int, day: str, usage: dict[str, int], at: float) -> Admission:
        policy = tenant_policy(self.config, principal.tenant)
        failure_policy = (policy.failure_policy if policy else None) or self.config.quotas.failure_policy
        logger.warning("quota store unavailable", extra={"tenant": principal.tenant, "failure_policy": failure_policy})
        count("QuotaStoreFailures", 1)
        if failure_policy == "open":
            self._add_pending(principal.tenant, day, usage, at)  # recorded with the next write that succeeds
            return Admission(units, day)
        raise ServiceUnavailable("Quota service unavailable, retry shortly")

    # --- after the call ----------------------------------------------------------------------------
    def blocking(self, principal: Principal) -> bool:
        """Whether admitting a call of `principal` writes to the store (else `admit` returns at once
        and need not leave the event loop)."""
        return self.config.finance.record_usage or self.plan(principal.tenant) is not None

    def settle(
        self,
        principal: Principal,
        tool: str,
        admission: Admission,
        *,
        error: bool,
        latency_ms: float,
        cancelled: bool = False,
    ) -> bool:
        """The outcome of an admitted call, kept in memory: latency rides on the tenant's next
        write. Returns whether a write is due now (`flush_due`): an error (a second write, only for
        failures) or counters that waited `FLUSH_SECONDS`. A cancelled call is an error that is
        also counted as cancelled."""
        if not self.config.finance.record_usage:
            return False
        at = time.time()
        self._add_pending(principal.tenant, admission.day, {usage_attribute("l", tool): round(latency_ms)}, at)
        if error or cancelled:
            failed = {usage_attribute("e", tool): 1}
            if cancelled:
                failed[usage_attribute("x", tool)] = 1
            self._add_pending(principal.tenant, admission.day, failed, at, due=True)
        with self._lock:
            return any(at - p.since >= FLUSH_SECONDS for p in self._pending.values())

    def flush_due(self) -> None:
        """Write the counters that are due (blocking: call off the event loop)."""
        self._flush_stale(time.time())

    def flush(self, tenant: str, day: str) -> None:
        """Write the tenant's pending counters of `day` now (kept for the next write if that fails)."""
        counts = self._take_pending(tenant, day)
        if not counts:
            return
        try:
            self.ledger.add(Scope(key("USAGE", tenant), tenant=tenant), day, counts)
        except StorageError:
            logger.error("usage counters kept for the next write")
            count("UsageWriteFailures", 1)
            self._add_pending(tenant, day, counts, time.time())

    def take_pending(self, other: QuotaEnforcer) -> None:
        """Carry over the usage counters `other` still had to write (a live config change
        replaces the enforcer; its successor writes them)."""
        with other._lock:
            pending, other._pending = other._pending, {}
        for (tenant, day), waiting in pending.items():
            self._add_pending(tenant, day, dict(waiting.counts), waiting.since)

    def flush_all(self) -> None:
        """Write every pending counter (the local server calls this when it stops)."""
        with self._lock:
            waiting = list(self._pending)
        for tenant, day in waiting:
            self.flush(tenant, day)

    def _flush_stale(self, at: float) -> None:
        with self._lock:
            stale = [k for k, p in self._pending.items() if at - p.since >= FLUSH_SECONDS]
        for tenant, day in stale:
            self.flush(tenant, day)

    def _add_pending(self, tenant: str, day: str, counts: dict[str, int], at: float, due: bool = False) -> None:
        """`due`: written at the next `flush_due`, however recent."""
        with self._lock:
            pending = self._pending.setdefault((tenant, day), _Pending(since=at))
            pending.counts.update(counts)
            if due:
                pending.since = min(pending.since, at - FLUSH_SECONDS)

    def _take_pending(self, tenant: str, day: str) -> dict[str, int]:
        with self._lock:
            pending = self._pending.pop((tenant, day), None)
        return dict(pending.counts) if pending is not None else {}


def _limits(limits: Limits, scope: str) -> tuple[Limit, ...]:
    return tuple(
        Limit(f"{scope} {name}", period, value)  # type: ignore[arg-type]
        for name, period in _PERIODS
        if (value := getattr(limits, name)) is not None
    )
