"""Tenant policies: which tools, resources and prompts a caller may see and use.

The `Authorizer` is checked on its own against configs written as gateway.yaml would say them.
What a caller meets through the gateway (a denied tool, a tenant narrowed to a virtual server)
is in tests/functional/test_exposure.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from tollway.config import parse_config
from tollway.context import Principal
from tollway.policy.authorization import Authorizer

UPSTREAMS = [{"name": "finance", "url": "http://127.0.0.1:9/mcp"}, {"name": "support", "url": "http://127.0.0.1:9/mcp"}]


def _authorizer(tenants: dict[str, Any], virtual_servers: dict[str, Any] | None = None) -> Authorizer:
    config = parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": UPSTREAMS,
            "tenants": tenants,
            "virtual_servers": virtual_servers or {},
        }
    )
    return Authorizer(config)


def _who(tenant: str = "acme", scopes: str = "", roles: str = "") -> Principal:
    return Principal(subject="alice", tenant=tenant, scopes=frozenset(scopes.split()), roles=frozenset(roles.split()))


def _tools(authorizer: Authorizer, principal: Principal, names: list[str]) -> list[str]:
    return [n for n in names if authorizer.allows(principal, "tools", n.split("__")[0], n)]


FINANCE_TOOLS = [
    "finance__fetch_revenue_data",
    "finance__run_forecast",
    "finance__validate_transaction",
    "finance__download_statement",
]
SUPPORT_TOOLS = [
    "support__get_customer_profile",
    "support__list_orders",
    "support__check_refund_status",
    "support__create_ticket",
]
ALL_TOOLS = FINANCE_TOOLS + SUPPORT_TOOLS


# --- who has a policy ------------------------------------------------------------------------------
def test_without_any_tenant_policy_every_caller_may_use_everything() -> None:
    authorizer = _authorizer({})

    for tenant in ("acme", "globex", "default"):
        assert _tools(authorizer, _who(tenant), ALL_TOOLS) == ALL_TOOLS
        assert authorizer.allows(_who(tenant), "resources", "finance", "finance+finance://reports/latest")
        assert authorizer.allows(_who(tenant), "prompts", "support", "support__draft_reply")


def test_a_tenant_without_a_policy_sees_nothing_once_any_tenant_has_one() -> None:
    authorizer = _authorizer({"acme": {}})

    assert _tools(authorizer, _who("acme"), ALL_TOOLS) == ALL_TOOLS
    assert _tools(authorizer, _who("globex"), ALL_TOOLS) == []
    assert not authorizer.allows(_who("globex"), "resources", "finance", "finance+finance://reports/latest")
    assert not authorizer.allows(_who("globex"), "prompts", "support", "support__draft_reply")


def test_the_star_tenant_applies_to_tenants_not_listed_and_only_to_them() -> None:
    authorizer = _authorizer({"*": {"tools": ["support__*"]}, "acme": {"tools": ["finance__*"]}})

    assert _tools(authorizer, _who("globex"), ALL_TOOLS) == SUPPORT_TOOLS
    assert _tools(authorizer, _who("acme"), ALL_TOOLS) == FINANCE_TOOLS


def test_a_tenant_named_like_a_pattern_is_only_that_literal_tenant() -> None:
    authorizer = _authorizer({"acme*": {"tools": ["*"]}})

    assert _tools(authorizer, _who("acme-corp"), ALL_TOOLS) == []
    assert _tools(authorizer, _who("acme*"), ALL_TOOLS) == ALL_TOOLS


# --- patterns -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (["finance__*"], FINANCE_TOOLS),
        (["*__run_forecast", "support__list_orders"], ["finance__run_forecast", "support__list_orders"]),
        (["finance__???_forecast"], ["finance__run_forecast"]),
        (
            ["support__[cg]*"],
            ["support__get_customer_profile", "support__check_refund_status", "support__create_ticket"],
        ),
        (["FINANCE__*"], []),
        (["finance__run_forecast "], []),
        ([], []),
    ],
    ids=["prefix", "suffix and exact", "question marks", "character class", "case sensitive", "no trimming", "none"],
)
def test_tool_patterns_are_case_sensitive_globs_on_public_names(patterns: list[str], expected: list[str]) -> None:
    authorizer = _authorizer({"acme": {"tools": patterns}})

    assert _tools(authorizer, _who(), ALL_TOOLS) == expected


def test_resource_patterns_match_public_uris_and_kinds_are_separate() -> None:
    authorizer = _authorizer({"acme": {"tools": [], "resources": ["support+support://policies/*"], "prompts": []}})
    acme = _who()

    assert authorizer.allows(acme, "resources", "support", "support+support://policies/refunds")
    assert not authorizer.allows(acme, "resources", "support", "support+support://customers/C-1001")
    assert not authorizer.allows(acme, "resources", "finance", "finance+finance://reports/latest")
    assert not authorizer.allows(acme, "tools", "support", "support+support://policies/refunds")
    assert not authorizer.allows(acme, "prompts", "support", "support__draft_reply")


def test_an_upstream_allow_list_wins_over_a_pattern_that_matches() -> None:
    authorizer = _authorizer({"acme": {"upstreams": ["support"], "tools": ["*"]}})

    assert _tools(authorizer, _who(), ALL_TOOLS) == SUPPORT_TOOLS
    assert not authorizer.allows(_who(), "resources", "finance", "finance+finance://reports/latest")


def test_an_empty_upstream_allow_list_allows_no_upstream() -> None:
    authorizer = _authorizer({"acme": {"upstreams": []}})

    assert _tools(authorizer, _who(), ALL_TOOLS) == []


# --- virtual servers -------------------------------------------------------------------------------
def test_a_virtual_server_narrows_what_the_tenant_sees() -> None:
    authorizer = _authorizer(
        {"acme": {"virtual_server": "revenue"}},
        {"revenue": {"tools": ["finance__fetch_revenue_data", "support__get_customer_profile"], "prompts": []}},
    )

    assert _tools(authorizer, _who(), ALL_TOOLS) == ["finance__fetch_revenue_data", "support__get_customer_profile"]
    assert not authorizer.allows(_who(), "prompts", "finance", "finance__explain_variance")
    assert authorizer.allows(_who(), "resources", "finance", "finance+finance://reports/latest")


def test_a_virtual_server_never_widens_the_tenant_policy() -> None:
    authorizer = _authorizer(
        {"acme": {"tools": ["finance__*"], "upstreams": ["finance"], "virtual_server": "everything"}},
        {"everything": {"tools": ["*"]}},
    )

    assert _tools(authorizer, _who(), ALL_TOOLS) == FINANCE_TOOLS


def test_the_tenant_policy_and_its_virtual_server_must_both_allow() -> None:
    authorizer = _authorizer(
        {"acme": {"tools": ["finance__*"], "virtual_server": "mixed"}},
        {"mixed": {"tools": ["finance__run_forecast", "support__list_orders"]}},
    )

    assert _tools(authorizer, _who(), ALL_TOOLS) == ["finance__run_forecast"]


# --- rules ----------------------------------------------------------------------------------------
def test_a_rule_needs_every_scope_it_names() -> None:
    authorizer = _authorizer(
        {"acme": {"rules": [{"match": ["finance__*"], "scopes": ["finance:read", "finance:export"]}]}}
    )

    assert _tools(authorizer, _who(scopes="finance:read"), ALL_TOOLS) == SUPPORT_TOOLS
    assert _tools(authorizer, _who(scopes="finance:export"), ALL_TOOLS) == SUPPORT_TOOLS
    assert _tools(authorizer, _who(scopes="finance:read finance:export"), ALL_TOOLS) == ALL_TOOLS


def test_a_rule_needs_any_one_of_the_roles_it_names() -> None:
    authorizer = _authorizer({"acme": {"rules": [{"match": ["support__create_*"], "roles": ["agent", "admin"]}]}})
    everyone_else = [t for t in ALL_TOOLS if t != "support__create_ticket"]

    assert _tools(authorizer, _who(), ALL_TOOLS) == everyone_else
    assert _tools(authorizer, _who(roles="viewer"), ALL_TOOLS) == everyone_else
    assert _tools(authorizer, _who(roles="admin"), ALL_TOOLS) == ALL_TOOLS
    assert _tools(authorizer, _who(roles="viewer agent"), ALL_TOOLS) == ALL_TOOLS


def test_a_rule_with_scopes_and_roles_needs_both() -> None:
    rule = {"match": ["finance__download_statement"], "scopes": ["finance:export"], "roles": ["auditor"]}
    authorizer = _authorizer({"acme": {"rules": [rule]}})

    def may_download(principal: Principal) -> bool:
        return authorizer.allows(principal, "tools", "finance", "finance__download_statement")

    assert not may_download(_who(scopes="finance:export"))
    assert not may_download(_who(roles="auditor"))
    assert may_download(_who(scopes="finance:export", roles="auditor"))


def test_every_rule_that_matches_applies() -> None:
    rules = [
        {"match": ["finance__*"], "scopes": ["finance:read"]},
        {"match": ["*__download_statement"], "roles": ["auditor"]},
    ]
    authorizer = _authorizer({"acme": {"rules": rules}})

    def may_download(principal: Principal) -> bool:
        return authorizer.allows(principal, "tools", "finance", "finance__download_statement")

    assert authorizer.allows(_who(scopes="finance:read"), "tools", "finance", "finance__run_forecast")
    assert not may_download(_who(scopes="finance:read"))
    assert not may_download(_who(roles="auditor"))
    assert may_download(_who(scopes="finance:read", roles="auditor"))


def test_a_rule_does_not_grant_what_the_patterns_leave_out() -> None:
    authorizer = _authorizer(
        {"acme": {"tools": ["support__*"], "rules": [{"match": ["finance__*"], "scopes": ["finance:read"]}]}}
    )

    assert _tools(authorizer, _who(scopes="finance:read"), ALL_TOOLS) == SUPPORT_TOOLS


def test_every_denial_has_a_reason_for_the_log() -> None:
    authorizer = _authorizer(
        {
            "acme": {
                "upstreams": ["finance"],
                "tools": ["finance__*"],
                "rules": [{"match": ["finance__run_forecast"], "scopes": ["forecast"]}],
            }
        }
    )

    assert authorizer.denial(_who("globex"), "tools", "finance", "finance__fetch_revenue_data") is not None
    assert authorizer.denial(_who(), "tools", "support", "support__list_orders") is not None
    assert authorizer.denial(_who(), "tools", "finance", "finance__run_forecast") is not None
    assert authorizer.denial(_who(scopes="forecast"), "tools", "finance", "finance__run_forecast") is None
