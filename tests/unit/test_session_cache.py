"""An instance remembers the 2025-era sessions it read (`CachedSessionStore`) for
`sessions.cache_seconds`, and keeps its copy current with its own writes."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
from tollway.context import Session, UpstreamSession
from tollway.store import sessions as module
from tollway.store.sessions import CachedSessionStore, MemorySessionStore

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def time(self) -> float:
        return self.now


class Counting(MemorySessionStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, session_id: str) -> Session | None:
        self.reads += 1
        return super().get(session_id)


class Overtaken(Counting):
    """Its next read answers what the session held when the read began, after `meanwhile` ran."""

    meanwhile: Callable[[], None] | None = None

    def get(self, session_id: str) -> Session | None:
        began = copy.deepcopy(super().get(session_id))
        if self.meanwhile is not None:
            self.meanwhile, meanwhile = None, self.meanwhile
            meanwhile()
        return began


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(module, "time", clock)
    return clock


@pytest.fixture
def stores(clock: Clock) -> tuple[Counting, CachedSessionStore]:
    inner = Counting()
    return inner, CachedSessionStore(inner, seconds=10)


def session(id: str = "s-1", expires_at: int = int(NOW) + 600) -> Session:
    return Session(id, "acme", "alice", "2025-11-25", {"name": "agent"}, {}, expires_at)


def test_a_session_is_read_once_per_interval(clock: Clock, stores: tuple[Counting, CachedSessionStore]) -> None:
    inner, cached = stores
    inner.create(session())

    first = [cached.get("s-1") is not None for _ in range(3)]
    clock.now += 10
    later = cached.get("s-1")

    assert first == [True] * 3 and later is not None
    assert inner.reads == 2


def test_a_session_created_or_renewed_here_is_known_without_a_read(
    clock: Clock, stores: tuple[Counting, CachedSessionStore]
) -> None:
    inner, cached = stores
    cached.create(session())
    cached.renew("s-1", int(NOW) + 9000)

    remembered = cached.get("s-1")

    assert inner.reads == 0
    assert remembered is not None and remembered.expires_at == int(NOW) + 9000


def test_a_deleted_session_is_gone_at_once(stores: tuple[Counting, CachedSessionStore]) -> None:
    _, cached = stores
    cached.create(session())

    cached.delete("s-1")

    assert cached.get("s-1") is None


def test_an_expired_session_is_not_served_from_memory(
    clock: Clock, stores: tuple[Counting, CachedSessionStore]
) -> None:
    _, cached = stores
    cached.create(session(expires_at=int(NOW) + 5))

    clock.now += 6

    assert cached.get("s-1") is None


def test_an_upstream_session_recorded_here_is_remembered_and_a_lost_race_is_read_again(
    stores: tuple[Counting, CachedSessionStore],
) -> None:
    inner, cached = stores
    cached.create(session())
    mine, theirs = UpstreamSession("mine", "2025-11-25"), UpstreamSession("theirs", "2025-11-25")

    assert cached.add_upstream("s-1", "support", mine, None) is True
    assert cached.get("s-1").upstreams == {"support": mine}  # type: ignore[union-attr]
    inner.sessions["s-1"].upstreams["finance"] = theirs  # another instance recorded one first
    assert cached.add_upstream("s-1", "finance", mine, None) is False

    assert cached.get("s-1").upstreams["finance"] == theirs  # type: ignore[union-attr]
    assert inner.reads == 1


def test_a_request_changing_its_copy_does_not_change_what_is_remembered(
    stores: tuple[Counting, CachedSessionStore],
) -> None:
    _, cached = stores
    cached.create(session())

    copy = cached.get("s-1")
    copy.upstreams["support"] = UpstreamSession("unrecorded", "2025-11-25")  # type: ignore[union-attr]

    assert cached.get("s-1").upstreams == {}  # type: ignore[union-attr]


def test_what_is_remembered_is_answered_from_memory_only(
    clock: Clock, stores: tuple[Counting, CachedSessionStore]
) -> None:
    inner, cached = stores
    inner.create(session())

    before = cached.remembered("s-1")  # never read here: not asked of the store either
    cached.get("s-1")
    after = cached.remembered("s-1")
    clock.now += 10
    stale = cached.remembered("s-1")

    assert before is None and stale is None
    assert after is not None and after.id == "s-1"
    assert inner.reads == 1


def test_a_read_overtaken_by_a_lost_race_is_answered_but_not_remembered(clock: Clock) -> None:
    """Two requests of one session: one reads the session while the other loses the race to
    record an upstream session. The read began first, so it lacks the winner's: remembered, it
    would send this instance's calls to an upstream session the record does not hold (and a
    2025-era cancellation, forwarded from the record, would reach another one)."""
    inner = Overtaken()
    cached = CachedSessionStore(inner, seconds=10)
    inner.create(session())
    mine, theirs = UpstreamSession("mine", "2025-11-25"), UpstreamSession("theirs", "2025-11-25")

    def the_other_request_loses_its_race() -> None:
        inner.sessions["s-1"].upstreams["finance"] = theirs  # recorded first, by another request
        assert cached.add_upstream("s-1", "finance", mine, None) is False

    inner.meanwhile = the_other_request_loses_its_race
    overtaken = cached.get("s-1")
    after = cached.get("s-1")  # the loser reads the winner's

    assert overtaken is not None and overtaken.upstreams == {}
    assert after is not None and after.upstreams == {"finance": theirs}
    assert cached.get("s-1").upstreams == {"finance": theirs}  # type: ignore[union-attr]
    assert inner.reads == 2


def test_an_upstream_session_recorded_for_a_session_not_remembered_here_is_read_again(
    stores: tuple[Counting, CachedSessionStore],
) -> None:
    inner, cached = stores
    inner.create(session())
    mine = UpstreamSession("mine", "2025-11-25")

    assert cached.add_upstream("s-1", "finance", mine, None) is True

    assert cached.get("s-1").upstreams == {"finance": mine}  # type: ignore[union-attr]
    assert inner.reads == 1
