"""Which upstream definitions (tools, resources, templates, prompts) may reach an agent.

One gate serves lists and calls: a definition must match its approved pin (a changed one is
withheld until an admin re-approves it: no "rug pull"), and it is scanned for poisoning and
blocked, sanitized or allowed with a warning by severity (`definitions` in gateway.yaml).
Pins are read once per upstream per `PIN_CACHE_SECONDS` per warm instance; scan verdicts are
cached by definition hash, so a warm list costs no scanning.
"""

from __future__ import annotations

import time
from typing import Any

from tollway.config import GatewayConfig
from tollway.store.pins import Pin, PinEvent, PinStore, check_definitions, record_events
from tollway.telemetry import count, logger

PIN_CACHE_SECONDS = 30.0


class DefinitionGate:
    def __init__(self, config: GatewayConfig, pins: PinStore) -> None:
        self.policy = config.definitions
        self.store = pins
        self._pins: dict[str, tuple[float, dict[tuple[str, str], Pin]]] = {}
        self._screened: dict[str, Any] = {}

    def admit(self, upstream: str, list_key: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The definitions of one list page that may be published, as they may be published."""
        from tollway.masking.scanner import KIND_BY_LIST_KEY, definition_hash, screen_definition

        kind = KIND_BY_LIST_KEY[list_key]
        # Hashed once: the pin check and the scan cache both key on the hash.
        digests = [definition_hash(kind, item) for item in items]
        allowed, events = check_definitions(upstream, kind, items, self._pinned(upstream), self.policy, digests)
        if events:
            self._record(events)
        digest_of = {id(item): digest for item, digest in zip(items, digests, strict=True)}
        published = []
        for item in allowed:
            digest = digest_of[id(item)]  # `allowed` holds the very items given, not copies
            screened = self._screened.get(digest)
            if screened is None:
                screened = self._screened[digest] = screen_definition(kind, item, self.policy)
                if screened.findings:
                    logger.warning(
                        "definition findings",
                        extra={
                            "upstream": upstream,
                            "kind": kind,
                            "action": screened.action,
                            "findings": [f.to_dict() for f in screened.findings],
                        },
                    )
                    count("PoisonedDefinitions", 1)
            if screened.definition is not None:
                published.append(screened.definition)
        return published

    def _pinned(self, upstream: str) -> dict[tuple[str, str], Pin]:
        if not self.policy.pinning:
            return {}
        cached = self._pins.get(upstream)
        if cached is None or time.monotonic() - cached[0] > PIN_CACHE_SECONDS:
            cached = (time.monotonic(), self.store.get_all(upstream))
            self._pins[upstream] = cached
        return cached[1]

    def _record(self, events: list[PinEvent]) -> None:
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
            record_events(self.store, events)
            self._pins.pop(events[0].upstream, None)  # read the new state next time


class NothingToApprove(Exception):
    pass


def approve_current(store: PinStore, upstream: str, kind: str, name: str, approved_by: str) -> Pin:
    """Approve the definition the upstream serves now: the drifted (`seen_hash`) or pending one."""
    pin = store.get_all(upstream).get((kind, name))
    if pin is None or (pin.status == "approved" and not pin.seen_hash):
        raise NothingToApprove(name)
    current = pin.seen_hash if pin.status == "approved" else pin.hash
    logger.info("definition approved", extra={"upstream": upstream, "kind": kind, "item": name, "by": approved_by})
    return store.approve(upstream, kind, name, current, approved_by)
