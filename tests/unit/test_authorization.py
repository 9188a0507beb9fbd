"""Tenant policies: which tools, resources and prompts a caller may see and use.

The `Authorizer` is checked on its own against configs written as gateway.yaml would say
them, then once end to end: a tenant narrowed to a virtual server, through `create_app`
in front of the demo upstreams, in both protocol eras.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.auth import dev
from tollway.config import GatewayConfig, parse_config
from tollway.context import Principal
from tollway.http import create_app
from tollway.policy.authorization import Authorizer
from tollway.store.sessions import MemorySessionStore

from tests.fixtures.recording_upstream import Caller
from tests.unit.wire import assert_http_error

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


# --- end to end: a tenant narrowed to a virtual server, in front of the demo upstreams --------------
VISIBLE = ["finance__fetch_revenue_data", "support__get_customer_profile"]
_REVENUE_ARGS = {"region": "EMEA", "quarter": "2025-Q1"}


@pytest.fixture(scope="module")
def narrowed(demo_upstreams: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    """A gateway where tenant acme sees the `revenue` virtual server; globex sees everything."""
    key = dev.signing_key(Path(tmp_path_factory.mktemp("dev")) / "key.pem")
    config: GatewayConfig = parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "auth": {"issuer": dev.DEV_ISSUER},
            "upstreams": [{"name": name, "url": url} for name, url in demo_upstreams.items()],
            "tenants": {"acme": {"virtual_server": "revenue"}, "globex": {}},
            "virtual_servers": {"revenue": {"tools": VISIBLE}},
        }
    )
    app = create_app(config, store=MemorySessionStore(), streaming=False, dev_keys=dev.jwk_set(key))
    with TestClient(app, raise_server_exceptions=False) as client:

        def caller(tenant: str) -> Caller:
            token = dev.mint(key, subject=f"{tenant}-user", tenant=tenant, audience=config.audience)
            return Caller(client, token)

        yield caller("acme"), caller("globex")


def _names(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return sorted(tool["name"] for tool in response.json()["result"]["tools"])


def test_a_tenant_on_a_virtual_server_lists_exactly_its_tools_in_both_eras(narrowed: tuple[Any, ...]) -> None:
    acme, globex = narrowed
    session = acme.open_session()

    modern = _names(acme.modern("tools/list"))
    legacy = _names(acme.legacy("tools/list", session=session))

    assert modern == legacy == VISIBLE
    assert len(_names(globex.modern("tools/list"))) > len(VISIBLE)


def test_a_tenant_on_a_virtual_server_can_call_its_tools(narrowed: tuple[Any, ...]) -> None:
    acme, _ = narrowed

    response = acme.modern("tools/call", {"name": "finance__fetch_revenue_data", "arguments": _REVENUE_ARGS})

    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result.get("isError") is not True
    assert result["structuredContent"]["region"] == "EMEA"


@pytest.mark.parametrize("era", ["2026-07-28", "2025-11-25"])
def test_a_tool_outside_the_virtual_server_is_answered_as_unknown(narrowed: tuple[Any, ...], era: str) -> None:
    acme, globex = narrowed
    session = acme.open_session() if era == "2025-11-25" else None

    def call(name: str) -> Any:
        params = {"name": name, "arguments": {"region": "EMEA"}}
        return acme.legacy("tools/call", params, session=session) if session else acme.modern("tools/call", params)

    hidden, missing = call("finance__run_forecast"), call("nowhere__run_forecast")

    status = 400 if era == "2026-07-28" else 200
    assert_http_error(hidden, status, c.INVALID_PARAMS, message="Unknown tool: finance__run_forecast", request_id=1)
    assert hidden.status_code == missing.status_code
    assert json.loads(hidden.text.replace("finance__run_forecast", "nowhere__run_forecast")) == missing.json()
    assert "finance__run_forecast" in _names(globex.modern("tools/list"))
