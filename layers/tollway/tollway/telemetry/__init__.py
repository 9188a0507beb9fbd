"""Powertools Logger and Metrics, created once per process and shared.

Service name and namespace come from POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE
(set by the SAM template); the defaults below serve local runs and tests. Which metrics exist,
with which units and dimensions: `tollway.telemetry.metrics.CATALOG`; `metrics.log_metrics`
flushes the service-wide ones at the end of an invocation.
"""

import os

from aws_lambda_powertools import Logger

os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "tollway")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Tollway")

logger = Logger(use_rfc3339=True)

from tollway.telemetry import metrics  # noqa: E402  (after the defaults above)
from tollway.telemetry.metrics import count, metric  # noqa: E402

__all__ = ["count", "logger", "metric", "metrics"]
