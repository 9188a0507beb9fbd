"""Namespacing: every public name or URI maps back to exactly one upstream and its own name."""

from __future__ import annotations

import pytest
from tollway.config import UpstreamConfig
from tollway.routing.namespace import Namespace


def _upstream(name: str, prefix: str | None = None) -> UpstreamConfig:
    return UpstreamConfig(name=name, url=f"http://{name}.internal.example/mcp", prefix=prefix)


SUPPORT = _upstream("support")
FINANCE = _upstream("finance", prefix="fin")
FINANCE_EU = _upstream("finance-eu", prefix="fin-eu")
BARE = _upstream("crm", prefix="")


@pytest.fixture
def namespace() -> Namespace:
    return Namespace([SUPPORT, FINANCE, FINANCE_EU])


@pytest.mark.parametrize(
    ("upstream", "name", "public"),
    [
        (SUPPORT, "get_customer_profile", "support__get_customer_profile"),
        (FINANCE, "run_forecast", "fin__run_forecast"),
        (FINANCE_EU, "run_forecast", "fin-eu__run_forecast"),
        (FINANCE, "v2.forecast-monthly", "fin__v2.forecast-monthly"),
    ],
)
def test_a_tool_name_is_published_under_its_prefix_and_resolves_back(
    namespace: Namespace, upstream: UpstreamConfig, name: str, public: str
) -> None:
    assert namespace.public_name(upstream, name) == public
    assert namespace.resolve_name(public) == (upstream, name)


def test_a_name_that_itself_contains_the_separator_still_resolves_to_its_upstream(namespace: Namespace) -> None:
    public = namespace.public_name(SUPPORT, "tickets__create")

    assert public == "support__tickets__create"
    assert namespace.resolve_name(public) == (SUPPORT, "tickets__create")


def test_the_longest_matching_prefix_wins() -> None:
    namespace = Namespace([FINANCE, FINANCE_EU, BARE])

    assert namespace.resolve_name("fin-eu__forecast") == (FINANCE_EU, "forecast")
    assert namespace.resolve_name("fin__forecast") == (FINANCE, "forecast")
    assert namespace.resolve_uri("fin-eu+finance://reports/latest") == (FINANCE_EU, "finance://reports/latest")
    assert namespace.resolve_uri("fin+finance://reports/latest") == (FINANCE, "finance://reports/latest")


@pytest.mark.parametrize("public", ["nosuch__tool", "get_customer_profile", "support__", "", "support_x"])
def test_a_name_no_upstream_serves_resolves_to_nothing(namespace: Namespace, public: str) -> None:
    assert namespace.resolve_name(public) is None


@pytest.mark.parametrize("name", ["has space", "ünïcode", "semi;colon", "a" * 120])
def test_a_name_that_would_not_be_a_valid_mcp_tool_name_is_withheld(namespace: Namespace, name: str) -> None:
    assert namespace.public_name(SUPPORT, name) is None


def test_an_unprefixed_upstream_is_mounted_as_is() -> None:
    namespace = Namespace([SUPPORT, BARE])

    assert namespace.public_name(BARE, "lookup_account") == "lookup_account"
    assert namespace.resolve_name("lookup_account") == (BARE, "lookup_account")
    assert namespace.resolve_name("support__get_customer_profile") == (SUPPORT, "get_customer_profile")


def test_an_unprefixed_upstream_cannot_publish_a_name_that_reads_as_another_upstreams() -> None:
    namespace = Namespace([SUPPORT, FINANCE, BARE])

    assert namespace.public_name(BARE, "support__get_customer_profile") is None
    assert namespace.public_name(BARE, "fin__run_forecast") is None
    assert namespace.public_name(BARE, "finance__run_forecast") == "finance__run_forecast"


def test_names_that_match_no_prefix_fall_through_to_the_unprefixed_upstream() -> None:
    namespace = Namespace([FINANCE, BARE])

    assert namespace.resolve_name("finance__run_forecast") == (BARE, "finance__run_forecast")
    assert namespace.resolve_name("fin__") == (BARE, "fin__")


@pytest.mark.parametrize(
    ("upstream", "uri", "public"),
    [
        (SUPPORT, "support://policies/refunds", "support+support://policies/refunds"),
        (FINANCE, "finance://reports/latest", "fin+finance://reports/latest"),
        (FINANCE, "https://example.com/a?b=c", "fin+https://example.com/a?b=c"),
        (SUPPORT, "support://customers/{customer_id}", "support+support://customers/{customer_id}"),
    ],
)
def test_a_resource_uri_gets_its_prefix_as_a_scheme_prefix_and_resolves_back(
    namespace: Namespace, upstream: UpstreamConfig, uri: str, public: str
) -> None:
    assert namespace.public_uri(upstream, uri) == public
    assert namespace.resolve_uri(public) == (upstream, uri)


def test_an_unprefixed_upstreams_uris_are_mounted_as_is_unless_they_read_as_another_upstreams() -> None:
    namespace = Namespace([SUPPORT, BARE])

    assert namespace.public_uri(BARE, "crm://accounts/7") == "crm://accounts/7"
    assert namespace.resolve_uri("crm://accounts/7") == (BARE, "crm://accounts/7")
    assert namespace.public_uri(BARE, "support+crm://accounts/7") is None


@pytest.mark.parametrize("public", ["finance://reports/latest", "nosuch+x://y", "support+", ""])
def test_a_uri_no_upstream_serves_resolves_to_nothing(namespace: Namespace, public: str) -> None:
    assert namespace.resolve_uri(public) is None
