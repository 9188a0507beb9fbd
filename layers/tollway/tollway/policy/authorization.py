"""Which tools, resources and prompts exist for a caller.

One decision serves lists and calls alike: a denied item is left out of every list, and a
call to it is answered exactly as a call to a name no upstream has, so a caller learns
nothing about what it may not use. Every denial is logged with its reason.
"""

from __future__ import annotations

import fnmatch
from typing import Literal

from tollway.config import GatewayConfig, TenantPolicy
from tollway.context import Principal
from tollway.telemetry import logger

Kind = Literal["tools", "resources", "prompts"]

_ALLOW_ALL = TenantPolicy()


class Authorizer:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config

    def allows(self, principal: Principal, kind: Kind, upstream: str, public_name: str) -> bool:
        return self.check(principal, kind, upstream, public_name) is None

    def check(self, principal: Principal, kind: Kind, upstream: str, public_name: str) -> str | None:
        """`denial`, logged (tenant and item, never the subject) when there is one."""
        reason = self.denial(principal, kind, upstream, public_name)
        if reason is not None:
            logger.info(
                "access denied",
                extra={"tenant": principal.tenant, "kind": kind, "item": public_name, "reason": reason},
            )
        return reason

    def reaches(self, principal: Principal, upstream: str) -> bool:
        """Whether anything of `upstream` may exist for `principal` (its changes are its business)."""
        policy = self._policy(principal.tenant)
        return policy is not None and (policy.upstreams is None or upstream in policy.upstreams)

    def denial(self, principal: Principal, kind: Kind, upstream: str, public_name: str) -> str | None:
        """Why `principal` may not use the item, or None when it may."""
        policy = self._policy(principal.tenant)
        if policy is None:
            return "tenant has no policy"
        if policy.upstreams is not None and upstream not in policy.upstreams:
            return f"upstream {upstream!r} not allowed for tenant"
        if not _matches(public_name, getattr(policy, kind)):
            return f"not in the tenant's {kind}"
        if policy.virtual_server is not None:
            virtual = self.config.virtual_servers[policy.virtual_server]
            if not _matches(public_name, getattr(virtual, kind)):
                return f"not in virtual server {policy.virtual_server!r}"
        for rule in policy.rules:
            if not _matches(public_name, rule.match):
                continue
            missing = [s for s in rule.scopes if s not in principal.scopes]
            if missing:
                return f"missing scopes {missing}"
            if rule.roles and not principal.roles.intersection(rule.roles):
                return f"needs one of roles {rule.roles}"
        return None

    def _policy(self, tenant: str) -> TenantPolicy | None:
        if not self.config.tenants:
            return _ALLOW_ALL
        return tenant_policy(self.config, tenant)


def tenant_policy(config: GatewayConfig, tenant: str) -> TenantPolicy | None:
    """The tenant's own entry under `tenants`, else the `*` one; None when neither exists."""
    return config.tenants.get(tenant) or config.tenants.get("*")


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
