"""The methods the gateway answers itself: it is the MCP server its callers talk to.

`initialize` (2025 era) and `server/discover` (2026-07-28) describe the gateway: its identity
and the union of what its reachable upstreams offer. The four list methods are the policy
step's lists. `ping` and `logging/setLevel` (2025 era only) need no upstream answer, though a
level is passed on to every upstream that logs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from tollway import __version__, shapes
from tollway import spec as c
from tollway.config import GatewayConfig
from tollway.context import RequestContext
from tollway.methods import check_level
from tollway.policy.exposure import Exposure
from tollway.protocol.listen import Listener, offers
from tollway.routing.router import Router

Handler = Callable[[RequestContext, dict[str, Any]], Awaitable[dict[str, Any]]]
StreamHandler = Callable[[RequestContext, dict[str, Any], Any], AsyncIterator[dict[str, Any]]]
"""A method answered with a stream of messages, its response last (given the request's id)."""


class GatewayServer:
    def __init__(
        self, config: GatewayConfig, exposure: Exposure, router: Router, listener: Listener | None = None
    ) -> None:
        """`listener`: where responses can stream, the 2026-07-28 `subscriptions/listen` streams."""
        self.config = config
        self.exposure = exposure
        self.router = router
        self.listener = listener
        self.listens = listener is not None
        self.info = {"name": config.name, "version": __version__}
        self.methods: dict[str, Handler] = {
            "ping": self._ping,
            "server/discover": self._discover,
            "logging/setLevel": self._set_level,
            **{method: self._lister(method) for method in shapes.LIST_KEYS},
        }
        self.streams: dict[str, StreamHandler] = {"subscriptions/listen": listener.listen} if listener else {}

    async def capabilities(self, ctx: RequestContext) -> dict[str, Any]:
        """The union of what reachable upstreams offer (tools always: the gateway's core).

        Change notifications are advertised only where they are delivered: on a streaming
        deployment, to 2026-07-28 callers (`subscriptions/listen`) and 2025-era sessions (their
        standalone `GET /mcp` stream). List changes the gateway announces itself (it watches each
        caller's view); resource updates come from a 2026-07-28 upstream that delivers them (the
        gateway listens to it for the caller; for a 2025-era session, the session's GET stream
        reads what the upstream pushes on the caller's upstream session, where a forwarded
        `resources/subscribe` made it send them)."""
        infos = await self.router.reachable(ctx)
        offered = set().union(*(i.capabilities.keys() for i in infos.values())) if infos else set()
        listens = self.listens  # 2026-07-28: subscriptions/listen; 2025 era: the session's GET stream
        subscribe = listens and any(offers(i, "resources", "subscribe") for i in infos.values())
        caps: dict[str, Any] = {"tools": {"listChanged": listens}}
        if "resources" in offered:
            caps["resources"] = {"subscribe": subscribe, "listChanged": listens}
        if "prompts" in offered:
            caps["prompts"] = {"listChanged": listens}
        if "completions" in offered:
            caps["completions"] = {}
        if "logging" in offered:
            caps["logging"] = {}
        return caps

    async def initialize(self, ctx: RequestContext, version: str) -> dict[str, Any]:
        return {
            "protocolVersion": version,
            "capabilities": await self.capabilities(ctx),
            "serverInfo": self.info,
            "instructions": f"Tools of {len(self.config.upstreams)} MCP servers, namespaced by server prefix.",
        }

    def decorate(self, ctx: RequestContext, result: dict[str, Any]) -> dict[str, Any]:
        """2026-07-28 results carry resultType and the answering server's identity (the gateway)."""
        if not ctx.modern:
            return result
        return {
            **result,
            "resultType": result.get("resultType", "complete"),
            "_meta": {**(result.get("_meta") or {}), c.META_SERVER_INFO: self.info},
        }

    async def _ping(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def _discover(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "supportedVersions": list(c.MODERN_VERSIONS),
            "capabilities": await self.capabilities(ctx),
            "ttlMs": self.config.http.list_ttl_ms,
            "cacheScope": "private",
        }

    def _lister(self, method: str) -> Handler:
        async def answer(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
            result = await self.exposure.listing(ctx, method, params.get("cursor"))
            if ctx.modern:
                result.update(ttlMs=self.config.http.list_ttl_ms, cacheScope="private")
            return result

        return answer

    async def _set_level(self, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        level = check_level(params)
        await self.router.broadcast(ctx, "logging/setLevel", {"level": level}, capability="logging")
        return {}
