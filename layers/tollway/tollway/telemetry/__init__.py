"""Powertools Logger and Metrics, created once per process and shared.

Service name and namespace come from POWERTOOLS_SERVICE_NAME / POWERTOOLS_METRICS_NAMESPACE
(set by the SAM template); the defaults below serve local runs and tests. Which metrics exist,
with which units and dimensions, and when they are printed: `tollway.telemetry.metrics`.

Logs are Powertools' JSON unless TOLLWAY_LOG_FORMAT=console; local commands pick the console
format on a terminal (`use_log_format`).
"""

import os
from typing import Any, TextIO

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "tollway")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Tollway")

LOG_FORMAT_ENV = "TOLLWAY_LOG_FORMAT"
LOG_FORMATS = ("json", "console")


class ConsoleFormatter(LambdaPowertoolsFormatter):
    """The same records as the JSON logs, one readable line each, for a terminal:
    `20:51:23 INFO  request  http_method=POST path=/mcp status=200 duration_ms=3.1`."""

    _NOT_FIELDS = frozenset(
        {"timestamp", "level", "message", "location", "service", "xray_trace_id", "sampling_rate"}
        | {"exception", "exception_name", "exception_notes", "stack_trace"}
    )

    def serialize(self, log: dict[str, Any]) -> str:  # type: ignore[override]
        when = str(log.get("timestamp", ""))[11:19]  # RFC 3339: the time of day
        fields = " ".join(f"{k}={v}" for k, v in log.items() if k not in self._NOT_FIELDS)
        line = f"{when} {log.get('level', '')!s:<5} {log.get('message', '')}" + (f"  {fields}" if fields else "")
        if exception := log.get("exception"):
            line += f"\n{exception}"
        return line


def _formatter(name: str | None) -> LambdaPowertoolsFormatter:
    cls = ConsoleFormatter if name == "console" else LambdaPowertoolsFormatter
    return cls(use_rfc3339=True)


# JSON unless TOLLWAY_LOG_FORMAT=console: CloudWatch (and the tests) read JSON.
logger = Logger(use_rfc3339=True, logger_formatter=_formatter(os.environ.get(LOG_FORMAT_ENV)))


def use_log_format(stream: TextIO) -> str:
    """For local commands: TOLLWAY_LOG_FORMAT if set, else `console` when `stream` is a terminal,
    else `json`. Switches this process's logger to it and returns it. Never called on Lambda."""
    from tollway.errors import ConfigError

    name = os.environ.get(LOG_FORMAT_ENV) or ("console" if stream.isatty() else "json")
    if name not in LOG_FORMATS:
        raise ConfigError(f"{LOG_FORMAT_ENV} must be one of {', '.join(LOG_FORMATS)} (got {name!r})")
    logger.registered_handler.setFormatter(_formatter(name))
    return name


from tollway.telemetry import metrics  # noqa: E402  (after the defaults above)
from tollway.telemetry.metrics import count, metric  # noqa: E402

__all__ = ["count", "logger", "metric", "metrics", "use_log_format"]
