"""The standalone streams' events (`store/events.py`), in DynamoDB (moto) and in memory: ids sort
by time, a replay starts after the id it is given, is bounded, and skips what expired."""

from __future__ import annotations

from typing import Any

import pytest
from tollway.store import events as module
from tollway.store.events import EVENT_ID, DynamoEventStore, MemoryEventStore

from tests.conftest import moto_table


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        yield MemoryEventStore()
        return
    with moto_table("events") as client:
        yield DynamoEventStore("events", client)


def message(n: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/tools/list_changed", "params": {"n": n}}


def test_a_replay_starts_after_the_id_it_is_given_and_keeps_the_order(store: Any) -> None:
    ids = []
    for n in range(3):
        ids.append(store.append("s1", message(n)))  # within one microsecond too: in order
    store.append("s2", message(9))  # another session's stream

    assert all(EVENT_ID.fullmatch(i) for i in ids) and ids == sorted(ids)
    assert store.after("s1", ids[0]) == [(ids[1], message(1)), (ids[2], message(2))]
    assert store.after("s1", ids[2]) == []
    assert [m for _, m in store.after("s1", "0000000000000000-00000000")] == [message(0), message(1), message(2)]


def test_a_replay_is_bounded_and_skips_expired_events(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "REPLAY_LIMIT", 2)
    monkeypatch.setattr(module, "TTL_SECONDS", -1)  # written already expired (TTL deletion lags)
    store.append("s1", message(0))
    monkeypatch.setattr(module, "TTL_SECONDS", 3600)
    kept = [store.append("s1", message(n)) for n in (1, 2, 3)]

    assert [i for i, _ in store.after("s1", "0000000000000000-00000000")] == kept[:2]
