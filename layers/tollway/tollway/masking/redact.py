"""Mask what the detectors find, in text, in any JSON value and in MCP results.

Masks keep the value's shape where a part of it is useful and safe, and name the detector
where nothing is:

| detector                          | example                       | masked                        |
| --------------------------------- | ----------------------------- | ----------------------------- |
| `email`                           | `john.doe@example.com`        | `j***@example.com`            |
| `phone`                           | `+1 415-555-2671`             | `+* ***-***-**71`             |
| `card`                            | `4242 4242 4242 4242`         | `**** **** **** 4242`         |
| `ssn`                             | `123-45-6789`                 | `***-**-6789`                 |
| `iban`                            | `GB82 WEST 1234 5698 7654 32` | `GB82 **** **** **** **54 32` |
| `ip`, `aws_access_key`, `jwt`,    | `AKIAIOSFODNN7EXAMPLE`        | `[REDACTED:aws_access_key]`   |
| `api_key`                         | `api_key=abcd1234efgh5678`    | `api_key=[REDACTED:api_key]`  |

Digits and letters are masked one for one and separators are kept, so a card stays a card
to a reader and a layout keeps its columns; the email's domain is kept (which company, not
who). No mask contains a quote or a backslash, so JSON carried as text stays valid JSON.

Only string values are scanned; dictionary keys, numbers, booleans and nulls are kept as they
are (a number that is a card belongs to a field rule, `fields.py`). Findings are counts per
detector, never the values: they are safe to log and audit.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from itertools import accumulate
from typing import Any

from tollway import shapes
from tollway.errors import ConfigError
from tollway.masking.detectors import (
    API_KEY,
    AWS_ACCESS_KEY,
    CARD,
    DETECTORS,
    EMAIL,
    IBAN,
    IP,
    JWT,
    PHONE,
    SSN,
    find_spans,
)

Findings = list[tuple[str, int]]
"""(detector, count) in detector priority order; never the matched values."""

_MIN_LENGTH = 6
"""Nothing shorter can hold a finding (`a@b.co`)."""


def _keep_last(text: str, keep: int, keep_first: int = 0) -> str:
    """Mask letters and digits one for one, except the first `keep_first` and the last `keep`."""
    positions = [i for i, ch in enumerate(text) if ch.isalnum()]
    shown = set(positions[:keep_first]) | set(positions[len(positions) - keep :] if keep else ())
    return "".join(ch if (i in shown or not ch.isalnum()) else "*" for i, ch in enumerate(text))


def _email(text: str) -> str:
    separator = "@" if "@" in text else "%40"
    domain = text.split(separator, 1)[1]
    return f"{text[0]}***{separator}{domain}"


def _redacted(name: str) -> Callable[[str], str]:
    marker = f"[REDACTED:{name}]"
    return lambda _: marker


MASKS: dict[str, Callable[[str], str]] = {
    EMAIL: _email,
    PHONE: lambda text: _keep_last(text, 2),
    CARD: lambda text: _keep_last(text, 4),
    SSN: lambda text: _keep_last(text, 4),
    IBAN: lambda text: _keep_last(text, 4, keep_first=4),
    IP: _redacted(IP),
    AWS_ACCESS_KEY: _redacted(AWS_ACCESS_KEY),
    JWT: _redacted(JWT),
    API_KEY: _redacted(API_KEY),
}


def check_detectors(names: Iterable[str], where: str) -> None:
    """ConfigError naming `where` if a detector name is unknown (called at load time)."""
    unknown = [name for name in names if name not in DETECTORS]
    if unknown:
        known = ", ".join(DETECTORS)
        raise ConfigError(f"{where}: unknown detector(s) {', '.join(map(repr, unknown))}; known: {known}")


class Redactor:
    """Masks the findings of the configured detectors (`masking.detectors`).

    `skip` on each call names detectors not applied (a tool's `allow_detectors`).
    Every method returns a new value (the input is never modified) and the findings;
    when nothing is found, the input itself is returned.
    """

    def __init__(self, detectors: Iterable[str] = tuple(DETECTORS)) -> None:
        names = list(detectors)
        check_detectors(names, "masking.detectors")
        self.detectors: tuple[str, ...] = tuple(name for name in DETECTORS if name in names)

    def redact_text(self, text: str, skip: Collection[str] = ()) -> tuple[str, Findings]:
        value, findings = self._redact([((), text)], text, skip)
        return value, findings

    def redact_value(self, value: Any, skip: Collection[str] = ()) -> tuple[Any, Findings]:
        """Any JSON value: strings are redacted, keys and other scalars kept, shape unchanged."""
        return self._redact(list(shapes.strings(value)), value, skip)

    def redact_mcp_result(self, result: dict[str, Any], skip: Collection[str] = ()) -> tuple[dict[str, Any], Findings]:
        """The text an agent reads in a result, its schema untouched.

        tools/call: `content[]` text and embedded resource text, and `structuredContent`
        (every string in it); resources/read: `contents[].text`; prompts/get:
        `messages[].content` text and embedded resource text. Binary data (`blob`, image and
        audio `data`), URIs, MIME types, names and `_meta` are left as they are.
        """
        return self._redact(list(shapes.texts(result)), result, skip)

    def _redact(self, slots: list[tuple[shapes.Path, str]], root: Any, skip: Collection[str]) -> tuple[Any, Findings]:
        names = tuple(name for name in self.detectors if name not in skip) if skip else self.detectors
        if not names or not slots:
            return root, []
        # One pass over all the strings joined by newlines, not one per string: a result is
        # often many short strings, and per-call overhead would dominate. No detector's span
        # can contain a newline, so no finding crosses from one string into the next.
        texts = [text for _, text in slots]
        joined = "\n".join(texts)
        spans = find_spans(joined, names) if len(joined) >= _MIN_LENGTH else []
        if not spans:
            return root, []
        offsets = list(accumulate((len(t) + 1 for t in texts[:-1]), initial=0))
        counts: Counter[str] = Counter()
        pieces: dict[int, list[str]] = {}
        cursor: dict[int, int] = {}
        for span in spans:
            i = bisect.bisect_right(offsets, span.start) - 1
            start, end = span.start - offsets[i], span.end - offsets[i]
            text = texts[i]
            parts = pieces.setdefault(i, [])
            parts.append(text[cursor.get(i, 0) : start])
            parts.append(MASKS[span.detector](text[start:end]))
            cursor[i] = end
            counts[span.detector] += 1
        changes = [(slots[i][0], "".join(parts) + texts[i][cursor[i] :]) for i, parts in pieces.items()]
        findings = [(name, counts[name]) for name in self.detectors if counts[name]]
        return shapes.replace(root, changes), findings
