"""The result guard: instruction-like text in a tool result, flagged, wrapped or withheld
(`definitions.result_injection`). Every copy of the result is covered: text blocks, embedded
resource text and every string of `structuredContent`, through the one walker (`shapes.texts`)."""

from __future__ import annotations

import re
from typing import Any

from tollway import shapes
from tollway.errors import ResultWithheld
from tollway.masking.rules import INVISIBLE_UNICODE, RANK, SECRET_ACCESS, Finding, scan_string

INJECTION_META_KEY = "io.tollway/injection"
UNTRUSTED_OPEN = "<untrusted-data>"
UNTRUSTED_CLOSE = "</untrusted-data>"


def scan_result_text(text: str, *, item_name: str = "", field_path: str = "text") -> list[Finding]:
    """Prompt-injection findings (medium and high only) in one piece of result text."""
    found: dict[str, Finding] = {}
    for category, severity, excerpt in scan_string(text, field="value", max_chars=None):
        if category == INVISIBLE_UNICODE or RANK[severity] < RANK["medium"]:
            continue  # zero-width characters alone are common in real-world data
        if category == SECRET_ACCESS and severity != "high":
            continue  # data mentioning a path or a password is not an instruction
        current = found.get(category)
        if current is None or RANK[severity] > RANK[current.severity]:
            found[category] = Finding("result", item_name, field_path, category, severity, excerpt)
    return list(found.values())


def guard_result(result: dict[str, Any], mode: str, *, item_name: str = "") -> dict[str, Any]:
    """Apply `result_injection` to a tools/call result.

    `off`: unchanged. `flag`: `_meta["io.tollway/injection"] = {"findings": [categories]}`.
    `wrap`: each suspicious string (text content, embedded resource text, a string of
    `structuredContent`) becomes `<untrusted-data>\n…\n</untrusted-data>` (a string stays a
    string, so the structured result keeps its shape), plus the `_meta` flag.
    `block`: raises `ResultWithheld`. Returns the input itself when nothing is found, else a new
    dict (the input is not modified).
    """
    if mode == "off":
        return result
    findings: list[Finding] = []
    suspicious: list[tuple[shapes.Path, str]] = []
    for path, text in shapes.texts(result):
        hits = scan_result_text(text, item_name=item_name, field_path=shapes.path_text(path))
        if hits:
            findings.extend(hits)
            suspicious.append((path, text))
    if not findings:
        return result
    categories = list(dict.fromkeys(f.category for f in findings))
    if mode == "block":
        raise ResultWithheld(data={"findings": categories})
    changes = [(path, wrap_untrusted(text)) for path, text in suspicious] if mode == "wrap" else []
    meta = {**(result.get("_meta") or {}), INJECTION_META_KEY: {"findings": categories}}
    return shapes.replace(result, [*changes, (("_meta",), meta)])


def wrap_untrusted(text: str) -> str:
    """Quote text as data; a marker inside cannot close the quote early."""
    text = re.sub(r"<\s*(/?)\s*untrusted-data\s*>", r"[\1untrusted-data]", text, flags=re.IGNORECASE)
    return f"{UNTRUSTED_OPEN}\n{text}\n{UNTRUSTED_CLOSE}"
