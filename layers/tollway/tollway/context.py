"""Who is calling and how: built once per request by the protocol stage, read by the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tollway.store.sessions import Session


@dataclass(frozen=True)
class Principal:
    subject: str
    tenant: str
    scopes: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()

    @property
    def key(self) -> str:
        return f"{self.tenant}#{self.subject}"


ANONYMOUS = Principal(subject="anonymous", tenant="default")


@dataclass
class RequestContext:
    principal: Principal
    modern: bool
    """True for a 2026-07-28 (stateless) request, False for the 2025 session era."""
    protocol_version: str
    client_info: dict[str, Any] = field(default_factory=dict)
    client_capabilities: dict[str, Any] = field(default_factory=dict)
    session: Session | None = None
    streaming: bool = False
    """Whether this response can stream, so server-to-client requests can be relayed."""
    forward_headers: dict[str, str] = field(default_factory=dict)
    """`Mcp-Param-*` headers of a 2026-07-28 call, forwarded to the upstream as sent."""
