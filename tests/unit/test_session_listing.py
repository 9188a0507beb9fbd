"""Listing a tenant's sessions, in the DynamoDB store (moto, the table from template.yaml) and its
in-memory stand-in: the same contract. Only live sessions of exactly that tenant, newest first,
in pages a cursor continues; a cursor the store did not hand out is refused; renewing a session
records when (its "last used")."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from tollway.context import Session
from tollway.store.sessions import DynamoSessionStore, InvalidCursor, MemorySessionStore, SessionStore

TABLE = "tollway-session-listing"


@pytest.fixture(scope="module")
def table_name() -> str:
    return TABLE


@pytest.fixture(params=["dynamodb", "memory"])
def store(request: pytest.FixtureRequest) -> Iterator[SessionStore]:
    if request.param == "memory":
        yield MemorySessionStore()
        return
    from tests.conftest import moto_table

    with moto_table(TABLE) as client:
        yield DynamoSessionStore(TABLE, client)


def session(session_id: str, tenant: str, created: int, expires_in: int = 3600) -> Session:
    now = int(time.time())
    return Session(
        id=session_id,
        tenant=tenant,
        subject=f"user-{session_id}",
        protocol_version="2025-11-25",
        client_info={"name": "c", "version": "1"},
        client_capabilities={},
        expires_at=now + expires_in,
        created_at=created,
        used_at=created,
    )


def every_page(store: SessionStore, tenant: str, limit: int) -> tuple[list[str], int]:
    ids: list[str] = []
    cursor, pages = None, 0
    while True:
        found, cursor = store.list_tenant(tenant, limit, cursor)
        ids.extend(s.id for s in found)
        pages += 1
        if cursor is None:
            return ids, pages


def test_only_the_tenants_live_sessions_newest_first_across_pages(store: SessionStore) -> None:
    now = int(time.time())
    for n in range(5):
        store.create(session(f"s{n}", "a", created=now - 100 + n))
    store.create(session("other", "a#b", created=now))  # its key must not fall under tenant "a"
    store.create(session("gone", "a", created=now, expires_in=-5))  # expired, not yet swept

    ids, pages = every_page(store, "a", limit=2)

    assert ids == ["s4", "s3", "s2", "s1", "s0"]
    assert pages >= 3
    assert every_page(store, "a#b", limit=10)[0] == ["other"]
    assert every_page(store, "nobody", limit=10)[0] == []


def test_ids_with_key_separators_come_back_as_they_were(store: SessionStore) -> None:
    store.create(session("x#y%23z", "t", created=int(time.time())))
    store.create(session("plain", "t", created=int(time.time()) - 1))

    assert every_page(store, "t", limit=1)[0] == ["x#y%23z", "plain"]


@pytest.mark.parametrize("cursor", ["garbage!", "e30", "WyJhIl0", "x" * 2000])
def test_a_cursor_the_store_did_not_hand_out_is_refused(store: SessionStore, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        store.list_tenant("a", 10, cursor)


def test_renewing_a_session_records_when_it_was_last_used(store: SessionStore) -> None:
    long_ago = int(time.time()) - 1000
    store.create(session("s", "a", created=long_ago))

    store.renew("s", int(time.time()) + 3600)
    renewed: Any = store.get("s")

    assert renewed.created_at == long_ago
    assert renewed.used_at >= int(time.time()) - 5


def test_minted_ids_never_start_with_a_dash_so_the_cli_takes_them_as_arguments() -> None:
    from tollway.context import new_id

    ids = [new_id(12) for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids) and all(len(i) == 17 for i in ids)  # 1 + 16 URL-safe characters
