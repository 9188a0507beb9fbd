"""The DynamoDB that `tollway dev` embeds (moto) applies each write atomically, as DynamoDB does.

moto checks a write's condition and then writes, without a lock, so two concurrent conditional
writes to one item could both pass: two requests of one 2025-era session would each record an
upstream session, and a cancellation forwarded from the record would reach the one the call did
not use. `tollway.dev.atomic_moto_writes` (applied by `tollway dev`, the bench's emulator and
tests/conftest.py) makes its writes one at a time.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from tollway.context import Session, UpstreamSession
from tollway.dev import atomic_moto_writes
from tollway.store.sessions import DynamoSessionStore

ROUNDS = 200


def test_of_two_concurrent_requests_recording_an_upstream_session_exactly_one_wins(
    moto_dynamodb: Any, table_name: str
) -> None:
    atomic_moto_writes()  # as `tollway dev` calls it, after tests/conftest.py did: idempotent
    store = DynamoSessionStore(table_name, moto_dynamodb)

    winners = [_race(store, f"race-{round}") for round in range(ROUNDS)]

    assert winners == [1] * ROUNDS


def _race(store: DynamoSessionStore, session_id: str) -> int:
    """How many of two requests, started together, record an upstream session for `session_id`."""
    store.create(Session(session_id, "acme", "alice", "2025-11-25", {}, {}, int(time.time()) + 600))
    start, recorded = threading.Barrier(2), []

    def record(name: str) -> None:
        start.wait()
        recorded.append(store.add_upstream(session_id, "finance", UpstreamSession(name, "2025-11-25"), None))

    threads = [threading.Thread(target=record, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    return recorded.count(True)
