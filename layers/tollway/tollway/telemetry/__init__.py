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
