"""DynamoDB access behind small interfaces, with in-memory stand-ins for tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from tollway.store.approvals import ApprovalStore, DynamoApprovalStore, MemoryApprovalStore
from tollway.store.events import DynamoEventStore, EventStore, MemoryEventStore
from tollway.store.ledger import DynamoLedger, Ledger, MemoryLedger
from tollway.store.pins import DynamoPinStore, MemoryPinStore, PinStore
from tollway.store.sessions import DynamoSessionStore, MemorySessionStore, SessionStore
from tollway.store.usage import UsageReader


@dataclass
class Stores:
    sessions: SessionStore
    ledger: Ledger
    """Quotas and the usage record of each call, in one write (`store/ledger.py`)."""
    pins: PinStore = field(default_factory=MemoryPinStore)
    """Defaults to memory for hand-built test stores; `dynamo()` sets the DynamoDB one."""
    approvals: ApprovalStore = field(default_factory=MemoryApprovalStore)
    events: EventStore = field(default_factory=MemoryEventStore)
    """The 2025-era standalone streams' events, for resumption on any instance (`store/events.py`)."""

    @property
    def usage(self) -> UsageReader:
        return UsageReader(self.ledger)

    @classmethod
    def dynamo(cls) -> Stores:
        """The deployed stores; boto3 clients are created on first use, so requests that need
        no DynamoDB never import boto3."""
        return cls(DynamoSessionStore(), DynamoLedger(), DynamoPinStore(), DynamoApprovalStore(), DynamoEventStore())

    @classmethod
    def memory(cls, sessions: SessionStore | None = None) -> Stores:
        return cls(sessions or MemorySessionStore(), MemoryLedger(), MemoryPinStore())


__all__ = ["Stores"]
