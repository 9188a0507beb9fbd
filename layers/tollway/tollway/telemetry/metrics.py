"""Every CloudWatch metric the gateway emits, in one catalog, and the functions that emit them.

The catalog is the contract with the template's alarms and dashboard (a test checks each alarm
against it): name -> unit and the exact dimension set of its EMF records, Powertools' default
`service` dimension included. Emitting a name that is not here, or with other dimensions, raises.

Service-wide metrics go through Powertools' shared `Metrics` (flushed once per invocation by
`log_metrics`); metrics with their own dimensions are one EMF record each, printed at once
(`EphemeralMetrics`: Powertools' `single_metric` keeps only the first metric of a record).
Dimension values are bounded by the callers: a tenant named in the config or "other"
(`GatewayConfig.metric_tenant`), a published tool, a configured upstream.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_lambda_powertools import Metrics

_shared = Metrics()
log_metrics = _shared.log_metrics
"""The Lambda handler's decorator: flushes the service-wide metrics once per invocation."""
flush_metrics = _shared.flush_metrics

SERVICE = "service"
"""Powertools adds this dimension (POWERTOOLS_SERVICE_NAME) to every record."""


@dataclass(frozen=True)
class Metric:
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
        _shared.add_metric(name=name, unit=spec.unit, value=value)


def record(dimensions: dict[str, str], values: dict[str, float]) -> None:
    """Print one EMF record now: `values` (metric name -> value) under `dimensions`."""
    if _disabled():
        return
    from aws_lambda_powertools.metrics import EphemeralMetrics

    expected = (*sorted(dimensions), SERVICE)
    for name in values:
        if CATALOG[name].dimensions != expected:
            raise ValueError(f"metric {name} has dimensions {CATALOG[name].dimensions}, not {expected}")
    emf = EphemeralMetrics()
    for key, value in dimensions.items():
        emf.add_dimension(name=key, value=value)
    for name, value in values.items():
        emf.add_metric(name=name, unit=CATALOG[name].unit, value=value)
    emf.flush_metrics()


def tool_call(tenant: str, tool: str, *, latency_ms: float, upstream_ms: float | None, error: bool, units: int) -> None:
    """The one record of a tool call: every per-call metric, dimensions Tenant and Tool."""
    values = {"ToolCalls": 1, "ToolErrors": 1 if error else 0, "CostUnits": units, "ToolLatency": latency_ms}
    if upstream_ms is not None:
        values["UpstreamLatency"] = upstream_ms
    record({"Tenant": tenant, "Tool": tool}, values)


def tenant_count(name: str, tenant: str) -> None:
    """RateLimited, Denied, ApprovalsPending: one per event, dimension Tenant."""
    record({"Tenant": tenant}, {name: 1})


def upstream_count(name: str, upstream: str) -> None:
    """UpstreamFailures, UpstreamCircuitOpened: one per event, dimension Upstream."""
    record({"Upstream": upstream}, {name: 1})
