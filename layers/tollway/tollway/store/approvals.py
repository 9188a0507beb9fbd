"""Approvals of tool calls that wait for a human decision (`tollway.policy.approvals` decides).

Items (single table, `pk`/`sk`, TTL on `expires_at`, each well under 1 KB):
  APPROVALS / <id>                          the approval: tenant, sub, tool, digest (SHA-256 of the
                                            masked arguments), status, created_at, expires_at,
                                            decided_by, decided_at
  APPROVAL-CALL#<tenant>#<sub>#<tool>#<digest> / CURRENT
                                            which approval the same call by the same caller
                                            currently waits on or may use (`id`)

Every approval lives in one partition, so the admin list is one query: approvals are made by
people, a few per minute at most, far below a partition's limits. Status changes are conditional
writes on the approval item alone: `pending -> approved | denied` while unexpired, and
`approved -> consumed` while unexpired, so an approved call runs once however many retries race.
DynamoDB deletes expired items lazily, so every read checks `expires_at` itself (the policy does).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Literal, NamedTuple, Protocol

from tollway.errors import StorageError
from tollway.store.table import ConditionFailed, DynamoTable, key

Status = Literal["pending", "approved", "denied", "consumed"]
STATUSES: tuple[Status, ...] = ("pending", "approved", "denied", "consumed")
_PARTITION = "APPROVALS"
_MAX_ACTOR_CHARS = 128


class Approval(NamedTuple):
    id: str
    tenant: str
    subject: str
    tool: str
    digest: str
    status: Status
    created_at: int
    expires_at: int
    decided_by: str | None = None
    decided_at: int | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at <= now

    def as_json(self) -> dict[str, Any]:
        """How the admin API and `tollway approvals list` show it (never the arguments: only their digest)."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "subject": self.subject,
            "tool": self.tool,
            "argumentsSha256": self.digest,
            "status": self.status,
            "createdAt": self.created_at,
            "expiresAt": self.expires_at,
            "decidedBy": self.decided_by,
            "decidedAt": self.decided_at,
        }


class ApprovalStore(Protocol):
    def get(self, approval_id: str) -> Approval | None: ...

    def current(self, tenant: str, subject: str, tool: str, digest: str) -> Approval | None:
        """The approval this call by this caller waits on or may use (any status, maybe expired)."""
        ...

    def create(self, approval: Approval, replacing: str | None) -> bool:
        """Store a new pending approval as the call's current one; False (nothing stored) if the
        call's current approval is no longer `replacing` (another instance got there first)."""
        ...

    def decide(self, approval_id: str, status: Status, by: str, now: int) -> Approval | None:
        """pending -> `status` (approved or denied) while unexpired; None if it was not pending then."""
        ...

    def consume(self, approval: Approval, now: int) -> bool:
        """approved -> consumed while unexpired; False if another call consumed it first (or it expired)."""
        ...

    def list(self) -> list[Approval]:
        """Every stored approval, newest first."""
        ...


class MemoryApprovalStore:
    """In-process store for tests; same contract, safe across threads."""

    def __init__(self) -> None:
        self.approvals: dict[str, Approval] = {}
        self.calls: dict[tuple[str, str, str, str], str] = {}
        self._lock = threading.Lock()

    def get(self, approval_id: str) -> Approval | None:
        with self._lock:
            return self.approvals.get(approval_id)

    def current(self, tenant: str, subject: str, tool: str, digest: str) -> Approval | None:
        with self._lock:
            approval_id = self.calls.get((tenant, subject, tool, digest))
            return self.approvals.get(approval_id) if approval_id is not None else None

    def create(self, approval: Approval, replacing: str | None) -> bool:
        call = (approval.tenant, approval.subject, approval.tool, approval.digest)
        with self._lock:
            if self.calls.get(call) != replacing or approval.id in self.approvals:
                return False
            self.approvals[approval.id] = approval
            self.calls[call] = approval.id
            return True

    def decide(self, approval_id: str, status: Status, by: str, now: int) -> Approval | None:
        with self._lock:
            approval = self.approvals.get(approval_id)
            if approval is None or approval.status != "pending" or approval.expired(now):
                return None
            decided = approval._replace(status=status, decided_by=by[:_MAX_ACTOR_CHARS], decided_at=now)
            self.approvals[approval_id] = decided
            return decided

    def consume(self, approval: Approval, now: int) -> bool:
        with self._lock:
            stored = self.approvals.get(approval.id)
            if stored is None or stored.status != "approved" or stored.expired(now):
                return False
            self.approvals[approval.id] = stored._replace(status="consumed")
            return True

    def list(self) -> list[Approval]:
        with self._lock:
            return sorted(self.approvals.values(), key=lambda a: a.created_at, reverse=True)


class DynamoApprovalStore(DynamoTable):
    """The deployed store (table from `TOLLWAY_TABLE`; DynamoDB client made on first use or injected)."""

    unavailable = "Approval store unavailable"

    def get(self, approval_id: str) -> Approval | None:
        reply = self._call("get_item", Key=_approval_key(approval_id), ConsistentRead=True)
        item = reply.get("Item")
        return _from_item(item) if item is not None else None

    def current(self, tenant: str, subject: str, tool: str, digest: str) -> Approval | None:
        reply = self._call("get_item", Key=_call_key(tenant, subject, tool, digest), ConsistentRead=True)
        item = reply.get("Item")
        return self.get(item["id"]["S"]) if item is not None else None

    def create(self, approval: Approval, replacing: str | None) -> bool:
        self._call("put_item", Item=_to_item(approval), ConditionExpression="attribute_not_exists(pk)")
        pointer = {
            **_call_key(approval.tenant, approval.subject, approval.tool, approval.digest),
            "id": {"S": approval.id},
            "expires_at": {"N": str(approval.expires_at)},
        }
        condition, values = "attribute_not_exists(pk)", {}
        if replacing is not None:
            condition, values = "id = :old", {":old": {"S": replacing}}
        try:
            self._call(
                "put_item",
                Item=pointer,
                ConditionExpression=condition,
                **({"ExpressionAttributeValues": values} if values else {}),
                conditional=True,
            )
        except ConditionFailed:
            # Another instance made the call's approval first: ours must not linger as pending.
            with contextlib.suppress(StorageError):
                self._call("delete_item", Key=_approval_key(approval.id))
            return False
        return True

    def decide(self, approval_id: str, status: Status, by: str, now: int) -> Approval | None:
        try:
            reply = self._call(
                "update_item",
                Key=_approval_key(approval_id),
                UpdateExpression="SET #s = :new, decided_by = :by, decided_at = :now",
                ConditionExpression="#s = :pending AND expires_at > :now",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":new": {"S": status},
                    ":by": {"S": by[:_MAX_ACTOR_CHARS]},
                    ":now": {"N": str(now)},
                    ":pending": {"S": "pending"},
                },
                ReturnValues="ALL_NEW",
                conditional=True,
            )
        except ConditionFailed:
            return None
        return _from_item(reply["Attributes"])

    def consume(self, approval: Approval, now: int) -> bool:
        try:
            self._call(
                "update_item",
                Key=_approval_key(approval.id),
                UpdateExpression="SET #s = :consumed",
                ConditionExpression="#s = :approved AND expires_at > :now",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":consumed": {"S": "consumed"},
                    ":approved": {"S": "approved"},
                    ":now": {"N": str(now)},
                },
                conditional=True,
            )
        except ConditionFailed:
            return False
        return True

    def list(self) -> list[Approval]:
        approvals: list[Approval] = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": _PARTITION}},
            "ConsistentRead": True,
        }
        while True:
            reply = self._call("query", **kwargs)
            approvals.extend(_from_item(item) for item in reply.get("Items", []))
            if "LastEvaluatedKey" not in reply:
                return sorted(approvals, key=lambda a: a.created_at, reverse=True)
            kwargs["ExclusiveStartKey"] = reply["LastEvaluatedKey"]


def _approval_key(approval_id: str) -> dict[str, Any]:
    return {"pk": {"S": _PARTITION}, "sk": {"S": approval_id}}


def _call_key(tenant: str, subject: str, tool: str, digest: str) -> dict[str, Any]:
    return {"pk": {"S": key("APPROVAL-CALL", tenant, subject, tool, digest)}, "sk": {"S": "CURRENT"}}


def _to_item(approval: Approval) -> dict[str, Any]:
    return {
        **_approval_key(approval.id),
        "tenant": {"S": approval.tenant},
        "sub": {"S": approval.subject},
        "tool": {"S": approval.tool},
        "digest": {"S": approval.digest},
        "status": {"S": approval.status},
        "created_at": {"N": str(approval.created_at)},
        "expires_at": {"N": str(approval.expires_at)},
    }


def _from_item(item: dict[str, Any]) -> Approval:
    status = item["status"]["S"]
    return Approval(
        id=item["sk"]["S"],
        tenant=item["tenant"]["S"],
        subject=item["sub"]["S"],
        tool=item["tool"]["S"],
        digest=item["digest"]["S"],
        status=status if status in STATUSES else "denied",  # an unknown status never lets a call through
        created_at=int(item["created_at"]["N"]),
        expires_at=int(item["expires_at"]["N"]),
        decided_by=item["decided_by"]["S"] if "decided_by" in item else None,
        decided_at=int(item["decided_at"]["N"]) if "decided_at" in item else None,
    )
