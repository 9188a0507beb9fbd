"""Session state in DynamoDB: 2025-era client sessions and the upstream sessions they open.

Items (single table, `pk`/`sk`, TTL on `expires_at`, each well under 1 KB):
  SESSION#<id>             / META            a client session, bound to its principal;
                                             created_at, used_at (last renewal), and
                                             gsi1pk SESSIONS#<tenant> / gsi1sk <created>#<id>
                                             so a tenant's sessions are one Query (index ByMonth)
  PRINCIPAL#<tenant>#<sub> / UPSTREAM#<name> a legacy upstream session opened for a
                                             2026-era (sessionless) caller
Key parts are escaped (`store.table.key`), so no two principals share an item.
DynamoDB deletes expired items lazily, so reads also check `expires_at` themselves.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol

from tollway.context import Principal, Session, UpstreamSession
from tollway.errors import StorageError
from tollway.store.table import ConditionFailed, DynamoTable, key

SESSIONS_INDEX = "ByMonth"
"""The table's one secondary index (gsi1pk/gsi1sk): usage by month, and sessions by tenant."""
MAX_PAGE = 100
_MAX_CURSOR_CHARS = 1024


class InvalidCursor(ValueError):
    """A listing cursor this store did not hand out (or for another tenant)."""


def _sort_key(session: Session) -> str:
    """Newest first when read in descending order; the id makes it unique."""
    return key(f"{session.created_at:012d}", session.id)


def _encode_cursor(sort_key: str, session_id: str) -> str:
    raw = json.dumps([sort_key, session_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        if len(cursor) > _MAX_CURSOR_CHARS:
            raise ValueError
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        raise InvalidCursor(cursor) from None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) and v for v in value)):
        raise InvalidCursor(cursor)
    return value[0], value[1]


def _upstream_item(value: UpstreamSession) -> dict[str, Any]:
    return {"M": {"sid": {"S": value.session_id or ""}, "ver": {"S": value.protocol_version}}}


def _upstream_from(item: dict[str, Any]) -> UpstreamSession:
    m = item["M"]
    return UpstreamSession(session_id=m["sid"]["S"] or None, protocol_version=m["ver"]["S"])


class SessionStore(Protocol):
    def create(self, session: Session) -> None: ...
    def get(self, session_id: str) -> Session | None: ...
    def renew(self, session_id: str, expires_at: int) -> None: ...
    def delete(self, session_id: str) -> None: ...
    def list_tenant(self, tenant: str, limit: int, cursor: str | None) -> tuple[list[Session], str | None]:
        """One page of the tenant's live sessions, newest first, and the cursor of the next page
        (None at the end); `InvalidCursor` for a cursor it did not hand out. A page may hold
        fewer than `limit` sessions even when more follow."""
        ...

    def add_upstream(self, session_id: str, upstream: str, value: UpstreamSession, replacing: str | None) -> bool:
        """Record `value`; False if another value than `replacing` is already recorded (caller re-reads)."""
        ...

    def get_principal_upstream(self, principal: Principal, upstream: str) -> UpstreamSession | None: ...
    def put_principal_upstream(self, principal: Principal, upstream: str, value: UpstreamSession, ttl: int) -> None: ...


class CachedSessionStore:
    """A session store that remembers the sessions it read for `seconds`, so a 2025-era call does
    not read its session on every request. Writes go through and keep the copy current; a lost
    `add_upstream` race forgets it (the caller re-reads). A read that was under way while the
    session changed here is answered but not remembered: it may predate the change, and a stale
    copy would send this instance's requests to an upstream session the record no longer holds.
    Bound: a session ended through another instance still answers here for up to `seconds`."""

    MAX_SESSIONS = 10_000

    def __init__(self, inner: SessionStore, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds
        self._seen: OrderedDict[str, _Remembered] = OrderedDict()
        self._changes = 0
        """Counts the changes made here, so a read knows whether one came while it was under way."""
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # listings and principal upstreams: as they are

    def get(self, session_id: str) -> Session | None:
        session = self.remembered(session_id)
        if session is not None:
            return session
        now = time.time()
        with self._lock:
            began = self._changes
        session = self.inner.get(session_id)
        if session is not None:
            self._keep(session, now, began)
        return session

    def remembered(self, session_id: str) -> Session | None:
        """The session as this instance read it within `seconds`, or None: memory only, no I/O
        (so the event loop may ask without a thread hop)."""
        now = time.time()
        with self._lock:
            entry = self._seen.get(session_id)
            session = entry.session if entry is not None and now - entry.read_at < self.seconds else None
            if session is not None and session.expires_at > now:
                return _copy(session)
        return None

    def create(self, session: Session) -> None:
        self.inner.create(session)
        self._keep(session, time.time())

    def renew(self, session_id: str, expires_at: int) -> None:
        self.inner.renew(session_id, expires_at)
        with self._lock:
            entry = self._changed(session_id)
            if entry is not None and entry.session is not None:
                entry.session.expires_at, entry.session.used_at = expires_at, int(time.time())

    def delete(self, session_id: str) -> None:
        try:
            self.inner.delete(session_id)
        finally:
            self._forget(session_id)

    def add_upstream(self, session_id: str, upstream: str, value: UpstreamSession, replacing: str | None) -> bool:
        recorded = self.inner.add_upstream(session_id, upstream, value, replacing)
        with self._lock:
            entry = self._changed(session_id)
            if recorded and entry is not None and entry.session is not None:
                entry.session.upstreams[upstream] = value
            else:
                self._put(session_id, None)  # a race lost, or a session not remembered: read it again
        return recorded

    def _keep(self, session: Session, at: float, began: int | None = None) -> None:
        """Remember `session` as read at `at`; `began`: the change count when its read began (a
        read that a change here overtook is not remembered)."""
        with self._lock:
            entry = self._seen.get(session.id)
            if began is None or entry is None or entry.change <= began:
                self._put(session.id, _copy(session), at)

    def _changed(self, session_id: str) -> _Remembered | None:
        """The entry of a session changed here (under the lock), marked with the change."""
        self._changes += 1
        entry = self._seen.get(session_id)
        if entry is not None:
            entry.change = self._changes
        return entry

    def _forget(self, session_id: str) -> None:
        with self._lock:
            self._put(session_id, None)

    def _put(self, session_id: str, session: Session | None, at: float = 0.0) -> None:
        """(Under the lock.) A change: the newest entry of a session; the least recently kept go first."""
        self._changes += 1
        self._seen[session_id] = _Remembered(at, session, self._changes)
        self._seen.move_to_end(session_id)
        while len(self._seen) > self.MAX_SESSIONS:
            self._seen.popitem(last=False)


class _Remembered:
    """What is remembered of one session. A plain class: a dataclass compiles its methods at
    import, which a cold start pays (README, performance)."""

    __slots__ = ("change", "read_at", "session")

    def __init__(self, read_at: float, session: Session | None, change: int) -> None:
        self.read_at = read_at
        self.session = session
        """None: forgotten (ended, or a race lost) until the store is read again."""
        self.change = change
        """The change count when this entry last changed."""


def _copy(session: Session) -> Session:
    """A copy a request may change (`upstreams`) without changing the remembered one."""
    return session.replace(upstreams=dict(session.upstreams))


class MemorySessionStore:
    """In-process store for unit tests; same contract as the DynamoDB one."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.principal_upstreams: dict[tuple[Principal, str], tuple[UpstreamSession, int]] = {}

    def create(self, session: Session) -> None:
        self.sessions[session.id] = session

    def get(self, session_id: str) -> Session | None:
        session = self.sessions.get(session_id)
        return session if session is not None and session.expires_at > time.time() else None

    def renew(self, session_id: str, expires_at: int) -> None:
        if session_id in self.sessions:
            self.sessions[session_id].expires_at = expires_at
            self.sessions[session_id].used_at = int(time.time())

    def delete(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)

    def list_tenant(self, tenant: str, limit: int, cursor: str | None) -> tuple[list[Session], str | None]:
        after = _decode_cursor(cursor)[0] if cursor else None
        now = time.time()
        live = sorted(
            (s for s in self.sessions.values() if s.tenant == tenant and s.expires_at > now),
            key=_sort_key,
            reverse=True,
        )
        if after is not None:
            live = [s for s in live if _sort_key(s) < after]
        page = live[:limit]
        more = len(live) > limit
        return page, _encode_cursor(_sort_key(page[-1]), page[-1].id) if more else None

    def add_upstream(self, session_id: str, upstream: str, value: UpstreamSession, replacing: str | None) -> bool:
        session = self.sessions.get(session_id)
        if session is None:
            return False
        current = session.upstreams.get(upstream)
        if current is not None and current.session_id != replacing:
            return False
        session.upstreams[upstream] = value
        return True

    def get_principal_upstream(self, principal: Principal, upstream: str) -> UpstreamSession | None:
        found = self.principal_upstreams.get((principal, upstream))
        return found[0] if found is not None and found[1] > time.time() else None

    def put_principal_upstream(self, principal: Principal, upstream: str, value: UpstreamSession, ttl: int) -> None:
        self.principal_upstreams[(principal, upstream)] = (value, int(time.time()) + ttl)


class DynamoSessionStore(DynamoTable):
    """The deployed store. Takes an injected boto3 DynamoDB client (created lazily by default,
    so requests that need no session never import boto3)."""

    unavailable = "Session store unavailable"

    def create(self, session: Session) -> None:
        item = {
            **self._session_key(session.id),
            "tenant": {"S": session.tenant},
            "sub": {"S": session.subject},
            "ver": {"S": session.protocol_version},
            "client": {"S": json.dumps({"info": session.client_info, "caps": session.client_capabilities})},
            "ups": {"M": {name: _upstream_item(value) for name, value in session.upstreams.items()}},
            "expires_at": {"N": str(session.expires_at)},
            "created_at": {"N": str(session.created_at)},
            "used_at": {"N": str(session.used_at)},
            "gsi1pk": {"S": key("SESSIONS", session.tenant)},
            "gsi1sk": {"S": _sort_key(session)},
        }
        try:
            self._call("put_item", Item=item, ConditionExpression="attribute_not_exists(pk)", conditional=True)
        except ConditionFailed as exc:  # the id is taken (256 random bits: never in practice)
            raise StorageError("Session id already taken") from exc

    def get(self, session_id: str) -> Session | None:
        reply = self._call("get_item", Key=self._session_key(session_id), ConsistentRead=True)
        item = reply.get("Item")
        if item is None or int(item["expires_at"]["N"]) <= time.time():
            return None
        return _session_from(session_id, item)

    def list_tenant(self, tenant: str, limit: int, cursor: str | None) -> tuple[list[Session], str | None]:
        partition = key("SESSIONS", tenant)
        query: dict[str, Any] = {
            "IndexName": SESSIONS_INDEX,
            "KeyConditionExpression": "gsi1pk = :p",
            # Expired items linger until DynamoDB's TTL sweep gets to them.
            "FilterExpression": "expires_at > :now",
            "ExpressionAttributeValues": {":p": {"S": partition}, ":now": {"N": str(int(time.time()))}},
            "ScanIndexForward": False,
            "Limit": min(max(limit, 1), MAX_PAGE),
        }
        if cursor:
            sort_key, session_id = _decode_cursor(cursor)
            query["ExclusiveStartKey"] = {
                **self._session_key(session_id),
                "gsi1pk": {"S": partition},
                "gsi1sk": {"S": sort_key},
            }
        reply = self._call("query", **query)
        sessions = [_session_from(_session_id(item), item) for item in reply.get("Items", [])]
        last = reply.get("LastEvaluatedKey")
        return sessions, _encode_cursor(last["gsi1sk"]["S"], _session_id(last)) if last else None

    def renew(self, session_id: str, expires_at: int) -> None:
        with contextlib.suppress(ConditionFailed):  # deleted meanwhile: the next request finds it gone
            self._call(
                "update_item",
                Key=self._session_key(session_id),
                UpdateExpression="SET expires_at = :e, used_at = :u",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":e": {"N": str(expires_at)}, ":u": {"N": str(int(time.time()))}},
                conditional=True,
            )

    def delete(self, session_id: str) -> None:
        self._call("delete_item", Key=self._session_key(session_id))

    def add_upstream(self, session_id: str, upstream: str, value: UpstreamSession, replacing: str | None) -> bool:
        condition = "attribute_exists(pk) AND attribute_not_exists(ups.#u)"
        values: dict[str, Any] = {":v": _upstream_item(value)}
        if replacing is not None:
            condition = "attribute_exists(pk) AND (attribute_not_exists(ups.#u) OR ups.#u.sid = :old)"
            values[":old"] = {"S": replacing}
        try:
            self._call(
                "update_item",
                Key=self._session_key(session_id),
                UpdateExpression="SET ups.#u = :v",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#u": upstream},
                ExpressionAttributeValues=values,
                conditional=True,
            )
        except ConditionFailed:
            return False
        return True

    def get_principal_upstream(self, principal: Principal, upstream: str) -> UpstreamSession | None:
        reply = self._call("get_item", Key=self._principal_key(principal, upstream))
        item = reply.get("Item")
        if item is None or int(item["expires_at"]["N"]) <= time.time():
            return None
        return _upstream_from(item["up"])

    def put_principal_upstream(self, principal: Principal, upstream: str, value: UpstreamSession, ttl: int) -> None:
        item = {
            **self._principal_key(principal, upstream),
            "up": _upstream_item(value),
            "expires_at": {"N": str(int(time.time()) + ttl)},
        }
        self._call("put_item", Item=item)

    @staticmethod
    def _session_key(session_id: str) -> dict[str, Any]:
        return {"pk": {"S": key("SESSION", session_id)}, "sk": {"S": "META"}}

    @staticmethod
    def _principal_key(principal: Principal, upstream: str) -> dict[str, Any]:
        return {
            "pk": {"S": key("PRINCIPAL", principal.tenant, principal.subject)},
            "sk": {"S": key("UPSTREAM", upstream)},
        }


def _session_id(item: dict[str, Any]) -> str:
    """The id in a session item's key (`SESSION#<escaped id>`)."""
    escaped = item["pk"]["S"].partition("#")[2]
    return re.sub("%(23|25)", lambda m: "#" if m.group(1) == "23" else "%", escaped)


def _session_from(session_id: str, item: dict[str, Any]) -> Session:
    client = json.loads(item["client"]["S"])
    return Session(
        id=session_id,
        tenant=item["tenant"]["S"],
        subject=item["sub"]["S"],
        protocol_version=item["ver"]["S"],
        client_info=client["info"],
        client_capabilities=client["caps"],
        expires_at=int(item["expires_at"]["N"]),
        upstreams={k: _upstream_from(v) for k, v in item.get("ups", {}).get("M", {}).items()},
        # Sessions created before these attributes existed read as 0 (unknown).
        created_at=int(item.get("created_at", {}).get("N", "0")),
        used_at=int(item.get("used_at", {}).get("N", "0")),
    )
