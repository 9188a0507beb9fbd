"""tools/call arguments, checked against the tool's `inputSchema` before anything is sent upstream.

JSON Schema 2020-12 (or the draft a schema names in `$schema`), with the `jsonschema` library;
one validator is compiled per schema and kept (a schema is the tool's published definition, so a
changed definition gets a new validator). A refusal names the field and the rule that failed,
never the value: arguments may carry PII. No `$ref` is ever fetched from the network.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from tollway.errors import ArgumentsRefused, MalformedParams

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

VALIDATOR_CACHE_SIZE = 1024


def check_arguments(tool: str, schema: dict[str, Any], arguments: Any) -> None:
    """ArgumentsRefused naming the first failing field and rule, unless `arguments` fit `schema`;
    MalformedParams when they are no object at all (the request itself is malformed) or the
    schema cannot be applied."""
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise MalformedParams(f"Invalid params: arguments of tool '{tool}' must be an object")
    from jsonschema.exceptions import best_match

    validator = _validator(json.dumps(schema, sort_keys=True, separators=(",", ":")))
    try:
        error = best_match(validator.iter_errors(arguments))
    except RecursionError:
        raise ArgumentsRefused(tool, "arguments: nested too deeply") from None
    except Exception as exc:  # boundary: a schema jsonschema cannot apply (an unresolvable $ref)
        from tollway.telemetry import logger

        logger.warning("input schema unusable", extra={"tool": tool, "error": type(exc).__name__})
        raise MalformedParams(f"Invalid params: the input schema of tool '{tool}' cannot be checked") from None
    if error is not None:
        raise ArgumentsRefused(tool, _describe(error))


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why `schema` is not a usable JSON Schema, or None (checked once per distinct schema)."""
    return _schema_problem(json.dumps(schema, sort_keys=True, separators=(",", ":")))


@lru_cache(maxsize=VALIDATOR_CACHE_SIZE)
def _schema_problem(canonical: str) -> str | None:
    from jsonschema.exceptions import SchemaError

    try:
        _validator(canonical)
    except SchemaError as exc:
        return f"inputSchema is not a valid JSON Schema ({exc.validator} at {'/'.join(map(str, exc.path)) or 'root'})"
    except RecursionError:
        return "inputSchema is nested too deeply"
    return None


@lru_cache(maxsize=VALIDATOR_CACHE_SIZE)
def _validator(canonical: str) -> Validator:
    from jsonschema.validators import Draft202012Validator, validator_for
    from referencing import Registry

    schema = json.loads(canonical)
    cls = validator_for(schema, default=Draft202012Validator)
    cls.check_schema(schema)
    # An empty registry: a `$ref` to anything outside the schema is unresolvable, never fetched.
    return cls(schema, registry=Registry())


def _describe(error: Any) -> str:
    """`arguments.items[2].id: required` — where, and which rule; no value."""
    where = "arguments" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    if error.validator == "required":
        missing = [k for k in error.validator_value if isinstance(error.instance, dict) and k not in error.instance]
        return f"{where}: missing required field {', '.join(map(repr, missing))}"
    if error.validator == "additionalProperties":
        return f"{where}: has a field the schema does not allow"
    if error.validator == "type":
        return f"{where}: must be of type {error.validator_value}"
    return f"{where}: fails the schema's '{error.validator}' rule"
