"""Field rules: configured actions on paths of a tool's arguments and structured results.

Paths are dotted, optionally `$`-prefixed, with list wildcards and indexes:
`customer.email`, `$.account.iban`, `items[*].email`, `rows[0].total`, `totals.*`,
`$['odd.key']`. A path that is absent from a value is skipped (fields are often optional).

| action   | strings             | numbers                           | dicts and lists           |
| -------- | ------------------- | --------------------------------- | ------------------------- |
| `mask`   | `"****"`            | `0` (`0.0`), booleans `false`     | each value masked         |
| `remove` | the key (or list element) is dropped                                                |
| `hash`   | `"h_" + 16 hex`: HMAC-SHA256 over tenant and value; same value, same token within a |
|          | tenant, unrelated tokens across tenants (joins work, lookups across tenants do not) |
| `round`  | numeric strings     | to `digits` places (negative:     | each value rounded        |
|          | stay strings        | tens, hundreds…), half up, type   |                           |
|          |                     | kept                              |                           |
| `bucket` | the range the number falls in: `"<1000"`, `"1000-5000"`, `">=10000"`               |

`mask` keeps each value's JSON type, so a result still validates against the tool's
`outputSchema` (MCP clients check it); `remove` and `bucket` change the shape on purpose.
`round` and `bucket` mask a value that is not a number rather than let it through. Nulls
stay null.

Why not Powertools `DataMasking.erase`: it works without a KMS provider and takes these
paths (jsonpath-ng), but jsonpath-ng is not in the layer (Powertools' `datamasking` extra also
pulls the AWS Encryption SDK), importing it costs ~100 ms of cold start, every call re-parses
each path (~1 ms per rule), `erase` turns numbers into the string `"*****"`, warns on absent
fields, and has no `remove`, `hash`, `round` or `bucket` — those need this walker anyway,
and one walker keeps one path syntax for every action.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable, Iterator
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from itertools import pairwise
from typing import Any

from tollway import shapes
from tollway.config import FieldRule
from tollway.errors import ConfigError

MASKED = "****"
TOO_DEEP_TO_RULE = "[withheld by Tollway: JSON nested too deeply for this tool's field rules]"
HASH_PREFIX = "h_"
HASH_HEX_CHARS = 16

_ALL = ("*",)
Step = tuple[str] | tuple[str, str | int]
"""`("*",)` every item or value; `("key", name)`; `("index", n)`."""

_TOKEN_RE = re.compile(
    r"\.?(?:\[(?:(?P<all>\*)|(?P<index>-?\d+)|'(?P<sq>[^']*)'|\"(?P<dq>[^\"]*)\")\]|(?P<star>\*)|(?P<name>[^.\[\]]+))"
)


class PathError(ValueError):
    pass


@lru_cache(maxsize=512)
def parse_path(path: str) -> tuple[Step, ...]:
    """`items[*].email` -> `(("key", "items"), ("*",), ("key", "email"))`; `$` alone is the root."""
    offset = 1 if path.startswith("$") else 0
    text = path[offset:]
    steps: list[Step] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None or match.end() == pos:
            raise PathError(f"invalid field path {path!r} at position {pos + offset}")
        if match["all"] or match["star"]:
            steps.append(_ALL)
        elif match["index"] is not None:
            steps.append(("index", int(match["index"])))
        else:
            name = next(g for g in (match["sq"], match["dq"], match["name"]) if g is not None)
            steps.append(("key", name))
        pos = match.end()
    if not steps and not offset:
        raise PathError("empty field path")
    return tuple(steps)


def check_field_rules(rules: Iterable[FieldRule], where: str) -> None:
    """ConfigError naming `where` for a path that cannot be parsed or a rule that cannot act."""
    for i, rule in enumerate(rules):
        try:
            steps = parse_path(rule.path)
        except PathError as exc:
            raise ConfigError(f"{where}[{i}].path: {exc}") from None
        if rule.action == "remove" and not steps:
            raise ConfigError(f"{where}[{i}]: the root cannot be removed")
        if rule.action == "bucket" and (not rule.buckets or sorted(set(rule.buckets)) != list(rule.buckets)):
            raise ConfigError(f"{where}[{i}].buckets: bucket needs strictly ascending bounds")


def apply_field_rules(value: Any, rules: Iterable[FieldRule], hash_key: bytes, tenant: str) -> Any:
    """A copy of `value` with each rule applied in order (the input is not modified)."""
    rules = list(rules)
    if not rules:
        return value
    box = {"$": shapes.copy(value)}
    for rule in rules:
        steps = (("key", "$"), *parse_path(rule.path))
        if rule.action == "remove":
            _remove(box, steps)
        else:
            transform = _transform(rule, hash_key, tenant)
            for parent, key in list(_targets(box, steps)):
                parent[key] = transform(parent[key])
    return box.get("$")


def apply_result_field_rules(
    result: dict[str, Any], rules: Iterable[FieldRule], hash_key: bytes, tenant: str
) -> dict[str, Any]:
    """Field rules on a tools/call result: on `structuredContent`, and on each text block that
    holds JSON (servers send the structured result again as text; masking one copy only would
    leak it through the other). Other text is left to the detectors."""
    rules = list(rules)
    if not rules:
        return result
    changes: list[tuple[shapes.Path, Any]] = []
    if "structuredContent" in result:
        changes.append(
            (("structuredContent",), apply_field_rules(result["structuredContent"], rules, hash_key, tenant))
        )
    for path, block in shapes.blocks(result):
        text = block.get("text") if block.get("type") == "text" else None
        if isinstance(text, str) and text.lstrip().startswith(("{", "[")):
            try:
                parsed = json.loads(text)
            except (ValueError, RecursionError):
                continue
            if shapes.depth(parsed) > shapes.MAX_DEPTH:
                # Too deep to rule with certainty: it is not delivered rather than delivered unruled.
                changes.append(((*path, "text"), TOO_DEEP_TO_RULE))
                continue
            changed = apply_field_rules(parsed, rules, hash_key, tenant)
            if changed != parsed:
                changes.append(((*path, "text"), json.dumps(changed, ensure_ascii=False)))
    return shapes.replace(result, changes)


# --- walking --------------------------------------------------------------------------------------
def _children(node: Any, step: Step) -> Iterator[tuple[Any, Any]]:
    """(container, key) pairs the step selects in `node`."""
    if step is _ALL or step == _ALL:
        if isinstance(node, dict):
            yield from ((node, k) for k in list(node))
        elif isinstance(node, list):
            yield from ((node, i) for i in range(len(node)))
    elif step[0] == "key":
        if isinstance(node, dict) and step[1] in node:
            yield node, step[1]
    elif isinstance(node, list) and -len(node) <= step[1] < len(node):  # type: ignore[operator]
        yield node, step[1] % len(node)  # type: ignore[operator]


def _targets(root: Any, steps: tuple[Step, ...]) -> Iterator[tuple[Any, Any]]:
    if len(steps) == 1:
        yield from _children(root, steps[0])
        return
    for container, key in _children(root, steps[0]):
        yield from _targets(container[key], steps[1:])


def _remove(root: Any, steps: tuple[Step, ...]) -> None:
    targets = list(_targets(root, steps))
    # List elements go last-first, so earlier indexes stay valid.
    for container, key in sorted(targets, key=lambda t: t[1] if isinstance(t[0], list) else 0, reverse=True):
        del container[key]


# --- actions --------------------------------------------------------------------------------------
def _transform(rule: FieldRule, hash_key: bytes, tenant: str) -> Callable[[Any], Any]:
    if rule.action == "mask":
        leaf: Callable[[Any], Any] = _mask
    elif rule.action == "hash":
        prefix = tenant.encode() + b"\x00"
        leaf = lambda v: _hash(v, hash_key, prefix)  # noqa: E731
    elif rule.action == "round":
        leaf = lambda v: _round(v, rule.digits)  # noqa: E731
    else:
        bounds = list(rule.buckets)
        leaf = lambda v: _bucket(v, bounds)  # noqa: E731
    return lambda value: _each_leaf(value, leaf)


def _each_leaf(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """`value` with `leaf` applied to every scalar in it but null (iterative: any depth)."""
    if not isinstance(value, dict | list):
        return None if value is None else leaf(value)
    root = shapes.copy(value)
    stack = [root]
    while stack:
        node = stack.pop()
        for key in list(node.keys() if isinstance(node, dict) else range(len(node))):
            child = node[key]
            if isinstance(child, dict | list):
                stack.append(child)
            elif child is not None:
                node[key] = leaf(child)
    return root


def _mask(value: Any) -> Any:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0
    if isinstance(value, float):
        return 0.0
    return MASKED


def _hash(value: Any, key: bytes, prefix: bytes) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    digest = hmac.new(key, prefix + text.encode(), hashlib.sha256).hexdigest()
    return HASH_PREFIX + digest[:HASH_HEX_CHARS]


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
    else:
        return None
    return number if number.is_finite() else None


def _round(value: Any, digits: int) -> Any:
    number = _number(value)
    if number is None:
        return _mask(value)
    if isinstance(value, int) and digits >= 0:
        return value
    rounded = number.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    if isinstance(value, int):
        return int(rounded)
    if isinstance(value, float):
        return float(rounded)
    return format(rounded, "f")


def _bound(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else format(bound, "g")


def _bucket(value: Any, bounds: list[float]) -> Any:
    number = _number(value)
    if number is None or not bounds:
        return MASKED
    if number < Decimal(repr(bounds[0])):
        return f"<{_bound(bounds[0])}"
    for low, high in pairwise(bounds):
        if number < Decimal(repr(high)):
            return f"{_bound(low)}-{_bound(high)}"
    return f">={_bound(bounds[-1])}"
