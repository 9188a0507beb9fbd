"""Pinned upstream definitions: a changed tool, resource or prompt is withheld until re-approved.

Item per definition (single table, each well under 1 KB):
  pk PIN#<upstream>   sk <kind>#<name>
  hash         SHA-256 of the definition (`tollway.masking.scanner.definition_hash`)
  status       `approved`, or `pending` (never approved: waits for an admin)
  approved_by  who approved (`auto:first-seen` for trust on first use), approved_at (ISO 8601 UTC)
  seen_hash    the latest hash seen that differs from `hash` (drift, or a pending change)

`kind` is `tool`, `resource`, `resource_template` or `prompt`; `name` is what the item is known by
(`definition_name`: a resource's URI). Names longer than 400 bytes are keyed by `sha256:<hex>`.

The decision is a pure function, `check_definitions`: given an upstream's definitions and its
pins it says what may be published and what happened; `record_events` writes what the decision
asks for. The router calls them on every list:

    pins = store.get_all(upstream)                          # one Query
    allowed, events = check_definitions(upstream, kind, items, pins, policy)
    record_events(store, events)                            # writes only on change
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from tollway.store.table import ConditionFailed, DynamoTable

PinStatus = Literal["approved", "pending"]
EventType = Literal["pin", "pending", "drift"]
AUTO_APPROVER = "auto:first-seen"
_MAX_KEY_BYTES = 400
_MAX_APPROVER_CHARS = 128


def pin_key(name: str) -> str:
    """The name part of a pin's sort key: the name itself, or `sha256:<hex>` when it is long."""
    if len(name.encode("utf-8")) <= _MAX_KEY_BYTES:
        return name
    return "sha256:" + hashlib.sha256(name.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Pin:
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


@dataclass(frozen=True)
class PinEvent:
    """What `check_definitions` found for one definition.

    `pin`: first seen and trusted (auto-approve): write the pin. `pending`: not approved yet
    (withheld): record it for an admin. `drift`: the definition differs from its approved pin
    (withheld): record `seen_hash`, log and count it. `recorded` says the store already holds
    this state, so nothing needs writing (the event is still worth counting).
    """

    type: EventType
    upstream: str
    kind: str
    name: str
    hash: str
    """The hash of the definition as the upstream serves it now."""
    pinned_hash: str | None
    """The approved (or proposed) hash on record; None when first seen."""
    recorded: bool = False


class _PinPolicy(Protocol):
    """What `check_definitions` reads: `tollway.config.DefinitionPolicy` fits."""

    @property
    def pinning(self) -> bool: ...
    @property
    def auto_approve_first_seen(self) -> bool: ...


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


def check_definitions(
    upstream: str,
    kind: str,
    definitions: list[dict[str, Any]],
    pins: dict[tuple[str, str], Pin],
    policy: _PinPolicy,
    digests: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], list[PinEvent]]:
    """Which of an upstream's definitions may be published, and the pin events that produced.

    Pure: no I/O. For each definition (hashed with `definition_hash(kind, ...)`):
      - pinning off                          -> allowed, no event
      - approved pin with the same hash      -> allowed
      - approved pin with another hash       -> withheld, `drift` (until `approve` with the new hash)
      - pending pin                          -> withheld, `pending`
      - no pin, auto_approve_first_seen      -> allowed, `pin` (the caller writes it)
      - no pin, not auto                     -> withheld, `pending` (the caller records it)
    Definitions keep their order; they are returned as given (not copied). `digests`: their
    hashes, in order, when the caller has them already (the gate needs them for its scan cache).
    """
    if not policy.pinning:
        return list(definitions), []
    from tollway.masking.scanner import definition_hash, definition_name  # ~40 ms of patterns: not at cold start

    allowed: list[dict[str, Any]] = []
    events: list[PinEvent] = []
    if digests is None:
        digests = [definition_hash(kind, definition) for definition in definitions]
    for definition, digest in zip(definitions, digests, strict=True):
        name = pin_key(definition_name(kind, definition))
        pin = pins.get((kind, name))
        if pin is None:
            if policy.auto_approve_first_seen:
                allowed.append(definition)
                events.append(PinEvent("pin", upstream, kind, name, digest, None))
            else:
                events.append(PinEvent("pending", upstream, kind, name, digest, None))
        elif pin.status == "pending":
            events.append(PinEvent("pending", upstream, kind, name, digest, pin.hash, recorded=pin.hash == digest))
        elif pin.hash == digest:
            allowed.append(definition)
        else:
            events.append(PinEvent("drift", upstream, kind, name, digest, pin.hash, recorded=pin.seen_hash == digest))
    return allowed, events


def record_events(store: PinStore, events: list[PinEvent]) -> None:
    """Write what `check_definitions` asked for; events already recorded cost nothing."""
    for event in events:
        if event.recorded:
            continue
        if event.type == "pin":
            store.pin(event.upstream, event.kind, event.name, event.hash, AUTO_APPROVER)
        elif event.type == "pending":
            store.propose(event.upstream, event.kind, event.name, event.hash)
        else:
            store.mark_drift(event.upstream, event.kind, event.name, event.hash)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _needs_admin(pin: Pin) -> bool:
    return pin.status == "pending" or pin.seen_hash is not None


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
            self.pins[key] = replace(current, seen_hash=seen_hash)
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
    """The deployed store (table from `TOLLWAY_TABLE`, default `TollwayTable`; boto3 client made on
    first use or injected). DynamoDB failures become `InternalError("Pin store unavailable")`."""

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
