"""Legacy (2025-era) upstream sessions, opened lazily and kept in DynamoDB.

A 2025-era caller's session holds one upstream session per upstream it used (recorded in its
session item, so any instance can continue it); a sessionless 2026-era caller shares one per
principal and upstream (its own item, cached per warm instance). An upstream that has lost a
session gets a new one once. Store I/O runs off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from tollway.blocking import run_blocking
from tollway.config import GatewayConfig
from tollway.context import Deadline, Principal, RequestContext, Session, UpstreamSession
from tollway.routing.upstream import UpstreamClient
from tollway.store.sessions import SessionStore

_CLIENT_REQUESTS = ("sampling", "elicitation", "roots")


class UpstreamSessions:
    def __init__(self, config: GatewayConfig, store: SessionStore, clients: Mapping[str, UpstreamClient]) -> None:
        self.ttl = config.sessions.ttl_seconds
        self.store = store
        self.clients = clients
        self._by_principal: dict[tuple[Principal, str], UpstreamSession] = {}

    async def get(
        self, ctx: RequestContext, name: str, deadline: Deadline, stale: UpstreamSession | None = None
    ) -> UpstreamSession:
        """The session to use with upstream `name`; `stale`: the one it has just lost."""
        if ctx.session is not None:
            return await self._for_session(ctx, name, deadline, stale)
        key = (ctx.principal, name)
        current = self._by_principal.get(key)
        if current is None and stale is None:
            current = await run_blocking(self.store.get_principal_upstream, ctx.principal, name)
        if current is None or current == stale:
            current = await self._open(ctx, name, deadline)
            await run_blocking(self.store.put_principal_upstream, ctx.principal, name, current, self.ttl)
        self._by_principal[key] = current
        return current

    async def _for_session(
        self, ctx: RequestContext, name: str, deadline: Deadline, stale: UpstreamSession | None
    ) -> UpstreamSession:
        assert ctx.session is not None
        current = ctx.session.upstreams.get(name)
        if current is not None and current != stale:
            return current
        opened = await self._open(ctx, name, deadline)
        replacing = stale.session_id if stale else None
        recorded = await run_blocking(self.store.add_upstream, ctx.session.id, name, opened, replacing)
        if not recorded:
            # A concurrent request opened one first: use theirs, close ours.
            winner = await run_blocking(self.store.get, ctx.session.id)
            if winner is not None and name in winner.upstreams:
                await self.clients[name].delete_session(opened)
                opened = winner.upstreams[name]
        ctx.session.upstreams[name] = opened
        return opened

    async def _open(self, ctx: RequestContext, name: str, deadline: Deadline) -> UpstreamSession:
        capabilities: dict[str, Any] = dict(ctx.client_capabilities)
        if not ctx.relays:
            # Without a back channel the upstream must not count on asking the client anything.
            for capability in _CLIENT_REQUESTS:
                capabilities.pop(capability, None)
        info = ctx.client_info or {"name": "tollway", "version": "1"}
        opened, _ = await self.clients[name].initialize(capabilities, info, deadline)
        return opened

    async def end(self, session: Session) -> None:
        """End a client session: the upstream sessions it opened first (DELETE to each, failures
        logged), then its record, after which any use of it answers 404. The one way a session
        ends early, whether its client or an admin ends it."""
        opened = [(n, s) for n, s in session.upstreams.items() if n in self.clients]
        await asyncio.gather(*(self.clients[n].delete_session(s) for n, s in opened))
        await run_blocking(self.store.delete, session.id)
