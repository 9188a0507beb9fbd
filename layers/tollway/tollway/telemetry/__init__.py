"""Powertools Logger, Metrics and Tracer, created once per process and shared.

Service name and namespace come from POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE
(set by the SAM template); the defaults below serve local runs and tests.
"""

import os

from aws_lambda_powertools import Logger, Metrics

os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "tollway")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Tollway")

logger = Logger(use_rfc3339=True)
metrics = Metrics()


def count(name: str, value: float = 1) -> None:
    metric(name, "Count", value)


def metric(name: str, unit: str, value: float) -> None:
    """Add to a metric, unless metrics are disabled (`tollway dev`, tests): Powertools keeps
    unflushed metrics in memory and prints them every 100, so nothing is added then."""
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled

    if not is_metrics_disabled():
        metrics.add_metric(name=name, unit=unit, value=value)


def tool_call_metrics(tenant: str, tool: str, latency_ms: float, error: bool, units: int) -> None:
    """One EMF record per tool call with Tenant and Tool dimensions.

    Cardinality stays bounded: `tenant` is a tenant named in the config or "other" (the caller
    maps it), and `tool` comes from the configured upstreams' catalogs, so the number of metric
    series is at most (configured tenants + 1) x (published tools)."""
    from aws_lambda_powertools.metrics import MetricUnit, single_metric
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled

    if is_metrics_disabled():
        return
    with single_metric(name="ToolCalls", unit=MetricUnit.Count, value=1) as metric:
        metric.add_dimension(name="Tenant", value=tenant)
        metric.add_dimension(name="Tool", value=tool)
        metric.add_metric(name="ToolLatency", unit=MetricUnit.Milliseconds, value=latency_ms)
        metric.add_metric(name="CostUnits", unit=MetricUnit.Count, value=units)
        metric.add_metric(name="ToolErrors", unit=MetricUnit.Count, value=1 if error else 0)
