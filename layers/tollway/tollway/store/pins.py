"""Pinned upstream definitions: what an admin (or trust on first use) approved, per definition.

Item per definition (single table, each well under 1 KB):
  pk PIN#<upstream>   sk <kind>#<name>
  hash         SHA-256 of the definition (`tollway.policy.definitions.definition_hash`)
  status       `approved`, or `pending` (never approved: waits for an admin)
  approved_by  who approved (`auto:first-seen` for trust on first use), approved_at (ISO 8601 UTC)
  seen_hash    the latest hash seen that differs from `hash` (drift, or a pending change)

`kind` is `tool`, `resource`, `resource_template` or `prompt`; `name` is what the item is known by
(a resource's URI). Names longer than 400 bytes are keyed by `sha256:<hex>`. What a pin means
for a definition an upstream serves is decided in `tollway.policy.definitions`; this module only
stores pins.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable
from typing import Any, Literal, NamedTuple, Protocol

from tollway.store.table import ConditionFailed, DynamoTable

PinStatus = Literal["approved", "pending"]
_MAX_KEY_BYTES = 400
_MAX_APPROVER_CHARS = 128


def pin_key(name: str) -> str:
    """The name part of a pin's sort key: the name itself, or `sha256:<hex>` when it is long."""
    if len(name.encode("utf-8")) <= _MAX_KEY_BYTES:
        return name
    return "sha256:" + hashlib.sha256(name.encode("utf-8")).hexdigest()


class Pin(NamedTuple):
    upstream: str
    kind: str
    name: str
    """As keyed: `pin_key(definition_name(...))`."""
    hash: str
    status: PinStatus
    approved_by: str | None = None
    approved_at: str | None = None
    seen_hash: str | None = None

    @property
    def state(self) -> str:
        """How `tollway upstream pending` and /admin/definitions/pending describe a pin."""
        return "changed since approval" if self.status == "approved" else "awaiting approval"

    @property
    def served_hash(self) -> str:
        """The hash of what the upstream serves now."""
        return self.seen_hash or self.hash


class PinStore(Protocol):
    def get_all(self, upstream: str) -> dict[tuple[str, str], Pin]:
        """Every pin of an upstream, by (kind, name)."""
        ...

    def pin(self, upstream: str, kind: str, name: str, hash: str, approved_by: str) -> bool:
        """Approve a first-seen definition; False (and no write) if a pin already exists."""
        ...

    def propose(self, upstream: str, kind: str, name: str, hash: str) -> bool:
        """Record a definition waiting for approval; never touches an approved pin (False then)."""
        ...

    def approve(self, upstream: str, kind: str, name: str, hash: str, approved_by: str) -> Pin:
        """Approve `hash` (first approval or re-approval after drift), replacing what is on record."""
        ...

    def mark_drift(self, upstream: str, kind: str, name: str, seen_hash: str) -> bool:
        """Record the latest differing hash seen; False if there is no pin."""
        ...

    def delete(self, upstream: str, kind: str, name: str) -> None: ...

    def list_pending(self, upstreams: Iterable[str]) -> list[Pin]:
        """Pins that need an admin: never approved, or drifted (`seen_hash` set)."""
        ...


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _needs_admin(pin: Pin) -> bool:
    return pin.status == "pending" or pin.seen_hash is not None


def pin_counts(pins: Iterable[Pin]) -> dict[str, int]:
    """An upstream's pins by state: `approved` (serving what was approved), `pending` (never
    approved) and `drifted` (approved, but the upstream now serves something else)."""
    counts = {"approved": 0, "pending": 0, "drifted": 0}
    for pin in pins:
        counts["pending" if pin.status == "pending" else "drifted" if pin.seen_hash else "approved"] += 1
    return counts


class MemoryPinStore:
    """In-process store for tests and local runs; same contract, safe across threads."""

    def __init__(self) -> None:
        self.pins: dict[tuple[str, str, str], Pin] = {}
        self._lock = threading.Lock()

    def get_all(self, upstream: str) -> dict[tuple[str, str], Pin]:
        with self._lock:
            return {(p.kind, p.name): p for (u, _, _), p in self.pins.items() if u == upstream}

    def pin(self, upstream: str, kind: str, name: str, hash: str, approved_by: str) -> bool:
        key = (upstream, kind, pin_key(name))
        with self._lock:
            if key in self.pins:
                return False
            self.pins[key] = Pin(upstream, kind, key[2], hash, "approved", approved_by[:_MAX_APPROVER_CHARS], _now())
            return True

    def propose(self, upstream: str, kind: str, name: str, hash: str) -> bool:
        key = (upstream, kind, pin_key(name))
        with self._lock:
            current = self.pins.get(key)
            if current is not None and current.status == "approved":
                return False
            self.pins[key] = Pin(upstream, kind, key[2], hash, "pending")
            return True

    def approve(self, upstream: str, kind: str, name: str, hash: str, approved_by: str) -> Pin:
        key = (upstream, kind, pin_key(name))
        pin = Pin(upstream, kind, key[2], hash, "approved", approved_by[:_MAX_APPROVER_CHARS], _now())
        with self._lock:
            self.pins[key] = pin
        return pin

    def mark_drift(self, upstream: str, kind: str, name: str, seen_hash: str) -> bool:
        key = (upstream, kind, pin_key(name))
        with self._lock:
            current = self.pins.get(key)
            if current is None:
                return False
            self.pins[key] = current._replace(seen_hash=seen_hash)
            return True

    def delete(self, upstream: str, kind: str, name: str) -> None:
        with self._lock:
            self.pins.pop((upstream, kind, pin_key(name)), None)

    def list_pending(self, upstreams: Iterable[str]) -> list[Pin]:
        wanted = set(upstreams)
        with self._lock:
            found = [p for (u, _, _), p in self.pins.items() if u in wanted and _needs_admin(p)]
        return sorted(found, key=lambda p: (p.upstream, p.kind, p.name))


class DynamoPinStore(DynamoTable):
    """The deployed store (table from `TOLLWAY_TABLE`, default `TollwayTable`; DynamoDB client made on
    first use or injected). DynamoDB failures become `StorageError("Pin store unavailable")`."""

    unavailable = "Pin store unavailable"

    def get_all(self, upstream: str) -> dict[tuple[str, str], Pin]:
        return {(p.kind, p.name): p for p in self._query(upstream)}

    def pin(self, upstream: str, kind: str, name: str, hash: str, approved_by: str) -> bool:
        item = self._item(upstream, kind, name, hash, "approved", approved_by)
        return self._put(item, "attribute_not_exists(pk)")

    def propose(self, upstream: str, kind: str, name: str, hash: str) -> bool:
        item = self._item(upstream, kind, name, hash, "pending", None)
        return self._put(item, "attribute_not_exists(pk) OR #status = :pending", {":pending": {"S": "pending"}})

    def approve(self, upstream: str, kind: str, name: str, hash: str, approved_by: str) -> Pin:
        item = self._item(upstream, kind, name, hash, "approved", approved_by)
        self._call("put_item", Item=item)
        return _from_item(upstream, item)

    def mark_drift(self, upstream: str, kind: str, name: str, seen_hash: str) -> bool:
        try:
            self._call(
                "update_item",
                Key=_key(upstream, kind, name),
                UpdateExpression="SET seen_hash = :h",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":h": {"S": seen_hash}},
                conditional=True,
            )
        except ConditionFailed:
            return False
        return True

    def delete(self, upstream: str, kind: str, name: str) -> None:
        self._call("delete_item", Key=_key(upstream, kind, name))

    def list_pending(self, upstreams: Iterable[str]) -> list[Pin]:
        found: list[Pin] = []
        for upstream in upstreams:
            found.extend(p for p in self._query(upstream) if _needs_admin(p))
        return sorted(found, key=lambda p: (p.upstream, p.kind, p.name))

    def _query(self, upstream: str) -> list[Pin]:
        pins: list[Pin] = []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": f"PIN#{upstream}"}},
        }
        while True:
            reply = self._call("query", **kwargs)
            pins.extend(_from_item(upstream, item) for item in reply.get("Items", []))
            if "LastEvaluatedKey" not in reply:
                return pins
            kwargs["ExclusiveStartKey"] = reply["LastEvaluatedKey"]

    def _item(
        self, upstream: str, kind: str, name: str, hash: str, status: PinStatus, approved_by: str | None
    ) -> dict[str, Any]:
        item: dict[str, Any] = {**_key(upstream, kind, name), "hash": {"S": hash}, "status": {"S": status}}
        if approved_by is not None:
            item["approved_by"] = {"S": approved_by[:_MAX_APPROVER_CHARS]}
            item["approved_at"] = {"S": _now()}
        return item

    def _put(self, item: dict[str, Any], condition: str, values: dict[str, Any] | None = None) -> bool:
        kwargs: dict[str, Any] = {"Item": item, "ConditionExpression": condition}
        if "#status" in condition:
            kwargs["ExpressionAttributeNames"] = {"#status": "status"}
        if values:
            kwargs["ExpressionAttributeValues"] = values
        try:
            self._call("put_item", conditional=True, **kwargs)
        except ConditionFailed:
            return False
        return True


def _key(upstream: str, kind: str, name: str) -> dict[str, Any]:
    return {"pk": {"S": f"PIN#{upstream}"}, "sk": {"S": f"{kind}#{pin_key(name)}"}}


def _from_item(upstream: str, item: dict[str, Any]) -> Pin:
    kind, _, name = item["sk"]["S"].partition("#")

    def text(attribute: str) -> str | None:
        value = item.get(attribute)
        return value["S"] if value is not None else None

    return Pin(
        upstream=upstream,
        kind=kind,
        name=name,
        hash=item["hash"]["S"],
        status="pending" if text("status") == "pending" else "approved",
        approved_by=text("approved_by"),
        approved_at=text("approved_at"),
        seen_hash=text("seen_hash"),
    )
