"""Session state in DynamoDB: 2025-era client sessions and the upstream sessions they open.

Items (single table, `pk`/`sk`, TTL on `expires_at`, each well under 1 KB):
  SESSION#<id>             / META            a client session, bound to its principal
  PRINCIPAL#<tenant>#<sub> / UPSTREAM#<name> a legacy upstream session opened for a
                                             2026-era (sessionless) caller
Key parts are escaped (`store.table.key`), so no two principals share an item.
DynamoDB deletes expired items lazily, so reads also check `expires_at` themselves.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any, Protocol

from tollway.context import Principal, Session, UpstreamSession
from tollway.errors import StorageError
from tollway.store.table import ConditionFailed, DynamoTable, key


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
    def add_upstream(self, session_id: str, upstream: str, value: UpstreamSession, replacing: str | None) -> bool:
        """Record `value`; False if another value than `replacing` is already recorded (caller re-reads)."""
        ...

    def get_principal_upstream(self, principal: Principal, upstream: str) -> UpstreamSession | None: ...
    def put_principal_upstream(self, principal: Principal, upstream: str, value: UpstreamSession, ttl: int) -> None: ...


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

    def delete(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)

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
        )

    def renew(self, session_id: str, expires_at: int) -> None:
        with contextlib.suppress(ConditionFailed):  # deleted meanwhile: the next request finds it gone
            self._call(
                "update_item",
                Key=self._session_key(session_id),
                UpdateExpression="SET expires_at = :e",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":e": {"N": str(expires_at)}},
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
