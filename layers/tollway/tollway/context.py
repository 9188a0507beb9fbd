"""Who is calling and how: the values the protocol stage builds once per request and every stage
below reads (principal, era, session, deadline). Plain data, no behaviour beyond small helpers."""

from __future__ import annotations

import secrets
import string
import time
from typing import Any, NamedTuple

from tollway.record import Record

_LEAD = string.ascii_letters + string.digits


def new_id(nbytes: int) -> str:
    """A random URL-safe identifier (`nbytes` of randomness) that never starts with `-`: people
    pass session and approval ids to `tollway` as arguments, where a leading `-` reads as an option."""
    return secrets.choice(_LEAD) + secrets.token_urlsafe(nbytes)


class Principal(NamedTuple):
    subject: str
    tenant: str
    scopes: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()


ANONYMOUS = Principal(subject="anonymous", tenant="default")


class UpstreamSession(NamedTuple):
    """A 2025-era session the gateway holds with one upstream."""

    session_id: str | None
    """None when the upstream is stateless (answered initialize without a session id)."""
    protocol_version: str


class Session(Record):
    """A 2025-era client session, bound to the principal that opened it."""

    __slots__ = (
        "client_capabilities",
        "client_info",
        "created_at",
        "expires_at",
        "id",
        "protocol_version",
        "subject",
        "tenant",
        "upstreams",
        "used_at",
    )

    def __init__(
        self,
        id: str,
        tenant: str,
        subject: str,
        protocol_version: str,
        client_info: dict[str, Any],
        client_capabilities: dict[str, Any],
        expires_at: int,
        upstreams: dict[str, UpstreamSession] | None = None,
        created_at: int = 0,
        used_at: int = 0,
    ) -> None:
        self.id = id
        self.tenant = tenant
        self.subject = subject
        self.protocol_version = protocol_version
        self.client_info = client_info
        self.client_capabilities = client_capabilities
        self.expires_at = expires_at
        self.upstreams: dict[str, UpstreamSession] = {} if upstreams is None else upstreams
        self.created_at = created_at
        self.used_at = used_at
        """When the session was created or last renewed (epoch seconds): "last used", accurate to
        half the session TTL, since a used session is renewed once per half-TTL, not per call."""

    def owned_by(self, principal: Principal) -> bool:
        return self.tenant == principal.tenant and self.subject == principal.subject


SCOPE_CONTEXT = "tollway.context"
"""ASGI scope key: the RequestContext of an /mcp request, once the protocol stage built it."""
SCOPE_AUDIT = "tollway.audit"
"""ASGI scope key: the request's AuditFacts (from the telemetry middleware, before any stage)."""


class AuditFacts:
    """What the stages learn about one MCP request, for its audit record (`tollway.telemetry.audit`).
    Each stage fills in what it decides; never raw arguments, results, PII or tokens. Slotted: a
    misspelt fact is an AttributeError, not a new attribute the record never reads."""

    __slots__ = (
        "approval_id",
        "arguments_sha256",
        "decision",
        "error",
        "method",
        "outcome",
        "public_name",
        "request_bytes",
        "response_bytes",
        "result_sha256",
        "rule",
        "units",
        "upstream",
        "upstream_ms",
        "upstream_name",
    )

    def __init__(self) -> None:
        self.method = ""
        self.public_name: str | None = None
        """The tool, prompt or resource as the caller named it."""
        self.upstream: str | None = None
        self.upstream_name: str | None = None
        """The name the upstream knows it by."""
        self.decision = "allowed"
        """allowed | denied | rate_limited | withheld | pending_approval | invalid"""
        self.rule: str | None = None
        """Why, for a decision other than allowed: the policy rule, quota window or gate reason."""
        self.approval_id: str | None = None
        self.outcome: str | None = None
        """ok | tool_error | upstream_error | timeout | result_withheld | cancelled | error (None
        until known; the writer derives it from the answer's status when no stage set it)."""
        self.error: str | None = None
        """The class of the error the caller was answered with (set by the error middleware)."""
        self.units = 0
        self.upstream_ms: float | None = None
        self.request_bytes = 0
        self.response_bytes = 0
        self.arguments_sha256: str | None = None
        """Of the masked arguments, as sent upstream."""
        self.result_sha256: str | None = None
        """Of the masked result, as sent to the caller."""


class RequestContext(Record):
    __slots__ = (
        "audit",
        "budgets",
        "client_capabilities",
        "client_info",
        "deadline",
        "forward_headers",
        "modern",
        "principal",
        "protocol_version",
        "resumable",
        "session",
        "streaming",
    )

    def __init__(
        self,
        principal: Principal,
        modern: bool,
        protocol_version: str,
        client_info: dict[str, Any] | None = None,
        client_capabilities: dict[str, Any] | None = None,
        session: Session | None = None,
        streaming: bool = False,
        resumable: bool = False,
        forward_headers: dict[str, str] | None = None,
        deadline: float | None = None,
        budgets: dict[str, Deadline] | None = None,
        audit: AuditFacts | None = None,
    ) -> None:
        self.principal = principal
        self.modern = modern
        """True for a 2026-07-28 (stateless) request, False for the 2025 session era."""
        self.protocol_version = protocol_version
        self.client_info: dict[str, Any] = {} if client_info is None else client_info
        self.client_capabilities: dict[str, Any] = {} if client_capabilities is None else client_capabilities
        self.session = session
        self.streaming = streaming
        """Whether this response can stream, so server-to-client requests can be relayed."""
        self.resumable = resumable
        """Whether this caller's event stream may be closed mid-call and resumed with GET and
        `Last-Event-ID` (a 2025-11-25 session, SEP-1699), as the endpoint does where an upstream
        closed its own (`routing.upstream.STREAM_PAUSED`)."""
        self.forward_headers: dict[str, str] = {} if forward_headers is None else forward_headers
        """`Mcp-Param-*` headers of a 2026-07-28 call, forwarded to the upstream as sent."""
        self.deadline = deadline
        """`time.monotonic()` by which the answer must be written (on Lambda: before the invocation
        ends); None: only each upstream's own timeout bounds the request."""
        self.budgets: dict[str, Deadline] = {} if budgets is None else budgets
        """Per upstream: the one budget this request has with it (probe, session, catalog, call)."""
        self.audit = AuditFacts() if audit is None else audit

    @property
    def relays(self) -> bool:
        """Whether server-to-client requests can reach this caller (a 2025 session over a stream)."""
        return self.streaming and self.session is not None

    def budget(self, seconds: float) -> float:
        """The deadline of a step that may take `seconds`, within the request's own deadline."""
        step = time.monotonic() + seconds
        return step if self.deadline is None else min(step, self.deadline)


class Deadline:
    """When one upstream exchange (probe, session, call: all of it) must be over, as
    `time.monotonic()`. Mutable: a call whose server request waits on a person is extended."""

    def __init__(self, at: float) -> None:
        self.at = at

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def extend_to(self, at: float) -> None:
        self.at = max(self.at, at)
