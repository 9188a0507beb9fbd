"""Re-publishing: an upstream's own names and URIs, as callers of the gateway know them.

Definitions get their public name (`<prefix>__<name>`, `<prefix>+<uri>`); results and errors
get every resource URI they name mapped back (resource links, embedded resources, resource
contents, an error's `data.uri`), through the one walker over result shapes.
"""

from __future__ import annotations

from typing import Any

from tollway import shapes
from tollway.config import UpstreamConfig
from tollway.routing.namespace import Namespace

NAME_FIELD = {"tools": "name", "prompts": "name", "resources": "uri", "resourceTemplates": "uriTemplate"}
"""List key -> the field a definition is known by."""


def definition(item: dict[str, Any], list_key: str, public: str) -> dict[str, Any]:
    """A definition under its public name."""
    return {**item, NAME_FIELD[list_key]: public}


def result(namespace: Namespace, upstream: UpstreamConfig, result: dict[str, Any]) -> dict[str, Any]:
    """A result with every resource URI it names in its public form."""
    changes = [(path, namespace.public_uri(upstream, uri) or uri) for path, uri in shapes.uris(result)]
    return shapes.replace(result, changes) if changes else result


def error(namespace: Namespace, upstream: UpstreamConfig, error: dict[str, Any]) -> dict[str, Any]:
    """An upstream error naming a URI ("Resource not found": `data.uri`) names the public one."""
    data = error.get("data")
    if isinstance(data, dict) and isinstance(data.get("uri"), str):
        return {**error, "data": {**data, "uri": namespace.public_uri(upstream, data["uri"]) or data["uri"]}}
    return error
