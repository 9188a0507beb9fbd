"""Every CloudWatch metric the gateway emits, in one catalog, and the functions that emit them.

The catalog is the contract with the template's alarms and dashboard (a test checks each alarm
against it): name -> unit and the exact dimension set of its EMF records, Powertools' default
`service` dimension included. Emitting a name that is not here, or with other dimensions, raises.

Service-wide metrics go through Powertools' shared `Metrics`; metrics with their own dimensions
collect in one `EphemeralMetrics` per dimension set (Powertools' `single_metric` keeps only the
first metric of a record). `flush_due`, called once at the end of every request (the telemetry
middleware, so Lambda, its streaming entry point and the local server alike), prints them:

- at once when TOLLWAY_METRICS_WINDOW_SECONDS is 0 or unset (one record per dimension set per
  request), or when the request added anything alarm-worthy (an error, a refusal, an upstream
  failure: every metric but the ROUTINE ones);
- otherwise once the oldest value held is that many seconds old, values of many requests in one
  record (EMF takes up to 100 values per metric; Powertools prints a full record itself). The
  record is stamped with its first value's time, so values land in the minute they happened.

What the window costs: on a busy instance, routine values (calls, latency) reach CloudWatch up to
the window late; an instance that goes idle holds them until its next request, and loses them if
Lambda reclaims it first. Usage for finance is never a metric: it is written to DynamoDB with the
call (`store.ledger`), exact either way. What it saves: the per-call EMF bytes (log ingestion),
divided by the calls per window on a busy instance.
Dimension values are bounded by the callers: a tenant named in the config or "other"
(`GatewayConfig.metric_tenant`), a published tool, a configured upstream.
"""

from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

from aws_lambda_powertools import Metrics

WINDOW_ENV = "TOLLWAY_METRICS_WINDOW_SECONDS"
_shared = Metrics()

SERVICE = "service"
"""Powertools adds this dimension (POWERTOOLS_SERVICE_NAME) to every record."""


class Metric(NamedTuple):
    unit: str
    dimensions: tuple[str, ...]
    """The record's one dimension set, sorted as Powertools writes it."""


_PER_CALL = ("Tenant", "Tool", SERVICE)
_PER_TENANT = ("Tenant", SERVICE)
_PER_UPSTREAM = ("Upstream", SERVICE)
_SERVICE_WIDE = (SERVICE,)

CATALOG: dict[str, Metric] = {
    # one record per tool call
    "ToolCalls": Metric("Count", _PER_CALL),
    "ToolErrors": Metric("Count", _PER_CALL),
    "CostUnits": Metric("Count", _PER_CALL),
    "ToolLatency": Metric("Milliseconds", _PER_CALL),
    "UpstreamLatency": Metric("Milliseconds", _PER_CALL),
    # per tenant
    "RateLimited": Metric("Count", _PER_TENANT),
    "Denied": Metric("Count", _PER_TENANT),
    "ApprovalsPending": Metric("Count", _PER_TENANT),
    # per upstream
    "UpstreamFailures": Metric("Count", _PER_UPSTREAM),
    "UpstreamCircuitOpened": Metric("Count", _PER_UPSTREAM),
    # service-wide
    "Requests": Metric("Count", _SERVICE_WIDE),
    "Errors": Metric("Count", _SERVICE_WIDE),
    "Latency": Metric("Milliseconds", _SERVICE_WIDE),
    "AuthFailures": Metric("Count", _SERVICE_WIDE),
    "QuotaStoreFailures": Metric("Count", _SERVICE_WIDE),
    "UsageWriteFailures": Metric("Count", _SERVICE_WIDE),
    "DefinitionDrift": Metric("Count", _SERVICE_WIDE),
    "PoisonedDefinitions": Metric("Count", _SERVICE_WIDE),
    "InvalidDefinitions": Metric("Count", _SERVICE_WIDE),
    "MaskedValues": Metric("Count", _SERVICE_WIDE),
    "ConfigRejected": Metric("Count", _SERVICE_WIDE),
    "AuditWriteFailures": Metric("Count", _SERVICE_WIDE),
}


ROUTINE = frozenset(
    {"ToolCalls", "ToolErrors", "CostUnits", "ToolLatency", "UpstreamLatency", "Requests", "Latency", "MaskedValues"}
)
"""Values that may wait for the window (ToolErrors only while it is 0); anything else flushes at once."""


def _window_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(WINDOW_ENV) or 0))
    except ValueError:
        return 0.0


class _Held:
    """The values not printed yet: the shared service-wide set and one set per dimension set."""

    def __init__(self) -> None:
        self.by_dimensions: dict[tuple[tuple[str, str], ...], Any] = {}
        self.since: float | None = None
        """Wall time of the oldest value held (None: nothing held)."""
        self.urgent = False

    def hold(self, urgent: bool) -> None:
        if self.since is None:
            self.since = time.time()
            _shared.set_timestamp(int(self.since * 1000))
        self.urgent = self.urgent or urgent

    def due(self) -> bool:
        if self.since is None:
            return False
        return self.urgent or time.time() - self.since >= _window_seconds()

    def flush(self) -> None:
        held, self.by_dimensions, self.since, self.urgent = self.by_dimensions, {}, None, False
        for emf in held.values():
            emf.flush_metrics()
        if _shared.metric_set:
            _shared.flush_metrics()
        _shared.provider.timestamp = None

    def discard(self) -> None:
        self.by_dimensions, self.since, self.urgent = {}, None, False
        _shared.clear_metrics()
        _shared.provider.timestamp = None


_held = _Held()


def flush_due() -> None:
    """Print what is held if it is due (see the module docstring); once at the end of each request."""
    if _held.due():
        _held.flush()


def flush_metrics() -> None:
    """Print everything held now (process shutdown, tests)."""
    _held.flush()


def discard() -> None:
    """Drop everything held, unprinted (tests: nothing left over for another test)."""
    _held.discard()


def _disabled() -> bool:
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled

    return bool(is_metrics_disabled())


def count(name: str, value: float = 1) -> None:
    """Add to a service-wide metric."""
    metric(name, value)


def metric(name: str, value: float) -> None:
    """Add to a service-wide metric, unless metrics are disabled (`tollway dev`, tests):
    Powertools keeps unflushed metrics in memory and prints them every 100, so nothing is added then."""
    spec = CATALOG[name]
    if spec.dimensions != _SERVICE_WIDE:
        raise ValueError(f"metric {name} has dimensions {spec.dimensions}: emit it with `record`")
    if not _disabled():
        _held.hold(urgent=name not in ROUTINE)
        _shared.add_metric(name=name, unit=spec.unit, value=value)


def record(dimensions: dict[str, str], values: dict[str, float], routine: bool = False) -> None:
    """Add `values` (metric name -> value) under `dimensions` to the record held for that dimension
    set; `routine` values may wait for the window, others make the held records due at once."""
    if _disabled():
        return
    expected = (*sorted(dimensions), SERVICE)
    for name in values:
        if CATALOG[name].dimensions != expected:
            raise ValueError(f"metric {name} has dimensions {CATALOG[name].dimensions}, not {expected}")
    key = tuple(sorted(dimensions.items()))
    emf = _held.by_dimensions.get(key)
    if emf is None:
        from aws_lambda_powertools.metrics import EphemeralMetrics

        emf = _held.by_dimensions[key] = EphemeralMetrics()
        for name, value in dimensions.items():
            emf.add_dimension(name=name, value=value)
        emf.set_timestamp(int(time.time() * 1000))  # the record's first value's time
    _held.hold(urgent=not routine)
    for name, value in values.items():
        emf.add_metric(name=name, unit=CATALOG[name].unit, value=value)


def tool_call(tenant: str, tool: str, *, latency_ms: float, upstream_ms: float | None, error: bool, units: int) -> None:
    """The one record of a tool call: every per-call metric, dimensions Tenant and Tool."""
    values = {"ToolCalls": 1, "ToolErrors": 1 if error else 0, "CostUnits": units, "ToolLatency": latency_ms}
    if upstream_ms is not None:
        values["UpstreamLatency"] = upstream_ms
    record({"Tenant": tenant, "Tool": tool}, values, routine=not error)


def tenant_count(name: str, tenant: str) -> None:
    """RateLimited, Denied, ApprovalsPending: one per event, dimension Tenant."""
    record({"Tenant": tenant}, {name: 1})


def upstream_count(name: str, upstream: str) -> None:
    """UpstreamFailures, UpstreamCircuitOpened: one per event, dimension Upstream."""
    record({"Upstream": upstream}, {name: 1})
