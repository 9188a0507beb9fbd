"""Detectors find PII and secrets exactly, and leave look-alikes alone.

Every corpus case is asserted with its exact spans; near misses (Luhn and mod-97 failures,
dates, versions, order ids, invalid SSN areas, loopback addresses…) must find nothing, or the
gateway would break the tools it fronts.
"""

from __future__ import annotations

import time

import pytest
from tollway.config import MaskingConfig
from tollway.masking.detectors import DETECTORS, IBAN_LENGTHS, find_spans, iban_valid, luhn

from tests.unit.pii_corpus import CASES, JWT_TOKEN, Case


def spans(text: str, names: list[str] | None = None) -> list[tuple[str, str]]:
    return [(s.detector, text[s.start : s.end]) for s in find_spans(text, names)]


def test_the_corpus_has_at_least_sixty_cases_with_true_positives_and_near_misses() -> None:
    hits = [c for c in CASES if c.found]
    misses = [c for c in CASES if not c.found]
    assert len(CASES) >= 60
    assert len(hits) >= 30
    assert len(misses) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    assert {d for c in hits for d, _ in c.found} == set(DETECTORS)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_detectors_find_exactly_the_corpus_spans(case: Case) -> None:
    assert spans(case.text) == case.found


def test_every_default_detector_of_the_config_exists() -> None:
    assert list(DETECTORS) == ["jwt", "aws_access_key", "api_key", "email", "iban", "card", "ssn", "ip", "phone"]
    assert set(MaskingConfig().detectors) == set(DETECTORS)


def test_only_the_named_detectors_run() -> None:
    text = "jane@example.com paid with 4242 4242 4242 4242"
    assert spans(text, ["card"]) == [("card", "4242 4242 4242 4242")]
    assert spans(text, ["email"]) == [("email", "jane@example.com")]
    assert spans(text, []) == []


def test_an_overlap_goes_to_the_detector_listed_first() -> None:
    # The value of `password=` is an api_key even when it looks like an email.
    assert spans("password=john@example.com") == [("api_key", "john@example.com")]
    # A JWT after `Bearer` is a jwt, not an opaque bearer token.
    assert spans(f"Bearer {JWT_TOKEN}") == [("jwt", JWT_TOKEN)]
    # With the api_key detector off, the email is found again.
    assert spans("password=john@example.com", ["email"]) == [("email", "john@example.com")]


def test_a_rejected_candidate_does_not_hide_a_valid_one_after_it() -> None:
    assert spans("ref 1234 5678 9012 3456 and 4242424242424242") == [("card", "4242424242424242")]
    assert spans("GB82 WEST 1234 5698 7654 33 or GB82 WEST 1234 5698 7654 32") == [
        ("iban", "GB82 WEST 1234 5698 7654 32")
    ]


def test_luhn_accepts_test_cards_and_rejects_one_digit_changes() -> None:
    assert [luhn(n) for n in ("4242424242424242", "5555555555554444", "378282246310005", "79927398713")] == [
        True,
        True,
        True,
        True,
    ]
    assert [luhn(n) for n in ("4242424242424241", "1234567890123456", "79927398710")] == [False, False, False]


def test_iban_check_uses_the_registry_length_and_mod_97() -> None:
    assert iban_valid("GB82WEST12345698765432") is True
    assert iban_valid("DE89370400440532013000") is True
    assert iban_valid("FR1420041010050500013M02606") is True
    assert iban_valid("NO9386011117947") is True
    assert iban_valid("GB82WEST12345698765433") is False  # mod-97
    assert iban_valid("DE8937040044053201300") is False  # one character short for DE
    assert iban_valid("XX82WEST12345698765432") is False  # no such country
    assert (IBAN_LENGTHS["DE"], IBAN_LENGTHS["GB"], IBAN_LENGTHS["FR"], IBAN_LENGTHS["NO"]) == (22, 22, 27, 15)


def test_findings_come_back_in_text_order() -> None:
    text = "ip 8.8.8.8, mail a@example.com, key AKIAIOSFODNN7EXAMPLE, ssn 123-45-6789"
    assert spans(text) == [
        ("ip", "8.8.8.8"),
        ("email", "a@example.com"),
        ("aws_access_key", "AKIAIOSFODNN7EXAMPLE"),
        ("ssn", "123-45-6789"),
    ]


ADVERSARIAL = {
    "digits": "1" * 50_000,
    "spaced digit groups": "1234 " * 10_000,
    "dashed digit pairs": "12-" * 16_000,
    "parenthesised digits": "(1)" * 16_000,
    "mixed separators": "1 -" * 16_000,
    "dotted digits": "1.2." * 12_000,
    "colons and hex": "ab:" * 16_000,
    "at signs": "a@" * 25_000,
    "long local part": "a" * 50_000 + "@example.com",
    "labels without tld": "a." * 25_000 + "@",
    "upper-case groups": "GB82 " * 10_000,
    "jwt prefixes": "eyJ." * 12_000,
    "assignments": "api_key=" * 6_000,
    "bearer": "Bearer " * 7_000,
}


def test_adversarial_input_is_scanned_in_linear_time() -> None:
    # A regex that backtracks catastrophically would take minutes on one of these.
    for name, text in ADVERSARIAL.items():
        started = time.perf_counter()
        find_spans(text)
        elapsed = time.perf_counter() - started
        assert elapsed < 2.0, f"{name}: {elapsed:.2f}s for {len(text)} characters"
