"""The 2026-07-28 header value codec: what goes in an Mcp-Name header and how it reads back."""

from __future__ import annotations

import base64

import pytest
from mcp.shared import inbound
from tollway.spec import decode_header_value, encode_header_value

VALUES = [
    "get_customer_profile",
    "support__get_customer_profile",
    "finance+finance://reports/latest",
    "werkzeug_ä",
    "日本語のツール",
    " leading space",
    "trailing space ",
    "tab\tinside",
    "line\nbreak",
    "=?base64?Zm9v?=",
    "",
]


@pytest.mark.parametrize("value", ["get_customer_profile", "finance+finance://reports/latest", "a b c", ""])
def test_plain_printable_ascii_is_sent_verbatim(value: str) -> None:
    assert encode_header_value(value) == value


@pytest.mark.parametrize("value", ["werkzeug_ä", " padded", "padded ", "tab\tinside", "=?base64?Zm9v?="])
def test_values_that_would_not_survive_a_header_are_base64_wrapped(value: str) -> None:
    encoded = encode_header_value(value)

    assert encoded == f"=?base64?{base64.b64encode(value.encode()).decode()}?="
    assert encoded.isascii()


@pytest.mark.parametrize("value", VALUES)
def test_every_value_round_trips(value: str) -> None:
    assert decode_header_value(encode_header_value(value)) == value


@pytest.mark.parametrize("value", VALUES)
def test_the_codec_agrees_with_the_sdk_in_both_directions(value: str) -> None:
    assert encode_header_value(value) == inbound.encode_header_value(value)
    assert decode_header_value(inbound.encode_header_value(value)) == value
    assert inbound.decode_header_value(encode_header_value(value)) == value


NOT_UTF8 = base64.b64encode(bytes([0xFF, 0xFE])).decode()


@pytest.mark.parametrize(
    "header",
    ["=?base64?not base64!?=", "=?base64?Zm9=?=", "=?base64?Zm9vYg?=", f"=?base64?{NOT_UTF8}?="],
    ids=["not-base64", "non-canonical", "missing-padding", "not-utf8"],
)
def test_a_malformed_sentinel_decodes_to_nothing_so_it_never_matches_a_body_value(header: str) -> None:
    assert decode_header_value(header) is None
    assert inbound.decode_header_value(header) is None


def test_a_value_that_only_resembles_the_sentinel_is_read_verbatim() -> None:
    assert decode_header_value("=?base64?Zm9v?") == "=?base64?Zm9v?"


def test_an_absent_header_decodes_to_none() -> None:
    assert decode_header_value(None) is None
