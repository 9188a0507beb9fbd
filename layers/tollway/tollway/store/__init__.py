"""DynamoDB access behind small interfaces, with in-memory stand-ins for tests."""

from __future__ import annotations

from tollway.record import Record
from tollway.store.approvals import ApprovalStore, DynamoApprovalStore, MemoryApprovalStore
from tollway.store.events import DynamoEventStore, EventStore, MemoryEventStore
from tollway.store.ledger import DynamoLedger, Ledger, MemoryLedger
from tollway.store.pins import DynamoPinStore, MemoryPinStore, PinStore
from tollway.store.sessions import DynamoSessionStore, MemorySessionStore, SessionStore
from tollway.store.table import DynamoClient
from tollway.store.usage import UsageReader


class Stores(Record):
    __slots__ = ("approvals", "events", "ledger", "pins", "sessions")

    def __init__(
        self,
        sessions: SessionStore,
        ledger: Ledger,
        pins: PinStore | None = None,
        approvals: ApprovalStore | None = None,
        events: EventStore | None = None,
    ) -> None:
        self.sessions = sessions
        self.ledger = ledger
        """Quotas and the usage record of each call, in one write (`store/ledger.py`)."""
        self.pins: PinStore = MemoryPinStore() if pins is None else pins
        """Defaults to memory for hand-built test stores; `dynamo()` sets the DynamoDB one."""
        self.approvals: ApprovalStore = MemoryApprovalStore() if approvals is None else approvals
        self.events: EventStore = MemoryEventStore() if events is None else events
        """The 2025-era standalone streams' events, for resumption on any instance (`store/events.py`)."""

    @property
    def usage(self) -> UsageReader:
        return UsageReader(self.ledger)

    @classmethod
    def dynamo(cls) -> Stores:
        """The deployed stores, sharing one DynamoDB client, created on first use (or by
        `connect`), so requests that need no DynamoDB never import boto3."""
        shared = DynamoClient()
        return cls(
            DynamoSessionStore(shared=shared),
            DynamoLedger(shared=shared),
            DynamoPinStore(shared=shared),
            DynamoApprovalStore(shared=shared),
            DynamoEventStore(shared=shared),
        )

    def connect(self) -> None:
        """Create the DynamoDB client now (the deployed stores share it); memory stores need none."""
        getattr(self.ledger, "client", None)

    @classmethod
    def memory(cls, sessions: SessionStore | None = None) -> Stores:
        return cls(sessions or MemorySessionStore(), MemoryLedger(), MemoryPinStore())


__all__ = ["Stores"]
