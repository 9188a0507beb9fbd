"""Window counters for rate limits and quotas: exact under concurrency, one request per admission.

Item per (scope, window):  pk LIMIT#<scope key>   sk <period>#<window start>   used (N), expires_at
An admission adds its units to every window it touches in ONE TransactWriteItems, each with the
condition `used + units <= limit`: N concurrent Lambda invocations can never admit more than a
limit allows, and a refused call consumes nothing (the transaction is all or nothing).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Protocol

from tollway.errors import StorageError
from tollway.store.table import DynamoTable

CONFLICT_RETRIES = 3
"""Concurrent transactions on one item cancel each other (TransactionConflict): retried, not fatal."""


@dataclass(frozen=True)
class Window:
    name: str
    """Human name of the limit: `tenant per_minute`, `subject per_day`, `tool finance__* per_second`."""
    pk: str
    sk: str
    limit: int
    resets_at: float
    """Epoch seconds when the window ends."""


class LimitReached(Exception):
    def __init__(self, window: Window) -> None:
        self.window = window
        super().__init__(window.name)


class CounterStoreUnavailable(StorageError):
    """The store could not decide (throttled, unreachable). The caller applies the failure policy."""


class CounterStore(Protocol):
    def consume(self, charges: list[tuple[Window, int]]) -> None:
        """Add each charge's units to its window, all or nothing; LimitReached names a full window."""
        ...


class MemoryCounterStore:
    """In-process store for tests; same contract."""

    def __init__(self) -> None:
        self.used: dict[tuple[str, str], int] = {}
        self.fail_with: Exception | None = None

    def consume(self, charges: list[tuple[Window, int]]) -> None:
        if self.fail_with is not None:
            raise CounterStoreUnavailable() from self.fail_with
        for window, units in charges:
            if self.used.get((window.pk, window.sk), 0) + units > window.limit:
                raise LimitReached(window)
        for window, units in charges:
            self.used[(window.pk, window.sk)] = self.used.get((window.pk, window.sk), 0) + units


class DynamoCounterStore(DynamoTable):
    def consume(self, charges: list[tuple[Window, int]]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        items = [
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": {"pk": {"S": window.pk}, "sk": {"S": window.sk}},
                    "UpdateExpression": "ADD used :units SET expires_at = :ttl",
                    "ConditionExpression": "attribute_not_exists(used) OR used <= :room",
                    "ExpressionAttributeValues": {
                        ":units": {"N": str(units)},
                        ":room": {"N": str(window.limit - units)},
                        # Kept a day past the window, so an operator can still look at it.
                        ":ttl": {"N": str(int(window.resets_at) + 86400)},
                    },
                }
            }
            for window, units in charges
        ]
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                self.client.transact_write_items(TransactItems=items)
                return
            except ClientError as exc:
                error = exc.response.get("Error", {})
                reasons = exc.response.get("CancellationReasons") or []
                if error.get("Code") != "TransactionCanceledException":
                    raise CounterStoreUnavailable(error.get("Code", "ClientError")) from exc
                for (window, _), reason in zip(charges, reasons, strict=False):
                    if reason.get("Code") == "ConditionalCheckFailed":
                        raise LimitReached(window) from None
                conflicted = any(reason.get("Code") == "TransactionConflict" for reason in reasons)
                if not conflicted or attempt == CONFLICT_RETRIES:
                    raise CounterStoreUnavailable("TransactionCanceledException") from exc
                # Another admission is writing the same window right now: try again shortly.
                time.sleep(random.uniform(0.005, 0.02) * (attempt + 1))
            except BotoCoreError as exc:
                raise CounterStoreUnavailable(type(exc).__name__) from exc
