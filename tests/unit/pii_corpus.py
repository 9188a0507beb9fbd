"""PII and secret cases: true positives and near misses, each with its exact masked text.

`found` lists (detector, matched text) in text order; an empty list is a near miss that must
come through unchanged. Tokens with well-known prefixes are assembled from pieces so secret
scanners do not flag this file; none of them is a real credential.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Case:
    id: str
    text: str
    masked: str
    found: list[tuple[str, str]] = field(default_factory=list)

    @property
    def findings(self) -> list[tuple[str, int]]:
        """(detector, count) in the order the redactor reports: detector priority."""
        from tollway.masking.detectors import DETECTORS

        counts: dict[str, int] = {}
        for detector, _ in self.found:
            counts[detector] = counts.get(detector, 0) + 1
        return [(name, counts[name]) for name in DETECTORS if name in counts]


def miss(id: str, text: str) -> Case:
    return Case(id, text, text)


JWT_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
JWT_WITHOUT_ALG = "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJl"  # header {"typ":"JWT"}
AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"  # AWS's documented example key
AWS_SESSION_KEY = "ASIA" + "Y34FZKBOKMUTVV7A"
GITHUB_TOKEN = "gh" + "p_" + "0123456789abcdefghijABCDEFGHIJ012345"
SLACK_TOKEN = "xo" + "xb-" + "123456789012-1234567890123-abcdefABCDEF"
OPENAI_KEY = "s" + "k-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8t"
STRIPE_KEY = "s" + "k_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
GOOGLE_KEY = "AI" + "za" + "SyD-1234567890abcdefghijklmnopqrstu"

CASES: list[Case] = [
    # --- cards: Luhn-checked, prefix 2221-2720 or 3-6 -------------------------------------------
    Case("card_bare_visa", "Card 4242424242424242 on file", "Card ************4242 on file",
         [("card", "4242424242424242")]),
    Case("card_spaced_mastercard", "paid with 5555 5555 5555 4444.", "paid with **** **** **** 4444.",
         [("card", "5555 5555 5555 4444")]),
    Case("card_visa_debit", "4000056655665556", "************5556", [("card", "4000056655665556")]),
    Case("card_dashed", "card: 4242-4242-4242-4242", "card: ****-****-****-4242",
         [("card", "4242-4242-4242-4242")]),
    Case("card_amex_grouped", "Amex 3782 822463 10005", "Amex **** ****** *0005", [("card", "3782 822463 10005")]),
    Case("card_followed_by_expiry", "4242 4242 4242 4242 12/26", "**** **** **** 4242 12/26",
         [("card", "4242 4242 4242 4242")]),
    Case("card_in_json_text", '{"pan":"4242424242424242"}', '{"pan":"************4242"}',
         [("card", "4242424242424242")]),
    miss("card_luhn_fails_by_one_digit", "4242 4242 4242 4241"),
    miss("card_sequence_fails_luhn", "1234 5678 9012 3456"),
    miss("card_luhn_valid_but_no_card_prefix", "order 9123456789012348 shipped"),
    miss("card_mixed_separators", "ref 4242-4242 4242-4242"),
    miss("card_twenty_digits", "tracking 42424242424242424242"),
    # --- iban: registry length and mod-97 -------------------------------------------------------
    Case("iban_gb_spaced", "IBAN GB82 WEST 1234 5698 7654 32 (Westminster)",
         "IBAN GB82 **** **** **** **54 32 (Westminster)", [("iban", "GB82 WEST 1234 5698 7654 32")]),
    Case("iban_de_spaced", "DE89 3704 0044 0532 0130 00", "DE89 **** **** **** **30 00",
         [("iban", "DE89 3704 0044 0532 0130 00")]),
    Case("iban_de_compact", "to DE89370400440532013000.", "to DE89**************3000.",
         [("iban", "DE89370400440532013000")]),
    Case("iban_nl_compact", "NL91ABNA0417164300", "NL91**********4300", [("iban", "NL91ABNA0417164300")]),
    miss("iban_gb_fails_mod97", "GB82 WEST 1234 5698 7654 33"),
    miss("iban_de_fails_mod97", "DE89370400440532013001"),
    miss("iban_too_short_for_country", "DE89 3704 0044 0532 0130"),
    miss("iban_unknown_country", "ZZ89370400440532013000"),
    # --- email ----------------------------------------------------------------------------------
    Case("email_plain", "Contact john.doe@example.com today", "Contact j***@example.com today",
         [("email", "john.doe@example.com")]),
    Case("email_mailto", "<a href=\"mailto:jane+news@corp.example.org?subject=Hi\">",
         "<a href=\"mailto:j***@corp.example.org?subject=Hi\">", [("email", "jane+news@corp.example.org")]),
    Case("email_in_url_query_encoded", "https://app.example.com/u?email=jo%40example.co.uk&x=1",
         "https://app.example.com/u?email=j***%40example.co.uk&x=1", [("email", "jo%40example.co.uk")]),
    Case("email_in_url_query_plain", "/invite?to=ann@example.org", "/invite?to=a***@example.org",
         [("email", "ann@example.org")]),
    Case("email_url_userinfo", "https://jo@example.com/repo", "https://j***@example.com/repo",
         [("email", "jo@example.com")]),
    Case("email_sentence_end", "Write to support@example.io.", "Write to s***@example.io.",
         [("email", "support@example.io")]),
    miss("email_bare_domain", "see example.com and www.example.org"),
    miss("email_retina_image_name", "icon@2x.png and logo@3x.webp"),
    miss("email_git_remote", "git@github.com:org/repo.git"),
    miss("email_handle", "ping @alice or @bob.smith"),
    miss("email_no_tld", "root@localhost"),
    # --- phone ----------------------------------------------------------------------------------
    Case("phone_e164_spaced", "Call +1 415 555 2671", "Call +* *** *** **71", [("phone", "+1 415 555 2671")]),
    Case("phone_e164_compact", "tel:+14155552671", "tel:+*********71", [("phone", "+14155552671")]),
    Case("phone_us_parentheses", "(415) 555-2671", "(***) ***-**71", [("phone", "(415) 555-2671")]),
    Case("phone_us_dotted", "415.555.2671", "***.***.**71", [("phone", "415.555.2671")]),
    Case("phone_uk_international", "+44 20 7946 0958", "+** ** **** **58", [("phone", "+44 20 7946 0958")]),
    Case("phone_de_trunk_zero", "+49 (0)30 1234567", "+** (*)** *****67", [("phone", "+49 (0)30 1234567")]),
    Case("phone_fr_pairs", "06 12 34 56 78", "** ** ** ** 78", [("phone", "06 12 34 56 78")]),
    Case("phone_uk_mobile_national", "mobile 07700 900123", "mobile ***** ****23", [("phone", "07700 900123")]),
    miss("phone_iso_date", "due 2024-01-15"),
    miss("phone_iso_timestamp", "2024-01-15T10:30:00Z"),
    miss("phone_date_and_time", "2024-01-15 10:30:00"),
    miss("phone_version_number", "build 10.0.19041.1234"),
    miss("phone_semver", "v2.4.1 and 1.2.3"),
    miss("phone_order_id", "order 12345678901"),
    miss("phone_prefixed_order_id", "ORD-2024-000123"),
    miss("phone_thousands_separators", "1 234 567 890 and 1.234.567.890"),
    miss("phone_unix_timestamp", "1700000000"),
    miss("phone_isbn", "ISBN 978-3-16-148410-0"),
    miss("phone_uuid", "550e8400-e29b-41d4-a716-446655440000"),
    miss("phone_decimal_amount", "total 123456.78 EUR"),
    miss("phone_aws_account_id", "account 1234-5678-9012"),
    miss("phone_coordinates", "at 48.8566, 2.3522"),
    miss("phone_digit_only_uuid", "12345678-1234-1234-1234-123456789012"),
    # --- ssn ------------------------------------------------------------------------------------
    Case("ssn_valid", "SSN 123-45-6789", "SSN ***-**-6789", [("ssn", "123-45-6789")]),
    miss("ssn_area_000", "000-12-3456"),
    miss("ssn_area_666", "666-12-3456"),
    miss("ssn_area_9xx", "900-12-3456"),
    miss("ssn_group_00", "123-00-4567"),
    miss("ssn_serial_0000", "123-45-0000"),
    miss("ssn_undashed", "123456789"),
    # --- ip -------------------------------------------------------------------------------------
    Case("ipv4_private", "host 192.168.1.10 up", "host [REDACTED:ip] up", [("ip", "192.168.1.10")]),
    Case("ipv4_with_port", "dns 8.8.8.8:53", "dns [REDACTED:ip]:53", [("ip", "8.8.8.8")]),
    Case("ipv6_full", "from 2001:db8::8a2e:370:7334", "from [REDACTED:ip]", [("ip", "2001:db8::8a2e:370:7334")]),
    Case("ipv6_link_local_zone", "fe80::1%eth0", "[REDACTED:ip]%eth0", [("ip", "fe80::1")]),
    Case("ipv6_bracketed_with_port", "[2001:db8::1]:443", "[[REDACTED:ip]]:443", [("ip", "2001:db8::1")]),
    Case("ipv6_mapped_ipv4", "::ffff:192.0.2.1", "[REDACTED:ip]", [("ip", "::ffff:192.0.2.1")]),
    miss("ipv4_octet_out_of_range", "999.1.1.1"),
    miss("ipv4_loopback", "listening on 127.0.0.1 and 0.0.0.0"),
    miss("ipv4_netmask", "mask 255.255.255.0"),
    miss("ipv4_oid", "OID 1.3.6.1.4.1"),
    miss("ipv4_prefixed_version", "v1.2.3.4"),
    miss("ipv6_loopback", "::1"),
    miss("ipv6_clock_time", "10:30:00"),
    miss("ipv6_mac_address", "00:1a:2b:3c:4d:5e"),
    miss("ipv6_cpp_scope", "std::vector<int> and a::b"),
    # --- secrets --------------------------------------------------------------------------------
    Case("aws_access_key", f"key {AWS_KEY}", "key [REDACTED:aws_access_key]", [("aws_access_key", AWS_KEY)]),
    Case("aws_session_key", f"{AWS_SESSION_KEY},", "[REDACTED:aws_access_key],", [("aws_access_key", AWS_SESSION_KEY)]),
    miss("aws_key_too_short", AWS_KEY[:-1]),
    miss("aws_user_id_not_a_key", "AIDA" + "IOSFODNN7EXAMPLE"),
    miss("aws_key_inside_a_word", "x" + AWS_KEY),
    Case("jwt", f"token {JWT_TOKEN}", "token [REDACTED:jwt]", [("jwt", JWT_TOKEN)]),
    Case("jwt_after_bearer", f"Authorization: Bearer {JWT_TOKEN}", "Authorization: Bearer [REDACTED:jwt]",
         [("jwt", JWT_TOKEN)]),
    miss("jwt_header_without_alg", JWT_WITHOUT_ALG),
    miss("jwt_two_segments", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9"),
    Case("api_key_openai", f"OPENAI={OPENAI_KEY}", "OPENAI=[REDACTED:api_key]", [("api_key", OPENAI_KEY)]),
    Case("api_key_stripe", f"{STRIPE_KEY}", "[REDACTED:api_key]", [("api_key", STRIPE_KEY)]),
    Case("api_key_github", f"token: {GITHUB_TOKEN}", "token: [REDACTED:api_key]", [("api_key", GITHUB_TOKEN)]),
    Case("api_key_slack", f"{SLACK_TOKEN}", "[REDACTED:api_key]", [("api_key", SLACK_TOKEN)]),
    Case("api_key_google", f"key={GOOGLE_KEY}", "key=[REDACTED:api_key]", [("api_key", GOOGLE_KEY)]),
    Case("api_key_assignment", "api_key=abcd1234efgh5678&x=1", "api_key=[REDACTED:api_key]&x=1",
         [("api_key", "abcd1234efgh5678")]),
    Case("api_key_json_password", '{"password": "hunter2hunter2"}', '{"password": "[REDACTED:api_key]"}',
         [("api_key", "hunter2hunter2")]),
    Case("api_key_header", "X-Api-Key: 9f8e7d6c5b4a39281706", "X-Api-Key: [REDACTED:api_key]",
         [("api_key", "9f8e7d6c5b4a39281706")]),
    Case("api_key_opaque_bearer", "Bearer abcdef0123456789abcdef", "Bearer [REDACTED:api_key]",
         [("api_key", "abcdef0123456789abcdef")]),
    Case("api_key_url_password", "postgres://app:s3cr%40t@db.internal:5432/x",
         "postgres://app:[REDACTED:api_key]@db.internal:5432/x", [("api_key", "s3cr%40t")]),
    miss("api_key_placeholder_angle", "password=<your-password>"),
    miss("api_key_placeholder_env", "api_key=${API_KEY}"),
    miss("api_key_already_masked", "secret_key: ********"),
    miss("api_key_pagination_token", "next_token=abcdefghijk123"),
    miss("api_key_prose_after_the_name", "Password: requirements are listed below"),
    Case("api_key_long_passphrase", "password=correcthorsebatterystaple", "password=[REDACTED:api_key]",
         [("api_key", "correcthorsebatterystaple")]),
    miss("api_key_sk_slug_of_words", "docs/sk-learn-tutorial-for-beginners"),
    miss("api_key_bearer_prose", "Bearer authentication is described below"),
    # --- mixed ----------------------------------------------------------------------------------
    Case("mixed_sentence",
         "Jane (jane@example.com, +1 415 555 2671) paid 4242 4242 4242 4242 from 10.1.2.3 on 2024-01-15.",
         "Jane (j***@example.com, +* *** *** **71) paid **** **** **** 4242 from [REDACTED:ip] on 2024-01-15.",
         [("email", "jane@example.com"), ("phone", "+1 415 555 2671"), ("card", "4242 4242 4242 4242"),
          ("ip", "10.1.2.3")]),
]  # fmt: skip
