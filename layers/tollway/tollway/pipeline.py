"""What happens to one JSON-RPC request, in order. Read this file top to bottom.

Methods the gateway answers itself (discovery, lists, ping) are handled here; methods
that name a tool, prompt or resource go through the pipeline stages to one upstream:

    resolve name -> authorize (+ definition gate) -> quota -> mask request
    -> upstream call -> mask + guard + shape response -> usage + metrics

Lists are filtered by the same authorization decision as calls.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio.to_thread

from tollway import __version__
from tollway.config import GatewayConfig
from tollway.context import RequestContext
from tollway.errors import GatewayError, InvalidParams, MethodNotFound, ResourceNotFound
from tollway.masking.stage import MaskingStage
from tollway.policy.authorization import Authorizer, Kind
from tollway.policy.quota import Admission, QuotaEnforcer, QuotaExceeded
from tollway.protocol import constants as c
from tollway.routing.router import LIST_METHODS, Router
from tollway.store.usage import UsageRecorder
from tollway.telemetry import count, logger, tool_call_metrics

ROUTED_METHODS = (
    "tools/call",
    "prompts/get",
    "resources/read",
    "completion/complete",
    "resources/subscribe",
    "resources/unsubscribe",
)
LEGACY_ONLY = frozenset({"ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"})
"""Removed at 2026-07-28: a stateless client gets 404 / -32601 for them."""
MODERN_ONLY = frozenset({"server/discover"})


class Pipeline:
    def __init__(self, config: GatewayConfig, router: Router, quota: QuotaEnforcer, usage: UsageRecorder) -> None:
        self.config = config
        self.router = router
        self.quota = quota
        self.usage = usage
        self.server_info = {"name": config.name, "version": __version__}
        self.authorizer = Authorizer(config)
        self.masking = MaskingStage(config)
        self._own: dict[str, Callable[[RequestContext, str, dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "ping": self._ping,
            "server/discover": self._discover,
            "logging/setLevel": self._set_level,
            **dict.fromkeys(LIST_METHODS, self._list),
        }

    async def handle(self, ctx: RequestContext, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Yield the notifications and the final JSON-RPC response for one request."""
        method, params, request_id = request["method"], request.get("params") or {}, request["id"]
        if method in (MODERN_ONLY if not ctx.modern else LEGACY_ONLY):
            raise MethodNotFound(data={"method": method})
        if method in self._own:
            result = await self._own[method](ctx, method, params)
            yield {"jsonrpc": "2.0", "id": request_id, "result": self._decorate(ctx, method, result)}
            return
        if method not in ROUTED_METHODS:
            raise MethodNotFound(data={"method": method})
        key = {"tools/call": "name", "prompts/get": "name"}.get(
            method, "uri" if method.startswith("resources/") else None
        )
        if key is not None and not isinstance(params.get(key), str):
            raise InvalidParams(f"params.{key} must be a string")
        routed = self.router.resolve(method, params)
        if routed is None:
            raise _unknown(method, params)
        upstream, upstream_params = routed
        kind, public_name = _policy_subject(method, params)
        if not self.authorizer.allows(ctx.principal, kind, upstream, public_name):
            raise _unknown(method, params)  # indistinguishable from a name no upstream has
        if method in ("tools/call", "prompts/get") and not await self.router.exists(
            ctx, upstream, method, upstream_params["name"]
        ):
            raise _unknown(method, params)
        # Store I/O off the event loop: the local server serves many requests at once.
        admission = await anyio.to_thread.run_sync(self._admit, ctx, public_name) if method == "tools/call" else None
        started, failed = time.perf_counter(), True
        try:  # from here on, admitted units are recorded as usage whatever fails
            if method == "tools/call":
                masked = self.masking.arguments(ctx.principal.tenant, public_name, upstream_params.get("arguments"))
                upstream_params = {**upstream_params, "arguments": masked} if masked is not None else upstream_params
            async for item in self.router.call(ctx, upstream, method, upstream_params, request_id):
                if "id" not in item or item.get("id") == request_id:  # not relayed server requests
                    item = self.masking.message(ctx.principal.tenant, method, public_name, item)
                if "method" not in item and item.get("id") == request_id:
                    result = item.get("result")
                    failed = not isinstance(result, dict) or bool(result.get("isError"))
                    if isinstance(result, dict):
                        if method == "tools/call":
                            result = self._guard(result, public_name)
                        item = {**item, "result": self._decorate(ctx, method, result)}
                yield item
        finally:
            if admission is not None:
                await anyio.to_thread.run_sync(self._record, ctx, public_name, admission.units, failed, started)

    def _guard(self, result: dict[str, Any], tool: str) -> dict[str, Any]:
        """Instruction-like text in a tool result: flag, wrap or withhold it (`definitions.result_injection`)."""
        mode = self.config.definitions.result_injection
        if mode == "off":
            return result
        from tollway.masking.scanner import guard_result

        return guard_result(result, mode, item_name=tool)

    # --- quota and usage ---------------------------------------------------------------------------
    def _admit(self, ctx: RequestContext, tool: str) -> Admission:
        try:
            return self.quota.admit(ctx.principal, tool)
        except QuotaExceeded:
            self._safely(lambda: self.usage.record(ctx.principal.tenant, tool, rejected=True))
            raise

    def _record(self, ctx: RequestContext, tool: str, units: int, failed: bool, started: float) -> None:
        """Usage for finance (durable) and metrics. Calls that fail upstream still consume their
        units: the upstream may have done the work, and a retry storm must not be free."""
        latency_ms = (time.perf_counter() - started) * 1000
        tenant = ctx.principal.tenant
        self._safely(lambda: self.usage.record(tenant, tool, units=units, error=failed, latency_ms=latency_ms))
        known = tenant if tenant in self.config.tenants else "other"
        tool_call_metrics(known, tool, latency_ms, failed, units)

    @staticmethod
    def _safely(write: Callable[[], None]) -> None:
        # The call already happened: a usage write that fails is logged and counted, not answered.
        try:
            write()
        except GatewayError:
            logger.error("usage record lost")
            count("UsageWriteFailures", 1)

    # --- methods the gateway answers itself ------------------------------------------------------
    async def _ping(self, ctx: RequestContext, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def _discover(self, ctx: RequestContext, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "supportedVersions": list(c.MODERN_VERSIONS),
            "capabilities": await self.capabilities(),
            "ttlMs": self.config.http.list_ttl_ms,
            "cacheScope": "private",
        }

    async def _list(self, ctx: RequestContext, method: str, params: dict[str, Any]) -> dict[str, Any]:
        def visible(kind: str, upstream: str, public_name: str) -> bool:
            return self.authorizer.allows(ctx.principal, kind, upstream, public_name)  # type: ignore[arg-type]

        result = await self.router.list(ctx, method, params.get("cursor"), visible)
        if method == "tools/list":
            result["tools"] = [self.masking.publish_tool(t) for t in result["tools"]]
        if ctx.modern:
            result.update(ttlMs=self.config.http.list_ttl_ms, cacheScope="private")
        return result

    async def _set_level(self, ctx: RequestContext, method: str, params: dict[str, Any]) -> dict[str, Any]:
        level = params.get("level")
        if not isinstance(level, str):
            raise InvalidParams("level is required")
        await self.router.broadcast(ctx, "logging/setLevel", {"level": level}, capability="logging")
        return {}

    async def capabilities(self) -> dict[str, Any]:
        """The union of what reachable upstreams offer (tools always: the gateway's core).

        `resources.subscribe` is not advertised: a subscribe request is forwarded to the upstream
        that owns the URI (2025 era), but update notifications need a standalone stream the
        gateway does not open yet."""
        infos = await self.router.reachable()
        offered = set().union(*(i.capabilities.keys() for i in infos.values())) if infos else set()
        caps: dict[str, Any] = {"tools": {"listChanged": False}}
        if "resources" in offered:
            caps["resources"] = {"subscribe": False, "listChanged": False}
        if "prompts" in offered:
            caps["prompts"] = {"listChanged": False}
        if "completions" in offered:
            caps["completions"] = {}
        if "logging" in offered:
            caps["logging"] = {}
        return caps

    def _decorate(self, ctx: RequestContext, method: str, result: dict[str, Any]) -> dict[str, Any]:
        """2026-07-28 results carry resultType and the answering server's identity (the gateway)."""
        if not ctx.modern:
            return result
        result = dict(result)
        result.setdefault("resultType", "complete")
        result["_meta"] = {**(result.get("_meta") or {}), c.META_SERVER_INFO: self.server_info}
        return result


def _policy_subject(method: str, params: dict[str, Any]) -> tuple[Kind, str]:
    """What a routed request touches, as the policy names it: (kind, public name)."""
    if method == "tools/call":
        return "tools", params["name"]
    if method == "prompts/get":
        return "prompts", params["name"]
    if method == "completion/complete":
        ref = params.get("ref") or {}
        if ref.get("type") == "ref/prompt":
            return "prompts", str(ref.get("name", ""))
        return "resources", str(ref.get("uri", ""))
    return "resources", params["uri"]


def _unknown(method: str, params: dict[str, Any]) -> InvalidParams:
    """The error for a name no upstream serves (a denied name answers the same way)."""
    if method == "tools/call":
        return InvalidParams(f"Unknown tool: {params.get('name')}")
    if method == "prompts/get":
        return InvalidParams(f"Unknown prompt: {params.get('name')}")
    if method.startswith("resources/"):
        return ResourceNotFound(data={"uri": params.get("uri")})
    return InvalidParams("Unknown reference")
