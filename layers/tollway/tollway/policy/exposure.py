"""What exists for a caller: the one policy step that lists and every routed method share.

    definition gate (valid MCP, pins, poisoning scan) -> authorization -> publication

A list publishes what passes; a call resolves the name it carries to the upstream's definition
and publishes it the same way, or answers exactly as for a name no upstream has. So a withheld,
drifted, poisoned, invalid or denied item is absent from every list and unknown to every call,
whichever method names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from tollway import shapes
from tollway.config import GatewayConfig
from tollway.context import Principal, RequestContext
from tollway.errors import UpstreamError
from tollway.masking.stage import MaskingStage
from tollway.methods import Routed
from tollway.policy.authorization import Authorizer
from tollway.policy.definitions import DefinitionGate
from tollway.routing import publish
from tollway.routing.catalog import CAPABILITY, Listed, log_skip
from tollway.routing.router import Router
from tollway.telemetry.metrics import tenant_count

POLICY_KIND = {"tools": "tools", "prompts": "prompts", "resources": "resources", "resourceTemplates": "resources"}
"""List key -> what authorization calls the item."""


class Target(NamedTuple):
    """What a routed request reaches: the upstream, its params in the upstream's names, and the
    published definition of the item it names (None for an ungated method)."""

    upstream: str
    params: dict[str, Any]
    public_name: str
    definition: dict[str, Any] | None


class Exposure:
    def __init__(self, config: GatewayConfig, router: Router, gate: DefinitionGate, masking: MaskingStage) -> None:
        self.router = router
        self.gate = gate
        self.masking = masking
        self.config = config
        self.authorizer = Authorizer(config)

    async def listing(self, ctx: RequestContext, method: str, cursor: Any) -> dict[str, Any]:
        """One page of a list method: what the caller may see of every upstream's items."""
        listed, next_cursor = await self.router.catalog.page(ctx, method, cursor)
        key = shapes.LIST_KEYS[method]
        judged = await self._judge(ctx.principal, listed, [entry.public for entry in listed])
        result: dict[str, Any] = {key: [item for item in judged if isinstance(item, dict)]}
        if next_cursor is not None:
            result["nextCursor"] = next_cursor
        return result

    async def visible(self, ctx: RequestContext, list_key: str) -> list[dict[str, Any]]:
        """Everything of `list_key` the caller may see now, as a list would show it, from the
        instance's catalog (`Catalog.whole`). Denials are not logged here: this is watched, not asked."""
        listed: list[Listed] = []
        for name, info in (await self.router.reachable(ctx)).items():
            if CAPABILITY[list_key] in info.capabilities:
                try:
                    listed.extend(await self.router.catalog.whole(ctx, name, list_key))
                except UpstreamError as error:
                    log_skip(name, error)
        judged = await self._judge(ctx.principal, listed, [entry.public for entry in listed], log=False)
        return [item for item in judged if isinstance(item, dict)]

    async def resolve(self, ctx: RequestContext, route: Routed, params: dict[str, Any]) -> Target:
        """The target of a routed request, or the route's "unknown" error. The decision and its
        rule go on the request's audit facts."""
        facts = ctx.audit
        public, list_key = route.name(params), route.list_key(params)
        found = self.router.namespace.resolve(list_key, public)
        if found is None:
            facts.decision, facts.rule = "invalid", "unknown name"  # the caller's own text is not recorded
            raise route.unknown(public)
        upstream, own = found[0].name, found[1]
        facts.public_name, facts.upstream, facts.upstream_name = public, upstream, own
        upstream_params = route.renamed(params, own)
        if not route.gated:
            return Target(upstream, upstream_params, public, None)
        entry = await self.router.catalog.find(ctx, upstream, list_key, own)
        judged = await self._judge(ctx.principal, [entry], [public]) if entry is not None else [None]
        verdict = judged[0]
        if not isinstance(verdict, dict):
            if verdict is None:
                facts.decision, facts.rule = "invalid", "not served by the upstream"
            else:
                facts.decision, facts.rule = verdict
                if facts.decision == "denied":
                    tenant_count("Denied", self.config.metric_tenant(ctx.principal.tenant))
            raise route.unknown(public)  # indistinguishable from a name no upstream has
        return Target(upstream, upstream_params, public, verdict)

    async def _judge(
        self, principal: Principal, listed: Sequence[Listed], names: Sequence[str], log: bool = True
    ) -> list[dict[str, Any] | tuple[str, str]]:
        """Each item as the caller may see it, or (decision, rule) when it does not exist for
        them: ("withheld", gate reason) or ("denied", authorization reason). `names`: the
        public name authorization judges (a resource read names a URI its template covers)."""
        judged: list[dict[str, Any] | tuple[str, str]] = [("withheld", "")] * len(listed)
        groups: dict[tuple[str, str], list[int]] = {}
        for index, entry in enumerate(listed):
            groups.setdefault((entry.upstream, entry.list_key), []).append(index)
        for (upstream, list_key), indexes in groups.items():
            verdicts = await self.gate.judge(upstream, list_key, [listed[i].item for i in indexes])
            for index, (definition, withheld) in zip(indexes, verdicts, strict=True):
                if definition is None:
                    judged[index] = ("withheld", withheld or "")
                    continue
                judge = self.authorizer.check if log else self.authorizer.denial
                denial = judge(principal, POLICY_KIND[list_key], upstream, names[index])
                if denial is not None:
                    judged[index] = ("denied", denial)
                    continue
                public = publish.definition(definition, list_key, listed[index].public)
                judged[index] = self.masking.publish_tool(public) if list_key == "tools" else public
        return judged
