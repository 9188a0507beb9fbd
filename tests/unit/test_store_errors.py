"""What a DynamoDB failure becomes in each store: its own StorageError naming the store, no AWS
detail (the caller sees the retryable 503 of `errors.answer_for`); a failed condition only where
the store asked for it (a taken session id, a lost race)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from tollway.context import Session, UpstreamSession
from tollway.errors import ServiceUnavailable, StorageError, answer_for
from tollway.store.ledger import Charge, DynamoLedger, Scope
from tollway.store.pins import DynamoPinStore
from tollway.store.sessions import DynamoSessionStore
from tollway.store.table import DynamoTable

TABLE = "TollwayTable"


class Unreachable:
    def __getattr__(self, operation: str) -> Any:
        def fail(**kwargs: Any) -> None:
            raise EndpointConnectionError(endpoint_url="https://dynamodb.invalid")

        return fail


def session(id: str = "s-1") -> Session:
    return Session(id, "acme", "alice", "2025-06-18", {"name": "agent"}, {}, int(time.time()) + 600)


@pytest.mark.parametrize(
    ("store", "attempt", "message"),
    [
        (DynamoSessionStore, lambda s: s.get("s-1"), "Session store unavailable"),
        (DynamoSessionStore, lambda s: s.create(session()), "Session store unavailable"),
        (DynamoSessionStore, lambda s: s.renew("s-1", 1), "Session store unavailable"),
        (DynamoPinStore, lambda s: s.get_all("weather"), "Pin store unavailable"),
        (DynamoPinStore, lambda s: s.pin("weather", "tool", "t", "a" * 64, "alice"), "Pin store unavailable"),
        (
            DynamoLedger,
            lambda s: s.charge(Charge(Scope("USAGE#acme", tenant="acme"), 1, 1), time.time()),
            "Usage store unavailable",
        ),
        (
            DynamoLedger,
            lambda s: s.add(Scope("USAGE#acme", tenant="acme"), "2026-05-03", {"e:t": 1}),
            "Usage store unavailable",
        ),
    ],
)
def test_each_store_names_itself_when_dynamodb_cannot_be_reached(store: Any, attempt: Any, message: str) -> None:
    with pytest.raises(StorageError, match=f"^{message}$") as caught:
        attempt(store(TABLE, Unreachable()))
    answer = answer_for(caught.value)
    assert isinstance(answer, ServiceUnavailable)
    assert (answer.http_status(False), answer.to_error()) == (
        503,
        {"code": -32603, "message": message, "data": {"retryable": True}},
    )


@pytest.mark.parametrize(
    ("store", "attempt", "message"),
    [
        (DynamoSessionStore, lambda s: s.create(session()), "Session store unavailable"),
        (
            DynamoSessionStore,
            lambda s: s.add_upstream("s-1", "u", UpstreamSession(None, "x"), None),
            "Session store unavailable",
        ),
        (DynamoPinStore, lambda s: s.mark_drift("weather", "tool", "t", "a" * 64), "Pin store unavailable"),
        (
            DynamoLedger,
            lambda s: s.charge(Charge(Scope("USAGE#acme", tenant="acme"), 1, 1), time.time()),
            "Usage store unavailable",
        ),
        (
            DynamoLedger,
            lambda s: s.add(Scope("USAGE#acme", tenant="acme"), "2026-05-03", {"e:t": 1}),
            "Usage store unavailable",
        ),
    ],
)
def test_a_missing_table_is_unavailable_even_for_conditional_writes(
    moto_dynamodb: Any, store: Any, attempt: Any, message: str
) -> None:
    with pytest.raises(StorageError, match=f"^{message}$") as caught:
        attempt(store("NoSuchTable", moto_dynamodb))
    assert "NoSuchTable" not in str(caught.value)


def test_a_session_id_already_taken_is_not_created_twice(moto_dynamodb: Any) -> None:
    store = DynamoSessionStore(TABLE, moto_dynamodb)
    store.create(session("taken"))

    with pytest.raises(StorageError, match=r"^Session id already taken$"):
        store.create(session("taken"))


def test_failed_conditions_the_stores_expect_are_answers_not_errors(moto_dynamodb: Any) -> None:
    sessions = DynamoSessionStore(TABLE, moto_dynamodb)
    sessions.renew("never-created", int(time.time()) + 60)  # deleted meanwhile: nothing to renew
    assert sessions.get("never-created") is None
    assert sessions.add_upstream("never-created", "u", UpstreamSession("x", "2025-06-18"), None) is False
    assert DynamoPinStore(TABLE, moto_dynamodb).mark_drift("weather", "tool", "missing", "a" * 64) is False


def test_a_failed_condition_is_unavailable_where_no_condition_was_expected(moto_dynamodb: Any) -> None:
    class Plain(DynamoTable):
        unavailable = "Plain store unavailable"

    table = Plain(TABLE, moto_dynamodb)
    item = {"pk": {"S": "PLAIN#1"}, "sk": {"S": "X"}}
    table._call("put_item", Item=item)
    with pytest.raises(StorageError, match=r"^Plain store unavailable$"):
        table._call("put_item", Item=item, ConditionExpression="attribute_not_exists(pk)")
