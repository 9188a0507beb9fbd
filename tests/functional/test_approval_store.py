"""The DynamoDB approval store on moto: the same contract as the in-memory one, an approved call
used exactly once however many retries race, and the EventBridge event an approval emits.

moto applies a conditional UpdateItem as read-check-write without a lock; DynamoDB's conditional
writes are atomic. The tests' moto writes one at a time (`tollway.dev.atomic_moto_writes`, applied
by tests/conftest.py), so the race test tests the store's condition expressions, not moto's
thread safety.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from tollway.config import parse_config
from tollway.context import Principal, RequestContext
from tollway.policy.approvals import EVENT_DETAIL_TYPE, Approvals, EventBridgeNotifier
from tollway.store.approvals import Approval, DynamoApprovalStore
from tollway.telemetry.audit import digest

from tests.conftest import moto_table

THREADS = 16
NOW = 1_800_000_000


def approval(id: str = "a1", status: Any = "pending", expires_at: int = NOW + 600, digest: str = "d" * 64) -> Approval:
    return Approval(id, "acme", "agent-7", "pay__send", digest, status, NOW, expires_at)


@pytest.fixture
def store() -> Iterator[DynamoApprovalStore]:
    with moto_table("TollwayTable") as client:
        yield DynamoApprovalStore("TollwayTable", client)


def test_an_approval_is_stored_found_by_its_call_and_listed(store: DynamoApprovalStore) -> None:
    first = approval()
    assert store.create(first, replacing=None)

    assert store.get("a1") == first
    assert store.current("acme", "agent-7", "pay__send", "d" * 64) == first
    assert store.current("acme", "agent-8", "pay__send", "d" * 64) is None
    assert store.list() == [first]


def test_a_call_has_one_current_approval_and_the_loser_of_a_race_leaves_nothing(store: DynamoApprovalStore) -> None:
    assert store.create(approval("a1"), replacing=None)
    assert not store.create(approval("a2"), replacing=None)  # another instance made one first
    assert store.get("a2") is None
    assert store.create(approval("a3"), replacing="a1")  # the first one was used or expired
    assert store.current("acme", "agent-7", "pay__send", "d" * 64) == approval("a3")


def test_a_decision_is_taken_once_and_only_before_the_expiry(store: DynamoApprovalStore) -> None:
    store.create(approval("a1"), replacing=None)
    store.create(approval("a2", expires_at=NOW, digest="e" * 64), replacing=None)

    decided = store.decide("a1", "approved", "acme/boss", NOW)
    assert decided is not None and (decided.status, decided.decided_by, decided.decided_at) == (
        "approved",
        "acme/boss",
        NOW,
    )
    assert store.decide("a1", "denied", "acme/boss", NOW) is None
    assert store.decide("a2", "approved", "acme/boss", NOW) is None  # expired
    assert store.decide("nope", "approved", "acme/boss", NOW) is None


def test_an_approved_call_is_consumed_by_exactly_one_of_many_racing_retries(store: DynamoApprovalStore) -> None:
    store.create(approval(), replacing=None)
    decided = store.decide("a1", "approved", "acme/boss", NOW)
    assert decided is not None
    barrier = threading.Barrier(THREADS)

    def retry(_: int) -> bool:
        barrier.wait()
        return store.consume(decided, NOW)

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(retry, range(THREADS)))

    assert outcomes.count(True) == 1
    stored = store.get("a1")
    assert stored is not None and stored.status == "consumed"


def test_an_approval_past_its_expiry_is_not_consumed(store: DynamoApprovalStore) -> None:
    store.create(approval(expires_at=NOW + 10), replacing=None)
    decided = store.decide("a1", "approved", "acme/boss", NOW)
    assert decided is not None
    assert not store.consume(decided, NOW + 10)


def test_a_new_approval_emits_an_event_without_the_arguments(store: DynamoApprovalStore) -> None:
    events, sqs = boto3.client("events"), boto3.client("sqs")
    queue = sqs.create_queue(QueueName="approvals")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="approvals", EventPattern=json.dumps({"source": ["tollway"]}))
    events.put_targets(Rule="approvals", Targets=[{"Id": "q", "Arn": arn}])
    config = parse_config(
        {
            "resource": "https://gw.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": [{"name": "pay", "url": "http://127.0.0.1:9/mcp"}],
            "approvals": {"rules": [{"match": "pay__*"}]},
        }
    )
    gate = Approvals(config, store, clock=lambda: NOW)
    ctx = RequestContext(Principal("agent-7", "acme"), False, "2025-11-25")

    arguments = {"iban": "DE89370400440532013000"}
    verdict = gate.check(ctx, "pay__send", arguments, digest(arguments))

    assert verdict is not None and verdict.created
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    event = json.loads(messages[0]["Body"])
    assert (event["source"], event["detail-type"]) == ("tollway", EVENT_DETAIL_TYPE)
    assert event["detail"] == {
        "approvalId": verdict.approval.id,
        "tenant": "acme",
        "subject": "agent-7",
        "tool": "pay__send",
        "argumentsSha256": verdict.approval.digest,
        "expiresAt": NOW + 3600,
    }
    assert "DE89" not in messages[0]["Body"]


def test_an_event_that_cannot_be_sent_loses_no_approval(
    store: DynamoApprovalStore, caplog: pytest.LogCaptureFixture
) -> None:
    config = parse_config(
        {
            "resource": "https://gw.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": [{"name": "pay", "url": "http://127.0.0.1:9/mcp"}],
            "approvals": {"rules": [{"match": "pay__*"}], "event_bus": "no-such-bus"},
        }
    )
    gate = Approvals(config, store, notify=EventBridgeNotifier("no-such-bus"), clock=lambda: NOW)
    ctx = RequestContext(Principal("agent-7", "acme"), False, "2025-11-25")

    verdict = gate.check(ctx, "pay__send", {}, digest({}))

    assert verdict is not None and not verdict.proceed
    assert store.get(verdict.approval.id) == verdict.approval
    assert "approval event not delivered" in [r.getMessage() for r in caplog.records]
