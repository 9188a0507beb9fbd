"""The events of a 2025-era session's standalone stream (`GET /mcp`), kept where any instance can
replay them: a client that lost its stream reconnects with `Last-Event-ID`, usually to another
instance, and gets what was sent after that event.

  pk EVENTS#<session id>   sk <event id>   message (JSON text)   expires_at (TTL: an hour)

An event id is `<µs since the epoch, 16 digits>-<8 hex>`, strictly increasing within a process
(a session's stream is served by one instance at a time, so its events are in order) and sorting
by time across instances, so an id names a point in the session's stream that any instance can
resume after; the random part keeps two instances' ids apart. A replay is bounded (`REPLAY_LIMIT`).

A request's own stream that the gateway closed mid-call (SEP-1699, `protocol.endpoint`) keeps
the rest of the call's messages the same way, under `EVENTS#<session id>/<stream id>`
(`call_stream`); the client sees their ids as `<stream id>/<event id>` (`CALL_EVENT_ID`), so a
`Last-Event-ID` names which stream it resumes.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from typing import Any, Protocol

from tollway.store.table import DynamoTable, key

TTL_SECONDS = 3600
REPLAY_LIMIT = 100
MAX_PAGES = 5
"""Pages one replay reads at most (expired events not yet deleted come first)."""
EVENT_ID = re.compile(r"^\d{16}-[0-9a-f]{8}$")
"""The form of the ids this store hands out: anything else cannot name one of its events."""
CALL_EVENT_ID = re.compile(r"^(\d{16}-[0-9a-f]{8})/(\d{16}-[0-9a-f]{8})$")
"""An event of a request's own stream, as its client sees it: `<stream id>/<event id>`."""


_last = [0]
_ids = threading.Lock()


def new_event_id() -> str:
    with _ids:
        _last[0] = max(_last[0] + 1, time.time_ns() // 1000)
        micros = _last[0]
    return f"{micros:016d}-{secrets.token_hex(4)}"


def call_stream(session: str, stream_id: str) -> str:
    """The store's stream of one request's events (`stream_id`: the id of its first event)."""
    return f"{session}/{stream_id}"


class EventStore(Protocol):
    def append(self, stream: str, message: dict[str, Any]) -> str:
        """Keep `message` as the next event of `stream`; its id."""
        ...

    def after(self, stream: str, event_id: str) -> list[tuple[str, dict[str, Any]]]:
        """The events of `stream` after `event_id`, oldest first (at most REPLAY_LIMIT)."""
        ...


class MemoryEventStore:
    def __init__(self) -> None:
        self.events: dict[str, list[tuple[str, dict[str, Any], float]]] = {}
        self._lock = threading.Lock()

    def append(self, stream: str, message: dict[str, Any]) -> str:
        event_id = new_event_id()
        with self._lock:
            now = time.time()
            kept = [e for e in self.events.get(stream, []) if e[2] > now]
            self.events[stream] = [*kept, (event_id, message, now + TTL_SECONDS)]
        return event_id

    def after(self, stream: str, event_id: str) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            now = time.time()
            later = sorted((i, m) for i, m, expires in self.events.get(stream, []) if i > event_id and expires > now)
        return later[:REPLAY_LIMIT]


class DynamoEventStore(DynamoTable):
    unavailable = "Event store unavailable"

    def append(self, stream: str, message: dict[str, Any]) -> str:
        event_id = new_event_id()
        self._call(
            "put_item",
            Item={
                "pk": {"S": key("EVENTS", stream)},
                "sk": {"S": event_id},
                "message": {"S": json.dumps(message, separators=(",", ":"))},
                "expires_at": {"N": str(int(time.time()) + TTL_SECONDS)},
            },
        )
        return event_id

    def after(self, stream: str, event_id: str) -> list[tuple[str, dict[str, Any]]]:
        found: list[tuple[str, dict[str, Any]]] = []
        query: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND sk > :after",
            "ExpressionAttributeValues": {":pk": {"S": key("EVENTS", stream)}, ":after": {"S": event_id}},
            "Limit": REPLAY_LIMIT,
            "ConsistentRead": True,
        }
        now = time.time()
        for _ in range(MAX_PAGES):
            page = self._call("query", **query)
            for item in page.get("Items", []):
                if int(item["expires_at"]["N"]) > now:  # TTL deletion lags: an expired event is gone
                    found.append((item["sk"]["S"], json.loads(item["message"]["S"])))
            if len(found) >= REPLAY_LIMIT or "LastEvaluatedKey" not in page:
                break
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found[:REPLAY_LIMIT]
