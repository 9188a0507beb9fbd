"""DynamoDB keys: a tenant or subject holding `#` or `%` never shares an item with another principal.

Keys join their parts with `#`. Before parts were escaped, a tenant `a#S#b` with subject `c` and
a tenant `a` with subject `b#S#c` both counted calls in `LIMIT#a#S#b#S#c`: one could spend the
other's quota. Each test below builds such pairs, shows that the old joining made their keys
equal (`old_*`), and that today's keys differ, in the quota scopes, the legacy upstream
sessions kept per principal and the usage items. Ordinary values (no `#`, no `%`) keep exactly
the keys they had where items outlive a release (sessions, usage), so existing items are still found.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tollway.config import GatewayConfig, parse_config
from tollway.context import Principal, UpstreamSession
from tollway.errors import QuotaExceeded
from tollway.policy.quota import QuotaEnforcer
from tollway.store.ledger import Charge, DynamoLedger, MemoryLedger, Scope
from tollway.store.sessions import DynamoSessionStore
from tollway.store.table import key
from tollway.store.usage import UsageReader

TABLE = "tollway-store-keys"
REPO_ROOT = Path(__file__).resolve().parents[2]
MOMENT = datetime(2026, 5, 3, 10, 20, 30, tzinfo=UTC)
AT = MOMENT.timestamp()
ALICE = Principal(subject="alice", tenant="acme")


# --- the keys as they were joined before --------------------------------------------------------
def old_limit_keys(principal: Principal, pattern: str = "rec__*") -> dict[str, str]:
    tenant_key = f"LIMIT#{principal.tenant}"
    return {"tenant": tenant_key, "subject": f"{tenant_key}#S#{principal.subject}", "tool": f"{tenant_key}#T#{pattern}"}


def old_principal_pk(principal: Principal) -> str:
    return f"PRINCIPAL#{principal.tenant}#{principal.subject}"


def old_usage_gsi1sk(tenant: str, day: str, tool: str) -> str:
    return f"{tenant}#{day}#{tool}"


# --- setup ----------------------------------------------------------------------------------------
def _config(plan: dict[str, Any]) -> GatewayConfig:
    return parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": [{"name": "rec", "url": "http://127.0.0.1:9/mcp"}],
            "quotas": {"plans": {"p": plan}, "default_plan": "p"},
        }
    )


EVERY_SCOPE = {
    "tenant": {"per_minute": 100, "per_day": 1000},
    "subject": {"per_minute": 100, "per_day": 1000},
    "tools": {"rec__*": {"per_second": 10, "per_month": 10000}},
}


def _pks(principal: Principal) -> dict[str, set[str]]:
    """Scope -> the partition keys of the items a call by `principal` is charged to."""
    found: dict[str, set[str]] = {"tenant": set(), "subject": set(), "tool": set()}
    for scope in QuotaEnforcer(_config(EVERY_SCOPE), MemoryLedger()).scopes(principal, "rec__echo"):
        found[scope.limits[0].name.split(" ")[0]].add(scope.pk)
    return found


@pytest.fixture(scope="module")
def table_name() -> str:
    return TABLE


# --- quota windows ------------------------------------------------------------------------------
COLLIDING_SUBJECTS = [
    (Principal(subject="c", tenant="a#S#b"), Principal(subject="b#S#c", tenant="a")),
    (Principal(subject="x", tenant="acme#S#bob"), Principal(subject="bob#S#x", tenant="acme")),
    (Principal(subject="c%23", tenant="a"), Principal(subject="c#", tenant="a")),
]


@pytest.mark.parametrize(("first", "second"), COLLIDING_SUBJECTS)
def test_two_principals_whose_old_subject_keys_were_equal_now_have_their_own_subject_windows(
    first: Principal, second: Principal
) -> None:
    if "%" not in first.subject:  # the `%` pair shows why `%` itself is escaped, not an old collision
        assert old_limit_keys(first)["subject"] == old_limit_keys(second)["subject"]

    assert _pks(first)["subject"].isdisjoint(_pks(second)["subject"])
    assert len(_pks(first)["subject"]) == 1


def test_a_tenant_named_like_another_tenants_subject_window_no_longer_shares_it() -> None:
    tenant = Principal(subject="anyone", tenant="a#S#b")
    subject = Principal(subject="b", tenant="a")
    assert old_limit_keys(tenant)["tenant"] == old_limit_keys(subject)["subject"]

    every_key_of_the_tenant = set().union(*_pks(tenant).values())
    every_key_of_the_subject = set().union(*_pks(subject).values())

    assert every_key_of_the_tenant.isdisjoint(every_key_of_the_subject)


def test_a_tenant_named_like_another_tenants_tool_window_no_longer_shares_it() -> None:
    tenant = Principal(subject="anyone", tenant="acme#T#rec__*")
    other = Principal(subject="bob", tenant="acme")
    assert old_limit_keys(tenant)["tenant"] == old_limit_keys(other)["tool"]

    assert set().union(*_pks(tenant).values()).isdisjoint(set().union(*_pks(other).values()))


def test_one_principal_spending_its_subject_quota_leaves_the_colliding_principal_untouched(fresh_dynamodb: Any) -> None:
    first, second = COLLIDING_SUBJECTS[0]
    config = _config({"subject": {"per_minute": 1}})
    quota = QuotaEnforcer(config, DynamoLedger(TABLE, client=fresh_dynamodb))

    quota.admit(first, "rec__echo")
    with pytest.raises(QuotaExceeded):
        quota.admit(first, "rec__echo")  # first's own window is full

    assert quota.admit(second, "rec__echo").units == 1


def test_a_tenant_spending_its_quota_leaves_the_colliding_subject_untouched(fresh_dynamodb: Any) -> None:
    tenant = Principal(subject="anyone", tenant="a#S#b")
    subject = Principal(subject="b", tenant="a")
    config = _config({"tenant": {"per_minute": 1}, "subject": {"per_minute": 1}})
    quota = QuotaEnforcer(config, DynamoLedger(TABLE, client=fresh_dynamodb))

    quota.admit(tenant, "rec__echo")

    assert quota.admit(subject, "rec__echo").units == 1


def test_an_ordinary_principal_is_charged_to_plainly_named_items() -> None:
    scopes = QuotaEnforcer(_config(EVERY_SCOPE), MemoryLedger()).scopes(ALICE, "rec__echo")

    assert [s.pk for s in scopes] == ["LIMIT#acme#S#alice", "LIMIT#acme#T#rec__*", "USAGE#acme"]


# --- legacy upstream sessions per principal -------------------------------------------------------
COLLIDING_PRINCIPALS = [
    (Principal(subject="c", tenant="a#b"), Principal(subject="b#c", tenant="a")),
    (Principal(subject="bob", tenant="acme#eve"), Principal(subject="eve#bob", tenant="acme")),
]


@pytest.mark.parametrize(("first", "second"), COLLIDING_PRINCIPALS)
def test_two_principals_whose_old_keys_were_equal_each_get_their_own_upstream_session(
    fresh_dynamodb: Any, first: Principal, second: Principal
) -> None:
    assert old_principal_pk(first) == old_principal_pk(second)
    store = DynamoSessionStore(TABLE, client=fresh_dynamodb)

    store.put_principal_upstream(first, "rec", UpstreamSession("first-session", "2025-11-25"), ttl=600)
    store.put_principal_upstream(second, "rec", UpstreamSession("second-session", "2025-11-25"), ttl=600)

    assert store.get_principal_upstream(first, "rec") == UpstreamSession("first-session", "2025-11-25")
    assert store.get_principal_upstream(second, "rec") == UpstreamSession("second-session", "2025-11-25")
    items = fresh_dynamodb.scan(TableName=TABLE)["Items"]
    assert len({item["pk"]["S"] for item in items}) == 2


def test_a_principal_with_a_percent_sign_does_not_meet_one_with_the_escape_it_stands_for(fresh_dynamodb: Any) -> None:
    store = DynamoSessionStore(TABLE, client=fresh_dynamodb)
    hashed, percent = Principal(subject="x", tenant="a#b"), Principal(subject="x", tenant="a%23b")

    store.put_principal_upstream(hashed, "rec", UpstreamSession("hash-session", "2025-11-25"), ttl=600)

    assert store.get_principal_upstream(percent, "rec") is None


def test_an_ordinary_principal_keeps_the_exact_upstream_session_key_it_had(fresh_dynamodb: Any) -> None:
    store = DynamoSessionStore(TABLE, client=fresh_dynamodb)

    store.put_principal_upstream(ALICE, "rec", UpstreamSession("alice-session", "2025-11-25"), ttl=600)

    [item] = fresh_dynamodb.scan(TableName=TABLE)["Items"]
    assert (item["pk"]["S"], item["sk"]["S"]) == ("PRINCIPAL#acme#alice", "UPSTREAM#rec")
    assert item["pk"]["S"] == old_principal_pk(ALICE)


def test_an_existing_item_under_the_old_key_of_an_ordinary_principal_is_still_read(fresh_dynamodb: Any) -> None:
    item = {
        "pk": {"S": "PRINCIPAL#acme#alice"},
        "sk": {"S": "UPSTREAM#rec"},
        "up": {"M": {"sid": {"S": "written-before"}, "ver": {"S": "2025-06-18"}}},
        "expires_at": {"N": str(int(datetime.now(UTC).timestamp()) + 600)},
    }
    fresh_dynamodb.put_item(TableName=TABLE, Item=item)

    found = DynamoSessionStore(TABLE, client=fresh_dynamodb).get_principal_upstream(ALICE, "rec")

    assert found == UpstreamSession("written-before", "2025-06-18")


# --- usage --------------------------------------------------------------------------------------
def record(ledger: DynamoLedger, tenant: str, tool: str, units: int) -> None:
    """A call's charge on its tenant's own scope (no limits): what a metered call writes."""
    ledger.charge(
        Charge(Scope(key("USAGE", tenant), tenant=tenant), 1, units, {f"c:{tool}": 1, f"u:{tool}": units}), AT
    )


def _usage_items(client: Any) -> list[dict[str, str]]:
    """The usage items, each with the index keys of its entry (`USAGEINDEX#<item pk>`)."""
    items = client.scan(TableName=TABLE)["Items"]
    entries = {(i["item_pk"]["S"], i["sk"]["S"]): i for i in items if "item_pk" in i}
    return sorted(
        (
            {
                **{k: item[k]["S"] for k in ("pk", "sk", "tenant")},
                **{k: entries[(item["pk"]["S"], item["sk"]["S"])][k]["S"] for k in ("gsi1pk", "gsi1sk")},
            }
            for item in items
            if "tenant" in item
        ),
        key=lambda i: (i["pk"], i["sk"]),
    )


def test_two_tenants_whose_old_usage_index_keys_were_equal_keep_their_own_items_and_rows(fresh_dynamodb: Any) -> None:
    day = MOMENT.strftime("%Y-%m-%d")
    first, second = ("a#2026-05-03#x", "y"), ("a", "x#2026-05-03#y")
    assert old_usage_gsi1sk(first[0], day, first[1]) == old_usage_gsi1sk(second[0], day, second[1])
    ledger = DynamoLedger(TABLE, client=fresh_dynamodb)
    usage = UsageReader(ledger)

    record(ledger, *first, units=2)
    record(ledger, *second, units=5)

    items = _usage_items(fresh_dynamodb)
    assert len(items) == 2
    assert len({i["gsi1sk"] for i in items}) == 2
    assert [(r.tenant, r.tool, r.units) for r in usage.month("2026-05", tenant=first[0])] == [(*first, 2)]
    assert [(r.tenant, r.tool, r.units) for r in usage.month("2026-05", tenant=second[0])] == [(*second, 5)]
    assert sorted((r.tenant, r.units) for r in usage.month("2026-05")) == [(second[0], 5), (first[0], 2)]


def test_a_tenant_with_a_hash_and_one_with_its_escape_have_separate_usage(fresh_dynamodb: Any) -> None:
    ledger = DynamoLedger(TABLE, client=fresh_dynamodb)
    usage = UsageReader(ledger)

    record(ledger, "acme#x", "rec__echo", units=1)
    record(ledger, "acme%23x", "rec__echo", units=7)

    assert {i["pk"] for i in _usage_items(fresh_dynamodb)} == {"USAGE#acme%23x", "USAGE#acme%2523x"}
    assert [(r.tenant, r.units) for r in usage.month("2026-05", tenant="acme#x")] == [("acme#x", 1)]
    assert [(r.tenant, r.units) for r in usage.month("2026-05", tenant="acme%23x")] == [("acme%23x", 7)]


def test_an_ordinary_tenant_keeps_its_usage_partition_and_index_key(fresh_dynamodb: Any) -> None:
    record(DynamoLedger(TABLE, client=fresh_dynamodb), "acme", "rec__echo", units=3)

    assert _usage_items(fresh_dynamodb) == [
        {
            "pk": "USAGE#acme",
            "sk": "2026-05-03",
            "gsi1pk": "USAGE#2026-05",
            "gsi1sk": "acme#2026-05-03",
            "tenant": "acme",
        }
    ]


def test_usage_written_per_tool_before_the_ledger_is_still_reported(fresh_dynamodb: Any) -> None:
    """Items of the earlier layout (one per tenant, day and tool) sit in the same partitions."""
    old = {
        "pk": {"S": "USAGE#acme"},
        "sk": {"S": "2026-05-02#rec__echo"},
        "gsi1pk": {"S": "USAGE#2026-05"},
        "gsi1sk": {"S": "acme#2026-05-02#rec__echo"},
        "tenant": {"S": "acme"},
        "tool": {"S": "rec__echo"},
        "day": {"S": "2026-05-02"},
        **{
            k: {"N": v}
            for k, v in {"calls": "4", "units": "8", "errors": "1", "rejected": "2", "latency_ms": "90"}.items()
        },
    }
    fresh_dynamodb.put_item(TableName=TABLE, Item=old)
    ledger = DynamoLedger(TABLE, client=fresh_dynamodb)
    record(ledger, "acme", "rec__echo", units=3)

    expected = [("2026-05-02", 4, 8, 1, 2, 90), ("2026-05-03", 1, 3, 0, 0, 0)]
    for rows in (UsageReader(ledger).month("2026-05", "acme"), UsageReader(ledger).month("2026-05")):
        assert [(r.day, r.calls, r.units, r.errors, r.rejected, r.latency_ms) for r in rows] == expected


# --- the joining rule itself ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("parts", "joined"),
    [
        (("LIMIT", "acme", "S", "alice"), "LIMIT#acme#S#alice"),
        (("LIMIT", "a#S#b", "S", "c"), "LIMIT#a%23S%23b#S#c"),
        (("LIMIT", "a", "S", "b#S#c"), "LIMIT#a#S#b%23S%23c"),
        (("USAGE", "a%23b"), "USAGE#a%2523b"),
        (("USAGE", "a#b"), "USAGE#a%23b"),
        (("PRINCIPAL", "", ""), "PRINCIPAL##"),
    ],
)
def test_key_parts_are_escaped_percent_first_then_hash(parts: tuple[str, ...], joined: str) -> None:
    assert key(*parts) == joined
