"""Session state in DynamoDB: 2025-era client sessions and the upstream sessions they open.

Items (single table, `pk`/`sk`, TTL on `expires_at`, each well under 1 KB):
  SESSION#<id>            / META           a client session, bound to its principal
  PRINCIPAL#<tenant>#<sub> / UPSTREAM#<name> a legacy upstream session opened for a
                                            2026-era (sessionless) caller
DynamoDB deletes expired items lazily, so reads also check `expires_at` themselves.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from tollway.errors import InternalError
from tollway.store.table import ConditionFailed, DynamoTable


@dataclass(frozen=True)
class UpstreamSession:
    session_id: str | None
    """None when the upstream is stateless (answered initialize without a session id)."""
    protocol_version: str

    def to_item(self) -> dict[str, Any]:
        return {"M": {"sid": {"S": self.session_id or ""}, "ver": {"S": self.protocol_version}}}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> UpstreamSession:
        m = item["M"]
        return cls(session_id=m["sid"]["S"] or None, protocol_version=m["ver"]["S"])


@dataclass
class Session:
    id: str
    tenant: str
    subject: str
    protocol_version: str
    client_info: dict[str, Any]
    client_capabilities: dict[str, Any]
    expires_at: int
    upstreams: dict[str, UpstreamSession] = field(default_factory=dict)

    def owned_by(self, tenant: str, subject: str) -> bool:
        return self.tenant == tenant and self.subject == subject


class SessionStore(Protocol):
    def create(self, session: Session) -> None: ...
    def get(self, session_id: str) -> Session | None: ...
    def renew(self, session_id: str, expires_at: int) -> None: ...
    def delete(self, session_id: str) -> None: ...
    def add_upstream(self, session_id: str, upstream: str, value: UpstreamSession, replacing: str | None) -> bool:
        """Record `value`; False if another value than `replacing` is already recorded (caller re-reads)."""
        ...

    def get_principal_upstream(self, principal: str, upstream: str) -> UpstreamSession | None: ...
    def put_principal_upstream(self, principal: str, upstream: str, value: UpstreamSession, ttl: int) -> None: ...


class MemorySessionStore:
    """In-process store for unit tests; same contract as the DynamoDB one."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.principal_upstreams: dict[tuple[str, str], tuple[UpstreamSession, int]] = {}

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

    def get_principal_upstream(self, principal: str, upstream: str) -> UpstreamSession | None:
        found = self.principal_upstreams.get((principal, upstream))
        return found[0] if found is not None and found[1] > time.time() else None

    def put_principal_upstream(self, principal: str, upstream: str, value: UpstreamSession, ttl: int) -> None:
        self.principal_upstreams[(principal, upstream)] = (value, int(time.time()) + ttl)


class DynamoSessionStore(DynamoTable):
    """The deployed store. Takes an injected boto3 DynamoDB client (created lazily by default,
    so requests that need no session never import boto3)."""

    unavailable = "Session store unavailable"

    def create(self, session: Session) -> None:
        item = {
            "pk": {"S": f"SESSION#{session.id}"},
            "sk": {"S": "META"},
            "tenant": {"S": session.tenant},
            "sub": {"S": session.subject},
            "ver": {"S": session.protocol_version},
            "client": {"S": json.dumps({"info": session.client_info, "caps": session.client_capabilities})},
            "ups": {"M": {name: value.to_item() for name, value in session.upstreams.items()}},
            "expires_at": {"N": str(session.expires_at)},
        }
        try:
            self._call("put_item", Item=item, ConditionExpression="attribute_not_exists(pk)", conditional=True)
        except ConditionFailed as exc:  # the id is taken: not retryable as is
            raise InternalError("Session could not be created") from exc

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
            upstreams={k: UpstreamSession.from_item(v) for k, v in item.get("ups", {}).get("M", {}).items()},
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
        values: dict[str, Any] = {":v": value.to_item()}
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

    def get_principal_upstream(self, principal: str, upstream: str) -> UpstreamSession | None:
        reply = self._call("get_item", Key=self._principal_key(principal, upstream))
        item = reply.get("Item")
        if item is None or int(item["expires_at"]["N"]) <= time.time():
            return None
        return UpstreamSession.from_item(item["up"])

    def put_principal_upstream(self, principal: str, upstream: str, value: UpstreamSession, ttl: int) -> None:
        item = {
            **self._principal_key(principal, upstream),
            "up": value.to_item(),
            "expires_at": {"N": str(int(time.time()) + ttl)},
        }
        self._call("put_item", Item=item)

    @staticmethod
    def _session_key(session_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"SESSION#{session_id}"}, "sk": {"S": "META"}}

    @staticmethod
    def _principal_key(principal: str, upstream: str) -> dict[str, Any]:
        return {"pk": {"S": f"PRINCIPAL#{principal}"}, "sk": {"S": f"UPSTREAM#{upstream}"}}
