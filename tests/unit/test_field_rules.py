"""Field rules act on exactly the configured paths, keep JSON types where they promise to, and
hash identifiers consistently within a tenant and unlinkably across tenants."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from typing import Any

import mcp_types
import pytest
from tollway.config import FieldRule
from tollway.errors import ConfigError
from tollway.masking.fields import (
    PathError,
    apply_field_rules,
    apply_result_field_rules,
    check_field_rules,
    parse_path,
)

KEY = b"k" * 32


def rule(path: str, action: str = "mask", **options: Any) -> FieldRule:
    return FieldRule(path=path, action=action, **options)  # type: ignore[arg-type]


def apply(value: Any, *rules: FieldRule, tenant: str = "acme") -> Any:
    return apply_field_rules(value, list(rules), KEY, tenant)


def expected_token(tenant: str, text: str, key: bytes = KEY) -> str:
    return "h_" + hmac.new(key, f"{tenant}\x00{text}".encode(), hashlib.sha256).hexdigest()[:16]


ACCOUNT = {
    "customer": {"email": "jane@example.com", "age": 42, "vip": True, "score": 1.5, "notes": None},
    "items": [
        {"sku": "A-1", "email": "a@example.com", "price": 1234.567},
        {"sku": "B-2", "email": "b@example.com", "price": "99.5"},
    ],
    "revenue": 7200,
}


# --- paths ----------------------------------------------------------------------------------------
def test_paths_parse_dotted_dollar_wildcard_index_and_quoted_forms() -> None:
    assert parse_path("customer.email") == (("key", "customer"), ("key", "email"))
    assert parse_path("$.customer.email") == (("key", "customer"), ("key", "email"))
    assert parse_path("items[*].email") == (("key", "items"), ("*",), ("key", "email"))
    assert parse_path("$.items[-1].price") == (("key", "items"), ("index", -1), ("key", "price"))
    assert parse_path("totals.*") == (("key", "totals"), ("*",))
    assert parse_path("$['odd.key'][0]") == (("key", "odd.key"), ("index", 0))
    assert parse_path("$") == ()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("a..b", "invalid field path 'a..b' at position 1"),
        ("items[", "invalid field path 'items[' at position 5"),
        ("a[x]", "invalid field path 'a[x]' at position 1"),
        ("$.", "invalid field path '$.' at position 1"),
        ("", "empty field path"),
    ],
)
def test_invalid_paths_are_rejected_with_the_position(path: str, message: str) -> None:
    with pytest.raises(PathError) as exc:
        parse_path(path)
    assert str(exc.value) == message


def test_rule_checks_name_the_config_location() -> None:
    where = "masking.tools.crm__*.results"
    cases = [
        (rule("a..b"), f"{where}[0].path: invalid field path 'a..b' at position 1"),
        (rule("$", "remove"), f"{where}[0]: the root cannot be removed"),
        (rule("x", "bucket", buckets=[5000, 1000]), f"{where}[0].buckets: bucket needs strictly ascending bounds"),
        (rule("x", "bucket"), f"{where}[0].buckets: bucket needs strictly ascending bounds"),
    ]
    for bad, message in cases:
        with pytest.raises(ConfigError) as exc:
            check_field_rules([bad], where)
        assert str(exc.value) == message
    check_field_rules([rule("items[*].email"), rule("x", "bucket", buckets=[1, 2])], where)


def test_an_absent_path_changes_nothing() -> None:
    assert apply(ACCOUNT, rule("customer.phone"), rule("missing.deeper[*].x"), rule("items[5].email")) == ACCOUNT
    assert apply(ACCOUNT, rule("revenue.amount"), rule("customer[0]")) == ACCOUNT  # wrong types on the way


def test_rules_never_modify_their_input() -> None:
    before = copy.deepcopy(ACCOUNT)
    apply(ACCOUNT, rule("customer.email"), rule("items[*]", "remove"), rule("revenue", "bucket", buckets=[1000]))
    assert before == ACCOUNT


# --- mask -----------------------------------------------------------------------------------------
def test_mask_keeps_each_json_type() -> None:
    masked = apply(ACCOUNT, rule("customer.*"))
    assert masked["customer"] == {"email": "****", "age": 0, "vip": False, "score": 0.0, "notes": None}


def test_mask_reaches_every_list_item_through_a_wildcard() -> None:
    masked = apply(ACCOUNT, rule("$.items[*].email"))
    assert masked["items"] == [
        {"sku": "A-1", "email": "****", "price": 1234.567},
        {"sku": "B-2", "email": "****", "price": "99.5"},
    ]


def test_mask_of_a_container_masks_its_leaves_and_keeps_its_keys() -> None:
    assert apply({"address": {"street": "1 Main St", "zip": 12345, "lines": ["a", "b"]}}, rule("address")) == {
        "address": {"street": "****", "zip": 0, "lines": ["****", "****"]}
    }


def test_the_root_path_masks_the_whole_value() -> None:
    assert apply("jane@example.com", rule("$")) == "****"
    assert apply([1, "x"], rule("$")) == [0, "****"]


# --- remove ---------------------------------------------------------------------------------------
def test_remove_drops_the_key() -> None:
    assert apply(ACCOUNT, rule("items[*].email", "remove"))["items"] == [
        {"sku": "A-1", "price": 1234.567},
        {"sku": "B-2", "price": "99.5"},
    ]


def test_remove_drops_list_elements_by_index_or_all_of_them() -> None:
    assert apply({"a": [1, 2, 3]}, rule("a[0]", "remove"), rule("a[-1]", "remove")) == {"a": [2]}
    assert apply({"a": [1, 2, 3]}, rule("a[*]", "remove")) == {"a": []}


# --- hash -----------------------------------------------------------------------------------------
def test_hash_is_the_truncated_hmac_of_tenant_and_value() -> None:
    assert apply(ACCOUNT, rule("customer.email", "hash"))["customer"]["email"] == expected_token(
        "acme", "jane@example.com"
    )
    assert apply({"id": "cus_42"}, rule("id", "hash")) == {"id": "h_0ec91def683e86ce"}  # openssl dgst -sha256 -mac HMAC


def test_hash_is_consistent_within_a_tenant_across_calls_and_fields() -> None:
    first = apply({"customer": {"email": "jane@example.com"}}, rule("customer.email", "hash"))
    second = apply({"rows": [{"contact": "jane@example.com"}]}, rule("rows[*].contact", "hash"))
    assert first["customer"]["email"] == second["rows"][0]["contact"]


def test_hash_differs_across_tenants_and_keys() -> None:
    value = {"email": "jane@example.com"}
    acme = apply(value, rule("email", "hash"), tenant="acme")["email"]
    globex = apply(value, rule("email", "hash"), tenant="globex")["email"]
    other_key = apply_field_rules(value, [rule("email", "hash")], b"x" * 32, "acme")["email"]
    assert len({acme, globex, other_key}) == 3
    # The tenant and the value are separated: ("acme", "x…") never collides with ("acmex", "…").
    assert apply({"v": "xjane"}, rule("v", "hash"), tenant="acme") != apply(
        {"v": "jane"}, rule("v", "hash"), tenant="acmex"
    )


def test_hash_of_a_number_equals_the_hash_of_its_decimal_text() -> None:
    # An id sent as 42 by one tool and "42" by another still joins.
    assert (
        apply({"id": 42}, rule("id", "hash"))
        == apply({"id": "42"}, rule("id", "hash"))
        == {"id": expected_token("acme", "42")}
    )
    assert apply({"id": None}, rule("id", "hash")) == {"id": None}


def test_the_default_hash_key_is_stable_per_gateway_name() -> None:
    from tollway.config import parse_config
    from tollway.secrets import field_hash_key

    def key(name: str) -> bytes:
        return field_hash_key(
            parse_config(
                {"resource": "https://g/mcp", "name": name, "upstreams": [{"name": "a", "url": "http://a/mcp"}]}
            )
        )

    assert key("tollway") == hashlib.sha256(b"tollway/field-hash/tollway").digest()
    assert key("tollway") != key("other")


# --- round and bucket -----------------------------------------------------------------------------
def test_round_keeps_floats_ints_and_numeric_strings_in_their_types() -> None:
    value = {"f": 1234.567, "i": 7249, "s": "99.5", "half": 2.675, "neg": -1234.5}
    assert apply(value, rule("*", "round", digits=1)) == {
        "f": 1234.6,
        "i": 7249,
        "s": "99.5",
        "half": 2.7,
        "neg": -1234.5,
    }
    assert apply(value, rule("*", "round", digits=2)) == {
        "f": 1234.57,
        "i": 7249,
        "s": "99.50",
        "half": 2.68,  # half up on the decimal text, not float(2.675) == 2.67499…
        "neg": -1234.5,
    }
    assert apply(value, rule("*", "round", digits=-2)) == {
        "f": 1200.0,
        "i": 7200,
        "s": "100",
        "half": 0.0,
        "neg": -1200.0,
    }


def test_round_masks_what_is_not_a_number() -> None:
    assert apply({"a": "n/a", "b": True, "c": None}, rule("*", "round")) == {"a": "****", "b": False, "c": None}


def test_bucket_names_the_range_a_number_falls_in() -> None:
    buckets = rule("*", "bucket", buckets=[1000, 5000, 10000])
    value = {"low": 999.99, "at_bound": 1000, "mid": 7200, "top": 10000, "big": 1e9, "text": "4500.00"}
    assert apply(value, buckets) == {
        "low": "<1000",
        "at_bound": "1000-5000",
        "mid": "5000-10000",
        "top": ">=10000",
        "big": ">=10000",
        "text": "1000-5000",
    }


def test_bucket_bounds_keep_their_fractions() -> None:
    assert apply({"r": 0.3}, rule("r", "bucket", buckets=[0.25, 0.5])) == {"r": "0.25-0.5"}


def test_bucket_masks_what_is_not_a_number() -> None:
    assert apply({"a": "lots", "b": None}, rule("*", "bucket", buckets=[1])) == {"a": "****", "b": None}


def test_rules_apply_in_order() -> None:
    value = {"amount": 1234.567}
    assert apply(value, rule("amount", "round", digits=-3), rule("amount", "bucket", buckets=[1000, 2000])) == {
        "amount": "1000-2000"
    }


# --- tool results ---------------------------------------------------------------------------------
def test_result_rules_apply_to_structured_content_and_its_json_text_copy() -> None:
    structured = {"account": {"iban": "DE89370400440532013000", "balance": 10450.25}, "owner": "cus_42"}
    result = {
        "content": [
            {"type": "text", "text": json.dumps(structured, indent=2)},
            {"type": "text", "text": "Balance for cus_42 fetched."},
            {"type": "image", "data": "aGVsbG8=", "mimeType": "image/png"},
        ],
        "structuredContent": structured,
        "isError": False,
    }
    rules = [
        rule("account.iban", "remove"),
        rule("account.balance", "bucket", buckets=[1000, 10000]),
        rule("owner", "hash"),
    ]
    shaped = apply_result_field_rules(result, rules, KEY, "acme")
    owner = expected_token("acme", "cus_42")
    expected = {"account": {"balance": ">=10000"}, "owner": owner}
    assert shaped == {
        "content": [
            {"type": "text", "text": json.dumps(expected, ensure_ascii=False)},
            {"type": "text", "text": "Balance for cus_42 fetched."},  # prose is left to the detectors
            {"type": "image", "data": "aGVsbG8=", "mimeType": "image/png"},
        ],
        "structuredContent": expected,
        "isError": False,
    }
    mcp_types.CallToolResult.model_validate(shaped)
    assert result["structuredContent"]["account"]["iban"] == "DE89370400440532013000"  # input untouched


def test_result_rules_leave_text_that_is_not_json_or_unchanged_as_is() -> None:
    block = {"type": "text", "text": "[not json"}
    unchanged = {"type": "text", "text": '{"other": 1}'}
    result = {"content": [block, unchanged], "structuredContent": {"other": 1}}
    shaped = apply_result_field_rules(result, [rule("secret")], KEY, "acme")
    assert shaped["content"][0] is block
    assert shaped["content"][1] is unchanged
    assert apply_result_field_rules(result, [], KEY, "acme") is result
