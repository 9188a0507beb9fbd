"""The definition gate: which upstream definitions (tools, resources, templates, prompts) may
reach an agent, and as what.

One gate serves lists and every routed call (through `policy.exposure`). In order, a definition
must be valid MCP (an invalid one would make the SDK client refuse the whole list), match its
approved pin (a changed one is withheld until an admin re-approves it: no "rug pull"), and pass
the poisoning scan (blocked, sanitized or allowed with a warning by severity).

Pins are read once per upstream per `definitions.cache_seconds` per warm instance (an approval
made through this instance's admin API applies at once); verdicts are cached by definition hash
in a bounded cache, so a warm list or call costs no scanning.

Pin decisions are a pure function, `check_definitions`: given an upstream's definitions and its
pins it says what may be published and what happened; `record_events` writes what it asks for.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

from tollway import shapes
from tollway.blocking import run_blocking
from tollway.config import DefinitionPolicy
from tollway.store.pins import Pin, PinStore, pin_key
from tollway.telemetry import count, logger

KIND_BY_LIST_KEY = {
    "tools": "tool",
    "resources": "resource",
    "resourceTemplates": "resource_template",
    "prompts": "prompt",
}
"""List key -> the kind pins and findings name."""
AUTO_APPROVER = "auto:first-seen"
VERDICT_CACHE_SIZE = 4096
FACTS_CACHE_SIZE = 4096
"""Definitions whose verdict a warm instance remembers (most recently used kept)."""

EventType = Literal["pin", "pending", "drift"]


# --- a definition's hash --------------------------------------------------
HASHED_FIELDS: dict[str, tuple[str, ...]] = {
    "tool": ("name", "title", "description", "inputSchema", "outputSchema", "annotations"),
    "resource": ("uri", "name", "title", "description", "mimeType"),
    "resource_template": ("uriTemplate", "name", "title", "description", "mimeType"),
    "prompt": ("name", "title", "description", "arguments"),
}
"""What a definition hash covers: everything the model reads or a client trusts. Left out:
`_meta`, `icons`, `execution`, `size` and anything an upstream may add later."""


def definition_hash(kind: str, definition: dict[str, Any]) -> str:
    """SHA-256 (hex) of a canonical JSON of `kind` and the `HASHED_FIELDS` of the definition.

    Canonical: keys sorted at every level, no insignificant whitespace, UTF-8, absent and null
    fields alike, integral floats as integers (`24.0` == `24`), list order kept (it can carry
    meaning), except prompt arguments, which are sorted by name. Invisible characters count.
    """
    if kind not in HASHED_FIELDS:
        raise ValueError(f"unknown definition kind {kind!r}")
    body: dict[str, Any] = {"kind": kind}
    for key in HASHED_FIELDS[kind]:
        value = definition.get(key)
        if value is not None:
            body[key] = value
    if isinstance(body.get("arguments"), list):
        body["arguments"] = sorted(
            body["arguments"], key=lambda a: str(a.get("name", "")) if isinstance(a, dict) else ""
        )
    canonical = json.dumps(
        json.loads(json.dumps(body), parse_float=_integral), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _integral(number: str) -> int | float:
    value = float(number)
    return int(value) if value.is_integer() else value


# --- pins ---------------------------------------------------------------------------------------
class PinEvent(NamedTuple):
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


def check_definitions(
    upstream: str,
    kind: str,
    definitions: Sequence[dict[str, Any]],
    pins: dict[tuple[str, str], Pin],
    policy: DefinitionPolicy,
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
    hashes, in order, when the caller has them already.
    """
    if not policy.pinning:
        return list(definitions), []
    if digests is None:
        digests = [definition_hash(kind, definition) for definition in definitions]
    allowed: list[dict[str, Any]] = []
    events: list[PinEvent] = []
    for definition, digest in zip(definitions, digests, strict=True):
        name = pin_key(shapes.definition_name(kind, definition))
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


WITHHELD_REASONS = {"pending": "definition awaits approval", "drift": "definition changed since approval"}
"""Why the gate withholds a valid definition before scanning it (an audit record's rule)."""


def _by_item(
    items: Sequence[dict[str, Any]], digests: Sequence[str], events: list[PinEvent]
) -> list[tuple[dict[str, Any], PinEvent]]:
    """Each definition with the withholding event `check_definitions` raised for it."""
    by_hash = {event.hash: event for event in events if event.type != "pin"}
    return [(item, by_hash[digest]) for item, digest in zip(items, digests, strict=True) if digest in by_hash]


class NothingToApprove(Exception):
    pass


def definition_problem(list_key: str, item: dict[str, Any]) -> str | None:
    """Why a definition is not valid MCP (an SDK client would refuse the list), or None."""
    why = shapes.check_definition(list_key, item)
    if why is None and list_key == "tools":
        from tollway.policy.arguments import schema_problem

        why = schema_problem(item["inputSchema"])
    return why


class Review(NamedTuple):
    """What the gate would do with one definition that it does not publish as served."""

    kind: str
    name: str
    verdict: Literal["withheld", "sanitized", "warned"]
    """`sanitized` and `warned` are published (cleaned, or as served with a logged warning)."""
    reason: str

    @property
    def withheld(self) -> bool:
        return self.verdict == "withheld"


_VERDICTS: dict[str, Literal["withheld", "sanitized", "warned"]] = {"block": "withheld", "sanitize": "sanitized"}


def review(
    upstream: str,
    list_key: str,
    items: Sequence[dict[str, Any]],
    pins: dict[tuple[str, str], Pin] | None,
    policy: DefinitionPolicy,
) -> list[Review]:
    """The gate's decisions for an upstream's definitions, in its order (valid MCP -> pins ->
    scan), without recording or counting anything: for `tollway check --probe`. `pins` None:
    pins not known, so only validity and the scan are judged."""
    from tollway.masking.poisoning import screen_definition

    kind = KIND_BY_LIST_KEY[list_key]
    found: list[Review] = []
    valid = []
    for item in items:
        why = definition_problem(list_key, item)
        if why is None:
            valid.append(item)
        else:
            found.append(Review(kind, shapes.definition_name(kind, item)[:128], "withheld", f"not valid MCP: {why}"))
    allowed = valid
    if pins is not None:
        allowed, events = check_definitions(upstream, kind, valid, pins, policy)
        for event in events:
            if event.type == "drift":
                found.append(Review(kind, event.name, "withheld", "changed since it was approved (drift)"))
            elif event.type == "pending":
                found.append(Review(kind, event.name, "withheld", "awaits approval"))
    for item in allowed:
        screened = screen_definition(kind, item, policy)
        if screened.findings:
            categories = ", ".join(sorted({f"{f.category} ({f.severity})" for f in screened.findings}))
            verdict = _VERDICTS.get(screened.action, "warned")
            reason = f"poisoned: {categories}" if verdict == "withheld" else categories
            found.append(Review(kind, shapes.definition_name(kind, item)[:128], verdict, reason))
    return found


# --- the gate -------------------------------------------------------------------------------------
class DefinitionGate:
    def __init__(self, policy: DefinitionPolicy, pins: PinStore) -> None:
        self.policy = policy
        self.store = pins
        self._pins: dict[str, tuple[float, dict[tuple[str, str], Pin]]] = {}
        self._verdicts: OrderedDict[str, dict[str, Any] | None] = OrderedDict()
        self._known: OrderedDict[int, tuple[dict[str, Any], bool, str]] = OrderedDict()
        """id(definition) -> (the definition, valid, hash): `_facts`."""
        self._facts_lock = threading.Lock()

    async def admit(self, upstream: str, list_key: str, items: Sequence[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """For each definition of one upstream, in order: what may be published (possibly
        sanitized), or None when it is withheld."""
        return [definition for definition, _ in await self.judge(upstream, list_key, items)]

    async def judge(
        self, upstream: str, list_key: str, items: Sequence[dict[str, Any]]
    ) -> list[tuple[dict[str, Any] | None, str | None]]:
        """`admit`, with the reason of each withheld definition (`WITHHELD_REASONS`)."""
        kind = KIND_BY_LIST_KEY[list_key]
        facts = [self._facts(upstream, list_key, kind, item) for item in items]
        valid = [ok for ok, _ in facts]
        candidates = [item for item, ok in zip(items, valid, strict=True) if ok]
        digests = [digest for ok, digest in facts if ok]
        pins = self._cached_pins(upstream)
        if pins is None and self.policy.pinning:
            pins = await run_blocking(self._load_pins, upstream)
        allowed, events = check_definitions(upstream, kind, candidates, pins or {}, self.policy, digests)
        if events:
            await self._record(events)
        pinned = {id(item) for item in allowed}  # `allowed` holds the very items given
        verdict = {
            id(item): self._screen(kind, item, digest)
            for item, digest in zip(candidates, digests, strict=True)
            if id(item) in pinned
        }
        unpinned = {id(item): event.type for item, event in _by_item(candidates, digests, events)}
        judged: list[tuple[dict[str, Any] | None, str | None]] = []
        for item, ok in zip(items, valid, strict=True):
            if not ok:
                judged.append((None, "invalid definition"))
            elif id(item) not in pinned:
                judged.append((None, WITHHELD_REASONS[unpinned.get(id(item), "pending")]))
            else:
                definition = verdict[id(item)]
                judged.append((definition, None if definition is not None else "poisoned definition"))
        return judged

    def forget(self, upstream: str) -> None:
        """Read the upstream's pins again on next use (after an approval on this instance)."""
        self._pins.pop(upstream, None)

    def approve(self, upstream: str, kind: str, name: str, approved_by: str) -> Pin:
        """Approve the definition the upstream serves now (the drifted `seen_hash`, or the pending
        one); it is published by this instance from its next request on."""
        pin = self.store.get_all(upstream).get((kind, pin_key(name)))
        if pin is None or (pin.status == "approved" and not pin.seen_hash):
            raise NothingToApprove(name)
        current = pin.seen_hash if pin.status == "approved" else pin.hash
        logger.info("definition approved", extra={"upstream": upstream, "kind": kind, "item": name, "by": approved_by})
        approved = self.store.approve(upstream, kind, name, current, approved_by)
        self.forget(upstream)
        return approved

    def _facts(self, upstream: str, list_key: str, kind: str, item: dict[str, Any]) -> tuple[bool, str]:
        """Whether `item` is valid MCP, and its hash: worked out once per definition object (a
        catalog serves the same objects to every call until it is fetched again)."""
        with self._facts_lock:
            known = self._known.get(id(item))
            if known is not None and known[0] is item:  # the object itself is kept: its id is not reused
                return known[1], known[2]
        valid = self._valid(upstream, list_key, item)
        digest = definition_hash(kind, item) if valid else ""
        with self._facts_lock:
            self._known[id(item)] = (item, valid, digest)
            while len(self._known) > FACTS_CACHE_SIZE:
                self._known.popitem(last=False)
        return valid, digest

    def _valid(self, upstream: str, list_key: str, item: dict[str, Any]) -> bool:
        why = definition_problem(list_key, item)
        if why is not None:
            logger.warning(
                "definition withheld: not valid MCP",
                extra={
                    "upstream": upstream,
                    "kind": list_key,
                    "item": shapes.definition_name(KIND_BY_LIST_KEY[list_key], item)[:128],
                    "reason": why,
                },
            )
            count("InvalidDefinitions")
        return why is None

    def _cached_pins(self, upstream: str) -> dict[tuple[str, str], Pin] | None:
        cached = self._pins.get(upstream)
        if cached is None or time.monotonic() - cached[0] > self.policy.cache_seconds:
            return None
        return cached[1]

    def _load_pins(self, upstream: str) -> dict[tuple[str, str], Pin]:
        pins = self.store.get_all(upstream)
        self._pins[upstream] = (time.monotonic(), pins)
        return pins

    async def _record(self, events: list[PinEvent]) -> None:
        for event in events:
            if event.type == "drift":
                logger.warning(
                    "definition changed since approval: withheld until re-approved",
                    extra={"upstream": event.upstream, "kind": event.kind, "item": event.name},
                )
                count("DefinitionDrift", 1)
            elif event.type == "pending" and not event.recorded:
                logger.info("definition awaits approval", extra={"upstream": event.upstream, "item": event.name})
        if any(not e.recorded for e in events):
            await run_blocking(record_events, self.store, events)
            self.forget(events[0].upstream)  # read the new state next time

    def _screen(self, kind: str, item: dict[str, Any], digest: str) -> dict[str, Any] | None:
        if digest in self._verdicts:
            self._verdicts.move_to_end(digest)
            return self._verdicts[digest]
        from tollway.masking.poisoning import screen_definition  # ~40 ms of patterns: not at cold start

        screened = screen_definition(kind, item, self.policy)
        if screened.findings:
            logger.warning(
                "definition findings",
                extra={
                    "kind": kind,
                    "action": screened.action,
                    "findings": [f.to_dict() for f in screened.findings],
                },
            )
            count("PoisonedDefinitions", 1)
        self._verdicts[digest] = screened.definition
        if len(self._verdicts) > VERDICT_CACHE_SIZE:
            self._verdicts.popitem(last=False)
        return screened.definition
