"""Per-upstream resilience: a circuit breaker, and the backoff between safe retries.

The breaker counts consecutive failures of one upstream (timeouts, unreachable, invalid answers)
on this warm instance. At `failure_threshold` it opens: calls fail at once with a retryable 503
for `recovery_seconds`; then one call is let through as a probe, and its outcome closes the
circuit or opens it again. Why per instance, not shared: a Lambda instance that meets a dead
upstream pays at most `failure_threshold` timeouts before it stops waiting on it, and a shared
state would cost a DynamoDB read per call to save those few. Why not Powertools' circuit
breaker: it guards synchronous functions (it calls the function and counts what it raises), and
the upstream call here is an async stream; its shared state also reads DynamoDB per call.
"""

from __future__ import annotations

import random
import time

from tollway.config import CircuitConfig
from tollway.errors import UpstreamCircuitOpen
from tollway.telemetry import logger
from tollway.telemetry.metrics import upstream_count

BACKOFF_BASE_SECONDS = 0.1


class CircuitBreaker:
    def __init__(self, upstream: str, config: CircuitConfig) -> None:
        self.upstream = upstream
        self.config = config
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def open(self) -> bool:
        return self._opened_at is not None

    @property
    def state(self) -> str:
        """`closed`; `open` (calls fail at once); `half_open` (rested: the next call is a probe)."""
        if self._opened_at is None:
            return "closed"
        if self._probing or time.monotonic() - self._opened_at >= self.config.recovery_seconds:
            return "half_open"
        return "open"

    @property
    def failures(self) -> int:
        """Consecutive failed exchanges."""
        return self._failures

    def check(self) -> None:
        """Raise UpstreamCircuitOpen while the circuit is open; once it has rested, let one probe by."""
        if self._opened_at is None:
            return
        waited = time.monotonic() - self._opened_at
        if waited >= self.config.recovery_seconds and not self._probing:
            self._probing = True
            return
        retry_after = max(1, int(self.config.recovery_seconds - waited + 0.999))
        raise UpstreamCircuitOpen(
            self.upstream,
            retryable=True,
            data={"retryAfterSeconds": retry_after},
            headers={"retry-after": str(retry_after)},
        )

    def record(self, healthy: bool | None) -> None:
        """The outcome of one exchange: the upstream answered (True), failed (False), or the
        exchange was abandoned before it could tell (None: the caller went away)."""
        if healthy is None:
            self._probing = False  # let another call probe
        elif healthy:
            if self._opened_at is not None:
                logger.info("upstream circuit closed", extra={"upstream": self.upstream})
            self._failures, self._opened_at, self._probing = 0, None, False
        else:
            self._failed()

    def _failed(self) -> None:
        self._failures += 1
        upstream_count("UpstreamFailures", self.upstream)
        if self._probing or (self._opened_at is None and self._failures >= self.config.failure_threshold):
            logger.warning("upstream circuit opened", extra={"upstream": self.upstream, "failures": self._failures})
            upstream_count("UpstreamCircuitOpened", self.upstream)
            self._opened_at, self._probing = time.monotonic(), False


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (0-based): exponential, with full jitter."""
    return random.uniform(0, BACKOFF_BASE_SECONDS * 2**attempt)
