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

from collections import Counter
from collections.abc import Callable, Collection, Iterable
from typing import Any

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
"""Nothing shorter can hold a finding (`a@b.co`): short strings skip the detectors."""


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

    def _active(self, skip: Collection[str]) -> tuple[str, ...]:
        return tuple(name for name in self.detectors if name not in skip) if skip else self.detectors

    def redact_text(self, text: str, skip: Collection[str] = ()) -> tuple[str, Findings]:
        counts: Counter[str] = Counter()
        return self._text(text, self._active(skip), counts), self._findings(counts)

    def redact_value(self, value: Any, skip: Collection[str] = ()) -> tuple[Any, Findings]:
        """Any JSON value: strings are redacted, keys and other scalars kept, shape unchanged."""
        counts: Counter[str] = Counter()
        return self._value(value, self._active(skip), counts), self._findings(counts)

    def redact_mcp_result(self, result: dict[str, Any], skip: Collection[str] = ()) -> tuple[dict[str, Any], Findings]:
        """The text an agent reads in a result, its schema untouched.

        tools/call: `content[]` text and embedded resource text, and `structuredContent`
        (every string in it); resources/read: `contents[].text`; prompts/get:
        `messages[].content` text and embedded resource text. Binary data (`blob`, image and
        audio `data`), URIs, MIME types, names and `_meta` are left as they are.
        """
        names = self._active(skip)
        counts: Counter[str] = Counter()
        out = result
        if isinstance(result.get("content"), list):
            out = _replace(out, "content", [self._block(b, names, counts) for b in result["content"]])
        if "structuredContent" in result:
            out = _replace(out, "structuredContent", self._value(result["structuredContent"], names, counts))
        if isinstance(result.get("contents"), list):
            contents = [_with_text(c, lambda t: self._text(t, names, counts)) for c in result["contents"]]
            out = _replace(out, "contents", contents)
        if isinstance(result.get("messages"), list):
            messages = [self._message(m, names, counts) for m in result["messages"]]
            out = _replace(out, "messages", messages)
        return out, self._findings(counts)

    # --- walking ----------------------------------------------------------------------------------
    def _text(self, text: str, names: tuple[str, ...], counts: Counter[str]) -> str:
        if len(text) < _MIN_LENGTH or not names:
            return text
        spans = find_spans(text, names)
        if not spans:
            return text
        parts: list[str] = []
        pos = 0
        for span in spans:
            parts.append(text[pos : span.start])
            parts.append(MASKS[span.detector](text[span.start : span.end]))
            counts[span.detector] += 1
            pos = span.end
        parts.append(text[pos:])
        return "".join(parts)

    def _value(self, value: Any, names: tuple[str, ...], counts: Counter[str]) -> Any:
        if isinstance(value, str):
            return self._text(value, names, counts)
        if isinstance(value, dict):
            items = {key: self._value(item, names, counts) for key, item in value.items()}
            return value if all(items[k] is value[k] for k in value) else items
        if isinstance(value, list):
            elements = [self._value(item, names, counts) for item in value]
            return value if all(a is b for a, b in zip(elements, value, strict=True)) else elements
        return value

    def _block(self, block: Any, names: tuple[str, ...], counts: Counter[str]) -> Any:
        """One content block: text, or an embedded resource's text."""
        if not isinstance(block, dict):
            return block
        if block.get("type") == "text":
            return _with_text(block, lambda t: self._text(t, names, counts))
        if block.get("type") == "resource" and isinstance(block.get("resource"), dict):
            resource = _with_text(block["resource"], lambda t: self._text(t, names, counts))
            return _replace(block, "resource", resource)
        return block

    def _message(self, message: Any, names: tuple[str, ...], counts: Counter[str]) -> Any:
        if not isinstance(message, dict):
            return message
        content = message.get("content")
        if isinstance(content, list):
            return _replace(message, "content", [self._block(b, names, counts) for b in content])
        return _replace(message, "content", self._block(content, names, counts))

    def _findings(self, counts: Counter[str]) -> Findings:
        return [(name, counts[name]) for name in self.detectors if counts[name]]


def _replace(container: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """`container` with `key` set to `value`: a copy only when the value changed."""
    old = container.get(key)
    if value is old or (isinstance(value, list) and isinstance(old, list) and _same(value, old)):
        return container
    return {**container, key: value}


def _same(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _with_text(item: Any, redact: Callable[[str], str]) -> Any:
    if not isinstance(item, dict) or not isinstance(item.get("text"), str):
        return item
    return _replace(item, "text", redact(item["text"]))
