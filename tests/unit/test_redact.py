"""Redaction masks findings in text, JSON values and MCP results, and never breaks their shape.

Masked results must still be valid JSON and still validate as MCP results: a gateway that
turns a number into a string or drops a required key breaks every client behind it.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import mcp_types
import pytest
from tollway.errors import ConfigError
from tollway.masking.redact import Redactor

from tests.unit.pii_corpus import AWS_KEY, CASES, JWT_TOKEN, Case

REDACTOR = Redactor()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_each_corpus_text_is_masked_exactly(case: Case) -> None:
    assert REDACTOR.redact_text(case.text) == (case.masked, case.findings)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_json_carried_as_text_stays_valid_json_with_the_same_masks(case: Case) -> None:
    document = json.dumps({"note": case.text, "n": 1})
    masked, findings = REDACTOR.redact_text(document)
    assert json.loads(masked) == {"note": case.masked, "n": 1}
    assert findings == case.findings


def test_findings_are_counts_per_detector_never_values() -> None:
    text = "a@example.com, b@example.com, 4242424242424242, " + AWS_KEY
    masked, findings = REDACTOR.redact_text(text)
    assert masked == "a***@example.com, b***@example.com, ************4242, [REDACTED:aws_access_key]"
    assert findings == [("aws_access_key", 1), ("email", 2), ("card", 1)]


def test_unknown_detector_names_are_a_config_error() -> None:
    with pytest.raises(ConfigError) as exc:
        Redactor(["email", "passport"])
    assert str(exc.value) == (
        "masking.detectors: unknown detector(s) 'passport'; "
        "known: jwt, aws_access_key, api_key, email, iban, card, ssn, ip, phone"
    )


def test_only_configured_detectors_mask() -> None:
    redactor = Redactor(["card"])
    assert redactor.redact_text("jane@example.com 4242424242424242") == (
        "jane@example.com ************4242",
        [("card", 1)],
    )


def test_skipped_detectors_leave_their_findings_alone() -> None:
    text = "send to jane@example.com, card 4242424242424242"
    assert REDACTOR.redact_text(text, skip={"email"}) == (
        "send to jane@example.com, card ************4242",
        [("card", 1)],
    )
    assert REDACTOR.redact_text(text, skip={"email", "card"}) == (text, [])


# --- any JSON value -------------------------------------------------------------------------------
def test_values_are_masked_and_keys_numbers_booleans_and_nulls_are_kept() -> None:
    value = {
        "jane@example.com": "key that is an email",
        "card_as_number": 4242424242424242,
        "card_as_text": "4242 4242 4242 4242",
        "nested": [{"ip": "203.0.113.7", "ok": True, "none": None, "ratio": 0.5}],
        "list": ["+1 415 555 2671", "plain"],
    }
    before = copy.deepcopy(value)
    masked, findings = REDACTOR.redact_value(value)
    assert masked == {
        "jane@example.com": "key that is an email",
        "card_as_number": 4242424242424242,
        "card_as_text": "**** **** **** 4242",
        "nested": [{"ip": "[REDACTED:ip]", "ok": True, "none": None, "ratio": 0.5}],
        "list": ["+* *** *** **71", "plain"],
    }
    assert findings == [("card", 1), ("ip", 1), ("phone", 1)]
    assert value == before  # the input is not modified


def test_a_value_without_findings_is_returned_as_is() -> None:
    value = {"order": "ORD-2024-000123", "at": "2024-01-15T10:30:00Z", "items": [1, 2, 3]}
    masked, findings = REDACTOR.redact_value(value)
    assert masked is value
    assert findings == []


def test_only_the_containers_on_a_masked_path_are_copied() -> None:
    untouched = {"status": "shipped"}
    value = {"a": untouched, "b": {"email": "jane@example.com"}}
    masked, _ = REDACTOR.redact_value(value)
    assert masked == {"a": {"status": "shipped"}, "b": {"email": "j***@example.com"}}
    assert masked["a"] is untouched
    assert value["b"] == {"email": "jane@example.com"}


def test_a_bare_string_value_is_masked() -> None:
    assert REDACTOR.redact_value("SSN 123-45-6789") == ("SSN ***-**-6789", [("ssn", 1)])
    assert REDACTOR.redact_value(42) == (42, [])


def test_findings_never_span_two_strings() -> None:
    # The strings are scanned in one pass; pieces that only form a finding together stay apart.
    value = ["+1 415", "555 2671", "john", "@example.com", "4242 4242", "4242 4242", "123-45", "-6789"]
    assert REDACTOR.redact_value(value) == (value, [])


# --- MCP results ----------------------------------------------------------------------------------
CUSTOMER = {
    "id": "cus_0042",
    "name": "Jane Doe",
    "email": "jane.doe@example.com",
    "phone": "+44 20 7946 0958",
    "iban": "GB82 WEST 1234 5698 7654 32",
    "cards": [{"brand": "visa", "number": "4242 4242 4242 4242", "exp": "12/26"}],
    "orders": [{"id": "ORD-2024-000123", "placed": "2024-01-15T10:30:00Z", "total": 129.5}],
    "last_login_ip": "203.0.113.7",
    "vip": True,
    "balance": 1250,
    "notes": None,
}
MASKED_CUSTOMER = {
    "id": "cus_0042",
    "name": "Jane Doe",
    "email": "j***@example.com",
    "phone": "+** ** **** **58",
    "iban": "GB82 **** **** **** **54 32",
    "cards": [{"brand": "visa", "number": "**** **** **** 4242", "exp": "12/26"}],
    "orders": [{"id": "ORD-2024-000123", "placed": "2024-01-15T10:30:00Z", "total": 129.5}],
    "last_login_ip": "[REDACTED:ip]",
    "vip": True,
    "balance": 1250,
    "notes": None,
}


def tool_result(structured: dict[str, Any]) -> dict[str, Any]:
    return {
        "content": [
            {"type": "text", "text": json.dumps(structured)},
            {"type": "text", "text": "Customer Jane reached us from jane.doe@example.com about order ORD-2024-000123."},
        ],
        "structuredContent": structured,
        "isError": False,
        "_meta": {"trace": "jane.doe@example.com"},
    }


def test_a_tool_result_is_masked_in_text_and_structured_content_and_stays_a_valid_result() -> None:
    result = tool_result(CUSTOMER)
    masked, findings = REDACTOR.redact_mcp_result(result)
    assert masked == {
        "content": [
            {"type": "text", "text": json.dumps(MASKED_CUSTOMER)},
            {"type": "text", "text": "Customer Jane reached us from j***@example.com about order ORD-2024-000123."},
        ],
        "structuredContent": MASKED_CUSTOMER,
        "isError": False,
        "_meta": {"trace": "jane.doe@example.com"},  # metadata is not for the model: left as is
    }
    assert findings == [("email", 3), ("iban", 2), ("card", 2), ("ip", 2), ("phone", 2)]
    assert json.loads(json.dumps(masked)) == masked
    assert json.loads(masked["content"][0]["text"]) == masked["structuredContent"]
    validated = mcp_types.CallToolResult.model_validate(masked)
    assert validated.structured_content == MASKED_CUSTOMER
    assert result == tool_result(CUSTOMER)  # the input is not modified


def test_non_text_content_blocks_are_left_untouched() -> None:
    result = {
        "content": [
            {"type": "image", "data": "aGVsbG8=", "mimeType": "image/png"},
            {"type": "audio", "data": "aGVsbG8=", "mimeType": "audio/wav"},
            {"type": "resource_link", "uri": "mailto:jane@example.com", "name": "jane@example.com"},
            {
                "type": "resource",
                "resource": {"uri": "file:///contact.txt", "mimeType": "text/plain", "text": "call +1 415 555 2671"},
            },
            {"type": "resource", "resource": {"uri": "file:///card.bin", "blob": "NDI0MjQyNDI0MjQyNDI0Mg=="}},
        ],
        "isError": False,
    }
    masked, findings = REDACTOR.redact_mcp_result(result)
    expected = copy.deepcopy(result)
    expected["content"][3]["resource"]["text"] = "call +* *** *** **71"
    assert masked == expected
    assert findings == [("phone", 1)]
    mcp_types.CallToolResult.model_validate(masked)


def test_an_error_result_is_masked_like_any_other() -> None:
    result = {"content": [{"type": "text", "text": "no account for jane@example.com"}], "isError": True}
    assert REDACTOR.redact_mcp_result(result) == (
        {"content": [{"type": "text", "text": "no account for j***@example.com"}], "isError": True},
        [("email", 1)],
    )


def test_a_resource_read_result_is_masked_in_text_contents_only() -> None:
    result = {
        "contents": [
            {"uri": "crm://customers/42", "mimeType": "application/json", "text": '{"ssn": "123-45-6789"}'},
            {"uri": "crm://customers/42/photo", "mimeType": "image/png", "blob": "aGVsbG8="},
        ]
    }
    masked, findings = REDACTOR.redact_mcp_result(result)
    assert masked == {
        "contents": [
            {"uri": "crm://customers/42", "mimeType": "application/json", "text": '{"ssn": "***-**-6789"}'},
            {"uri": "crm://customers/42/photo", "mimeType": "image/png", "blob": "aGVsbG8="},
        ]
    }
    assert findings == [("ssn", 1)]
    mcp_types.ReadResourceResult.model_validate(masked)


def test_a_prompt_result_is_masked_in_its_messages() -> None:
    result = {
        "description": "Reply to a customer",
        "messages": [
            {"role": "user", "content": {"type": "text", "text": f"Reply to jane@example.com (token {JWT_TOKEN})"}},
            {
                "role": "assistant",
                "content": {"type": "resource", "resource": {"uri": "crm://42", "text": "IBAN DE89370400440532013000"}},
            },
        ],
    }
    masked, findings = REDACTOR.redact_mcp_result(result)
    assert masked == {
        "description": "Reply to a customer",
        "messages": [
            {"role": "user", "content": {"type": "text", "text": "Reply to j***@example.com (token [REDACTED:jwt])"}},
            {
                "role": "assistant",
                "content": {"type": "resource", "resource": {"uri": "crm://42", "text": "IBAN DE89**************3000"}},
            },
        ],
    }
    assert findings == [("jwt", 1), ("email", 1), ("iban", 1)]
    mcp_types.GetPromptResult.model_validate(masked)


def test_a_result_without_findings_is_returned_as_is() -> None:
    result = {"content": [{"type": "text", "text": "3 orders shipped on 2024-01-15"}], "structuredContent": {"n": 3}}
    masked, findings = REDACTOR.redact_mcp_result(result)
    assert masked is result
    assert findings == []


def test_tool_arguments_are_masked_with_the_tools_allowed_detectors_skipped() -> None:
    arguments = {"to": "jane@example.com", "body": "Your card 4242424242424242 was charged", "retries": 3}
    assert REDACTOR.redact_value(arguments, skip={"email"}) == (
        {"to": "jane@example.com", "body": "Your card ************4242 was charged", "retries": 3},
        [("card", 1)],
    )


# --- cost -----------------------------------------------------------------------------------------
def typical_result() -> dict[str, Any]:
    """A tool result of about 4 KB: order rows with dates, ids and amounts, and a few PII values."""
    rows = [
        {
            "order_id": f"ORD-2024-{i:06d}",
            "created": f"2024-03-{i + 1:02d}T10:{i:02d}:00Z",
            "status": "shipped",
            "amount": 1234.5 + i,
            "currency": "EUR",
            "note": "Deliver after 5pm; version 2.4.1 of the label",
        }
        for i in range(9)
    ]
    rows[1]["contact"] = "jane.doe@example.com"
    rows[3]["contact"] = "+44 20 7946 0958"
    rows[5]["payment"] = "card 4242 4242 4242 4242"
    rows[6]["iban"] = "DE89 3704 0044 0532 0130 00"
    structured = {"orders": rows, "total": len(rows)}
    return {"content": [{"type": "text", "text": json.dumps(structured)}], "structuredContent": structured}


def test_a_typical_4_kb_result_is_masked_and_its_cost_is_printed(run_summary: list[str]) -> None:
    result = typical_result()
    size = len(json.dumps(result))
    masked, findings = REDACTOR.redact_mcp_result(result)
    assert findings == [("email", 2), ("iban", 2), ("card", 2), ("phone", 2)]
    assert masked["structuredContent"]["orders"][5]["payment"] == "card **** **** **** 4242"
    assert 3500 <= size <= 4500
    runs = 500
    started = time.perf_counter()
    for _ in range(runs):
        REDACTOR.redact_mcp_result(result)
    per_call_ms = (time.perf_counter() - started) / runs * 1000
    run_summary.append(f"redact_mcp_result: {size} bytes, {per_call_ms:.3f} ms per call (mean of {runs})")
