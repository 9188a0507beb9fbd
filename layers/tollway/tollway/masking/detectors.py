"""PII and secret detectors: a compiled candidate pattern plus the format's own check.

Each detector finds candidates with a regular expression and keeps only those its validator
accepts (Luhn for cards, mod-97 and the registry length for IBANs, octet ranges for IPv4, a
JSON header with `alg` for JWTs…). Digits are ASCII digits (`[0-9]`, not `\\d`): Arabic-Indic
digits are no address, and the validators (`ipaddress`, `int`) must only ever see what the formats allow.
A false positive breaks a tool (an order id masked, a date rewritten), so the patterns are
anchored on token boundaries and a candidate glued to a longer number (`…4242 4242` inside
`4242 4242 4242 4242 4241`) is never taken from its middle.

| detector         | finds                                                  | does not find                    |
| ---------------- | ------------------------------------------------------ | -------------------------------- |
| `email`          | `a@example.com`, in `mailto:`, URL queries, `%40` form | bare domains, `icon@2x.png`,     |
|                  | and URL userinfo (`https://user@host`)                 | `git@github.com:org/repo`        |
| `phone`          | `+` E.164 with or without separators; national with    | dates, times, versions, amounts  |
|                  | separators: `(415) 555-2671`, `06 12 34 56 78`,        | with thousands separators, plain |
|                  | `020 7946 0958`, `07700 900123`                        | integers (order ids, timestamps) |
| `card`           | 13-19 digits, bare or in groups of one separator,      | Luhn failures, other prefixes    |
|                  | prefix 2221-2720 or 3-6, Luhn-valid                    |                                  |
| `ssn`            | US `AAA-GG-SSSS` (dashed only)                         | area 000/666/9xx, group 00,      |
|                  |                                                        | serial 0000, undashed 9 digits   |
| `iban`           | upper-case IBANs, compact or in groups of four         | mod-97 failures, wrong length    |
|                  |                                                        | for the country                  |
| `ip`             | IPv4 (octets 0-255, no leading zeros), IPv6            | loopback, unspecified, broadcast |
|                  |                                                        | and netmasks, `v1.2.3.4`, OIDs   |
| `aws_access_key` | `AKIA`/`ASIA` + 16 base32 characters                   | other AWS id prefixes (not keys) |
| `jwt`            | three base64url segments, header JSON with `alg`       |                                  |
| `api_key`        | `sk-…`, `sk_live_…`, `ghp_…`, `github_pat_…`, `xoxb-…`,| placeholders (`<key>`, `${X}`,   |
|                  | `AIza…`; the value after `api_key=`, `password:`,      | `****`), pagination tokens       |
|                  | `client_secret=`…; `Bearer <token>`; the password in   | (`next_token=`)                  |
|                  | `https://user:password@host`                           |                                  |

`find_spans` resolves overlaps by priority (the order of `DETECTORS`): a JWT after `Bearer` is
a `jwt`, an email inside `password=…` is an `api_key` value.

Why not `phonenumbers` (libphonenumber): it is the reference for phone formats, but it is not
in the layer, its metadata costs cold-start time, and its matcher needs a default region for
national numbers; the rules above cover the formats agents meet, with the near misses tested.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

EMAIL = "email"
PHONE = "phone"
CARD = "card"
SSN = "ssn"
IBAN = "iban"
IP = "ip"
AWS_ACCESS_KEY = "aws_access_key"
JWT = "jwt"
API_KEY = "api_key"


@dataclass(frozen=True, slots=True)
class Span:
    detector: str
    start: int
    end: int


Accept = Callable[[re.Match[str]], tuple[int, int] | None]


@dataclass(frozen=True, slots=True)
class Rule:
    pattern: re.Pattern[str]
    accept: Accept
    hints: tuple[str, ...] = ()
    """Substrings one of which every match contains: a cheap test before the regex runs."""
    fold_case: bool = False
    """Test the hints against the lower-cased text."""

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        if self.hints:
            haystack = text.lower() if self.fold_case else text
            for hint in self.hints:  # a loop, not any(...): it runs for every rule on every string
                if hint in haystack:
                    break
            else:
                return
        pos = 0
        while match := self.pattern.search(text, pos):
            span = self.accept(match)
            if span is None:
                # A rejected candidate may hide a valid one starting later inside it.
                pos = match.start() + 1
            else:
                yield span
                pos = max(span[1], match.start() + 1)


@dataclass(frozen=True, slots=True)
class Detector:
    name: str
    rules: tuple[Rule, ...]

    def spans(self, text: str) -> Iterator[Span]:
        for rule in self.rules:
            for start, end in rule.spans(text):
                yield Span(self.name, start, end)


def _whole(check: Callable[[str], bool]) -> Accept:
    return lambda match: match.span() if check(match.group(0)) else None


def _matched(match: re.Match[str]) -> tuple[int, int]:
    return match.span()


# --- email ----------------------------------------------------------------------------------------
# Found from each `@` outwards (a scan for one character is fast; a pattern that starts with
# the local part would be tried at every letter of the text). `%40` is an `@` percent-encoded
# in a URL query (`?email=jo%40example.com`). An `@` followed by `host:path` is an scp-style
# git remote, not an address.
_AT_RE = re.compile(r"@|%40")
_DOMAIN_RE = re.compile(r"(?:[A-Za-z0-9\-]{1,63}\.)+[A-Za-z]{2,24}(?![A-Za-z0-9_\-]|\.[A-Za-z0-9]|:[A-Za-z~/_])")
_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-")
# Image/file suffixes are not TLDs: `icon@2x.png`, `logo@3x.webp`.
_FILE_SUFFIXES = frozenset(
    ("png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "tif", "tiff", "pdf", "js", "css", "html", "json", "txt")
)


def _email(match: re.Match[str]) -> tuple[int, int] | None:
    text, at = match.string, match.start()
    start = at
    while start > 0 and at - start < 64 and text[start - 1] in _LOCAL_CHARS:
        start -= 1
    if (
        start == at
        or text[start] in ".+-"
        or (start > 0 and (text[start - 1] in _LOCAL_CHARS or text[start - 1] == "%"))
    ):
        return None  # no local part, a local part longer than 64, or one glued to `%2B…`
    domain = _DOMAIN_RE.match(text, match.end())
    if domain is None:
        return None
    labels = domain.group(0).split(".")
    if any(label.startswith("-") or label.endswith("-") for label in labels) or labels[-1].lower() in _FILE_SUFFIXES:
        return None
    return start, domain.end()


# --- phone ----------------------------------------------------------------------------------------
# Groups of digits (or a parenthesised area code) joined by one separator; the validator judges
# the shape. Not after a word, a path, a number and its separator, or a decimal point; a national
# number not after `:` either (`10:30`), while `tel:+1…` is a phone. Each branch starts with its
# first character and checks what precedes it afterwards: a pattern that opens with a lookbehind
# makes the regex engine try every position, one that opens with a character class lets it skip.
_PHONE_GROUP = r"(?:\([0-9]{1,5}\)|[0-9]{1,15}+)"
_PHONE_MORE = rf"(?:(?:[ .\-]|(?<=\))|(?=\())\ ?{_PHONE_GROUP})"
_PHONE_RE = re.compile(
    rf"(?:(\+)(?<![\w+\-./@#$€£]\+)(?<![0-9][ .\-]\+){_PHONE_GROUP}{_PHONE_MORE}{{0,7}}"
    rf"|\((?<![\w+\-./:@#$€£]\()(?<![0-9][ .\-]\()[0-9]{{1,5}}\){_PHONE_MORE}{{1,7}}"
    rf"|[0-9](?<![\w+\-./:@#$€£][0-9])(?<![0-9][ .\-][0-9])[0-9]{{0,14}}+{_PHONE_MORE}{{1,7}})"
    r"(?![\w]|[.\-:/,]?[0-9])"
)
_DIGIT_GROUPS = re.compile(r"\(?([0-9]+)\)?")


def _phone(match: re.Match[str]) -> tuple[int, int] | None:
    text = match.group(0)
    groups = _DIGIT_GROUPS.findall(text)
    digits = sum(len(g) for g in groups)
    if match.group(1):  # international: the `+` is the signal, separators optional
        return match.span() if 8 <= digits <= 15 else None
    if text.startswith("("):
        shaped = len(groups) >= 3 or (len(groups) == 2 and len(groups[1]) >= 7)
        return match.span() if shaped and 10 <= digits <= 11 else None
    if not 10 <= digits <= 12 or any(len(g) < 2 for g in groups):
        return None  # versions (`10.0.19041.1234`) and ISBNs have single-digit groups
    if len(groups) == 2:
        # `07700 900123`, `030 1234567`: a trunk prefix, then the subscriber number
        trunk = groups[0].startswith("0") and 3 <= len(groups[0]) <= 5 and len(groups[1]) >= 6
        return match.span() if trunk else None
    if all(len(g) == 3 for g in groups[1:]):
        return None  # thousands separators: `12 345 678 901`, `1.234.567.890`
    if all(len(g) == 4 for g in groups):
        return None  # ids in fours: AWS account `1234-5678-9012`, licence keys
    separators = set(re.sub(r"[0-9]", "", text))
    return match.span() if len(separators) == 1 else None  # `2024-01-15 1030` is two tokens


# --- card -----------------------------------------------------------------------------------------
_CARD_RE = re.compile(
    r"[0-9](?<![\w+\-./:][0-9])(?<![0-9][ \-][0-9])"
    r"(?:[0-9]{12,18}+|[0-9]{3}(?:[ \-][0-9]{1,7}+){1,5})"
    r"(?![\w]|[.\-][0-9])"
)


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_number(digits: str) -> bool:
    if not 13 <= len(digits) <= 19 or not luhn(digits):
        return False
    return digits[0] in "3456" or 2221 <= int(digits[:4]) <= 2720


def _card(match: re.Match[str]) -> tuple[int, int] | None:
    text, start = match.group(0), match.start()
    if text.isdigit():
        return match.span() if _card_number(text) else None
    if len(set(re.sub(r"[0-9]", "", text))) != 1:
        return None  # `4242-4242 4242-4242` mixes separators: not one number
    # The number may be followed by another group (`… 4242 12/26`): try shorter prefixes.
    ends = [m.end() for m in re.finditer(r"[0-9]+", text)]
    for end in reversed(ends):
        if _card_number(re.sub(r"\D", "", text[:end])):
            return start, start + end
    return None


# --- ssn ------------------------------------------------------------------------------------------
_SSN_RE = re.compile(
    r"[0-9](?<![\w\-./][0-9])[0-9][0-9](?<!000|666)(?<!9[0-9][0-9])-(?!00)[0-9]{2}-(?!0000)[0-9]{4}(?![\w\-]|\.[0-9])"
)


# --- iban -----------------------------------------------------------------------------------------
# Lengths from the SWIFT IBAN registry.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28,
    "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22,
    "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
_IBAN_RE = re.compile(
    r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z][0-9]{2}(?: ?[A-Z0-9]{4}){2,8}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])"
)


def iban_valid(compact: str) -> bool:
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _iban(match: re.Match[str]) -> tuple[int, int] | None:
    text, start = match.group(0), match.start()
    length = IBAN_LENGTHS.get(text[:2])
    if length is None:
        return None
    # Find where the IBAN's `length` characters end; anything after it must start a new token.
    seen = 0
    for i, ch in enumerate(text):
        if ch != " ":
            seen += 1
        if seen == length:
            end = i + 1
            if end < len(text) and text[end] != " ":
                return None
            return (start, start + end) if iban_valid(text[:end].replace(" ", "")) else None
    return None


# --- ip -------------------------------------------------------------------------------------------
_IPV4_RE = re.compile(r"[0-9](?<![\w.\-][0-9])[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?![\w\-]|\.[0-9])")
# Two colons within the first groups; what precedes the candidate is checked in `_ipv6`.
_IPV6_RE = re.compile(r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]{0,41}+(?![\w])")


def _ipv4(text: str) -> bool:
    octets = text.split(".")
    if any(len(o) > 1 and o[0] == "0" for o in octets) or any(int(o) > 255 for o in octets):
        return False
    return _public(ipaddress.IPv4Address(text))


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Addresses that identify nobody: loopback, unspecified, broadcast, netmasks."""
    if address.is_loopback or address.is_unspecified:
        return False
    if address.version == 4:
        value = int(address)
        inverted = ~value & 0xFFFFFFFF
        if value >> 24 == 0xFF and inverted & (inverted + 1) == 0:
            return False  # 255.255.255.0, 255.255.255.255
    return True


def _ipv6(match: re.Match[str]) -> tuple[int, int] | None:
    text, start = match.group(0), match.start()
    if start and (match.string[start - 1].isalnum() or match.string[start - 1] in "_:."):
        return None
    for candidate in (text, text.rstrip(".:")):
        if not any(ch.isdigit() for ch in candidate):
            return None  # `dead::beef`, `a::b` read as words, not addresses
        try:
            address = ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        return (start, start + len(candidate)) if _public(address) else None
    return None


# --- secrets --------------------------------------------------------------------------------------
_AWS_KEY_RE = re.compile(r"A(?<![A-Za-z0-9]A)(?:KIA|SIA)[A-Z2-7]{16}(?![A-Za-z0-9])")

_JWT_RE = re.compile(
    r"(eyJ(?<![A-Za-z0-9_\-]eyJ)[A-Za-z0-9_\-]+)\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*+(?![A-Za-z0-9_\-.])"
)


def _jwt(match: re.Match[str]) -> tuple[int, int] | None:
    header = match.group(1)
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return None
    return match.span() if isinstance(decoded, dict) and "alg" in decoded else None


_TOKEN_RE = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:"
    r"sk-[A-Za-z0-9_\-]{20,}+"
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}+"
    r"|gh[pousr]_[A-Za-z0-9]{36,}+"
    r"|github_pat_[A-Za-z0-9_]{22,}+"
    r"|xox[abpr]-[A-Za-z0-9\-]{10,}+"
    r"|AIza[A-Za-z0-9_\-]{35}"
    r")(?![A-Za-z0-9_\-])"
)
_TOKEN_HINTS = ("sk-", "sk_", "rk_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox", "AIza")


def _token(match: re.Match[str]) -> tuple[int, int] | None:
    token = match.group(0)
    if token.startswith("sk-") and not (re.search(r"[0-9]", token) and re.search(r"[A-Za-z]", token[3:])):
        return None  # `sk-` slugs made of words
    return match.span()


# The value after a credential's name: `api_key=…`, `"password": "…"`, `Client-Secret: …`, and
# the same in JSON encoded once more as a JSON string (`\"password\": \"…\"`).
_KEY_NAMES = (
    r"api[_\-]?key|apikey|api[_\-]?secret|api[_\-]?token|client[_\-]?secret|secret[_\-]?key|"
    r"access[_\-]?token|refresh[_\-]?token|id[_\-]?token|auth[_\-]?token|private[_\-]?key|"
    r"aws[_\-]?secret[_\-]?access[_\-]?key|password|passwd|pwd"
)
_ASSIGNMENT_RE = re.compile(
    rf"(?<![A-Za-z0-9])(?i:{_KEY_NAMES})(?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?(?P<value>[^\s\"'`,;&<>\\]{{8,}})"
)
_ASSIGNMENT_HINTS = ("key", "secret", "token", "passw", "pwd")
_PLACEHOLDER_RE = re.compile(r"^(?:[<{\[(%$]|(.)\1+$|(?i:null|none|undefined|redacted|changeme)$)")


_SECRET_CHARS_RE = re.compile(r"[0-9_+/=!@#$%^*~]")


def _assignment(match: re.Match[str]) -> tuple[int, int] | None:
    value = match.group("value")
    if _PLACEHOLDER_RE.match(value):
        return None
    # Secrets have digits or symbols, or are long; `Password: requirements…` is prose.
    return match.span("value") if _SECRET_CHARS_RE.search(value) or len(value) >= 24 else None


# A literal first lets the regex engine skip ahead; the boundary is checked behind it.
_BEARER_RE = re.compile(r"Bearer(?<![A-Za-z0-9]Bearer)\s+(?P<value>[A-Za-z0-9._~+/\-]{16,}+=*)")


def _bearer(match: re.Match[str]) -> tuple[int, int] | None:
    return match.span("value") if re.search(r"[0-9]", match.group("value")) else None


# The password in a URL's userinfo: `https://user:password@host`.
_URL_PASSWORD_RE = re.compile(r"://[^\s/?#@:\"'<>]{1,128}:(?P<value>[^\s/?#@\"'<>]{1,256})@")


DETECTORS: dict[str, Detector] = {
    d.name: d
    for d in (
        Detector(JWT, (Rule(_JWT_RE, _jwt, ("eyJ",)),)),
        Detector(AWS_ACCESS_KEY, (Rule(_AWS_KEY_RE, _matched, ("AKIA", "ASIA")),)),
        Detector(
            API_KEY,
            (
                Rule(_TOKEN_RE, _token, _TOKEN_HINTS),
                Rule(_ASSIGNMENT_RE, _assignment, _ASSIGNMENT_HINTS, fold_case=True),
                Rule(_BEARER_RE, _bearer, ("Bearer",)),
                Rule(_URL_PASSWORD_RE, lambda m: m.span("value"), ("://",)),
            ),
        ),
        Detector(EMAIL, (Rule(_AT_RE, _email),)),
        Detector(IBAN, (Rule(_IBAN_RE, _iban),)),
        Detector(CARD, (Rule(_CARD_RE, _card),)),
        Detector(SSN, (Rule(_SSN_RE, _matched, ("-",)),)),
        Detector(IP, (Rule(_IPV6_RE, _ipv6, (":",)), Rule(_IPV4_RE, _whole(_ipv4), (".",)))),
        Detector(PHONE, (Rule(_PHONE_RE, _phone),)),
    )
}
"""Name -> detector, in priority order: where two detectors' spans overlap, the earlier wins."""


def find_spans(text: str, names: Iterable[str] | None = None) -> list[Span]:
    """Non-overlapping spans of the named detectors (default: all) in `text`, in text order."""
    wanted = DETECTORS.keys() if names is None else set(names)
    starts: list[int] = []
    kept: list[Span] = []
    for name, detector in DETECTORS.items():
        if name not in wanted:
            continue
        for span in detector.spans(text):
            i = bisect.bisect_left(starts, span.start)
            if (i and kept[i - 1].end > span.start) or (i < len(kept) and kept[i].start < span.end):
                continue  # overlaps a span of an earlier (higher-priority) detector
            starts.insert(i, span.start)
            kept.insert(i, span)
    return kept
