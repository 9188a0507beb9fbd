"""Definition poisoning: scan an upstream's tool, resource and prompt definitions, decide by
policy, and sanitize what may be published after cleaning (`definitions` in gateway.yaml).

Every string the model reads is scanned (names, titles, descriptions, schema descriptions,
titles, defaults, enums, prompt arguments) with the rules of `masking.rules`. URLs are only
looked for in descriptions and titles; schema `default`/`enum` values may be URLs. A finding in
a value the gateway cannot rewrite without changing the tool's contract (a name, a property
name, an `enum`/`const` value) is always high.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from tollway import shapes
from tollway.config import DefinitionPolicy
from tollway.masking.rules import RANK, Finding, clean_text, scan_string

Action = Literal["allow", "warn", "sanitize", "block"]
_ACTION_RANK: dict[str, int] = {"allow": 0, "warn": 1, "sanitize": 2, "block": 3}


FieldType = Literal["text", "value", "contract", "name"]
"""`text`: titles and descriptions (every rule); `value`: schema defaults and examples (no URL or
size rule); `contract`: `enum`/`const` values (as `value`, always high: they cannot be rewritten);
`name`: identifiers (invisible characters only, high)."""

Location = shapes.Path
_Field = tuple[Location, str, FieldType, Location]
"""(where the string is, the string, field type, the key a sanitizer acts on)."""


def _definition_strings(kind: str, definition: dict[str, Any]) -> Iterator[_Field]:
    for key in ("name", "uri", "uriTemplate"):
        if isinstance(definition.get(key), str):
            yield (key,), definition[key], "name", (key,)
    for key in ("title", "description"):
        if isinstance(definition.get(key), str):
            yield (key,), definition[key], "text", (key,)
    annotations = definition.get("annotations")
    if isinstance(annotations, dict) and isinstance(annotations.get("title"), str):
        yield ("annotations", "title"), annotations["title"], "text", ("annotations", "title")
    if kind == "tool":
        for key in ("inputSchema", "outputSchema"):
            if isinstance(definition.get(key), dict):
                yield from _schema_strings(definition[key], (key,))
    if kind == "prompt" and isinstance(definition.get("arguments"), list):
        for i, argument in enumerate(definition["arguments"]):
            if not isinstance(argument, dict):
                continue
            for key in ("name", "title", "description"):
                if isinstance(argument.get(key), str):
                    loc = ("arguments", i, key)
                    yield loc, argument[key], "name" if key == "name" else "text", loc


_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def _schema_strings(root: Any, root_loc: Location) -> Iterator[_Field]:
    # Iterative: an upstream's schema may be nested deeper than Python's recursion limit.
    stack: list[tuple[Any, Location]] = [(root, root_loc)]
    while stack:
        node, loc = stack.pop()
        children: list[tuple[Any, Location]] = []
        if isinstance(node, list):
            children = [(item, (*loc, i)) for i, item in enumerate(node)]
        elif isinstance(node, dict):
            for key, value in node.items():
                at = (*loc, key)
                if key in ("title", "description") and isinstance(value, str):
                    yield at, value, "text", at
                elif key in ("default", "examples", "enum", "const"):
                    field: FieldType = "contract" if key in ("enum", "const") else "value"
                    for sub_loc, text in shapes.strings(value, at):
                        yield sub_loc, text, field, at
                elif key in _SCHEMA_MAPS and isinstance(value, dict):
                    for name, schema in value.items():
                        # A property name is part of the contract and is read by the model.
                        yield (*at, name), str(name), "name", (*at, name)
                        children.append((schema, (*at, name)))
                elif isinstance(value, dict | list):
                    children.append((value, at))
        stack.extend(reversed(children))


def scan_definition(kind: str, definition: dict[str, Any], max_description_chars: int = 2000) -> list[Finding]:
    """Every poisoning finding in one upstream definition, at most one per (field, category):
    the most severe. `kind`: `tool`, `resource`, `resource_template` or `prompt`."""
    name = shapes.definition_name(kind, definition)
    best: dict[tuple[str, str], Finding] = {}
    for loc, text, field, _ in _definition_strings(kind, definition):
        hits = scan_string(
            text,
            field="value" if field == "contract" else field,
            max_chars=max_description_chars if field == "text" and loc[-1] == "description" else None,
        )
        path = shapes.path_text(loc)
        for category, severity, excerpt in hits:
            if field in ("contract", "name"):
                severity = "high"
            key = (path, category)
            current = best.get(key)
            if current is None or RANK[severity] > RANK[current.severity]:
                best[key] = Finding(kind, name, path, category, severity, excerpt)
    return list(best.values())


def decide(findings: list[Finding], policy: DefinitionPolicy) -> Action:
    """The strictest action the policy names for the severities found (`allow` for none).

    With the usual ordering (high strictest) that is the worst severity's action."""
    action: Action = "allow"
    for finding in findings:
        candidate = getattr(policy, finding.severity)
        if _ACTION_RANK[candidate] > _ACTION_RANK[action]:
            action = candidate
    return action


def sanitize_definition(
    definition: dict[str, Any], findings: list[Finding], max_description_chars: int = 2000
) -> dict[str, Any]:
    """A copy with each field that has a finding cleaned: invisible characters removed, tag
    blocks and instruction sentences removed, URLs replaced by `[link removed]`, descriptions
    cut to `max_description_chars` with a marker, poisoned schema `default`/`examples` dropped.

    Names, property names and `enum`/`const` values are left as they are (rewriting them
    would change the tool's contract); their findings are high, so policy normally blocks.
    The result keeps the MCP shape: same name, `inputSchema` still an object schema.
    """
    clean: dict[str, Any] = shapes.copy(definition)
    if not findings:
        return clean
    flagged = {f.field_path for f in findings}
    fields = [f for f in _definition_strings(findings[0].kind, clean) if shapes.path_text(f[0]) in flagged]
    drops: dict[Location, None] = {}
    for loc, text, field, anchor in fields:
        if field == "text":
            _at(clean, loc[:-1])[loc[-1]] = clean_text(
                text, max_description_chars if loc[-1] == "description" else None
            )
        elif field == "value":
            drops[anchor] = None
    for anchor in drops:
        _at(clean, anchor[:-1]).pop(anchor[-1], None)
    return clean


def _at(root: Any, loc: Location) -> Any:
    node = root
    for part in loc:
        node = node[part]
    return node


@dataclass(frozen=True)
class Screened:
    """What the policy made of one definition: the definition to publish (None: withheld)."""

    definition: dict[str, Any] | None
    action: Action
    findings: list[Finding]


def screen_definition(kind: str, definition: dict[str, Any], policy: DefinitionPolicy) -> Screened:
    """Scan, decide and apply in one step: block -> None, sanitize -> cleaned copy, else as is."""
    findings = scan_definition(kind, definition, policy.max_description_chars)
    action = decide(findings, policy)
    if action == "block":
        return Screened(None, action, findings)
    if action == "sanitize":
        return Screened(sanitize_definition(definition, findings, policy.max_description_chars), action, findings)
    return Screened(definition, action, findings)
