"""MCP message shapes: the one walker over results, and what a valid result or definition is.

The walker is iterative (a value nested deeper than Python's recursion limit is walked like any
other) and knows where MCP results keep what an agent reads: content blocks (text, embedded
resources), structured content, resource contents and prompt messages. Redaction, field rules,
the result guard, truncation and URI re-publishing all walk results through it.

The checks say whether an upstream's answer is MCP, as the official SDK client would parse it,
without importing the SDK's models (`mcp_types` costs ~270 ms of import on the first request);
a unit test holds them to `mcp_types` on a corpus of valid and invalid examples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

Path = tuple[str | int, ...]

MAX_DEPTH = 100
"""Deepest nesting accepted in a message, in either direction (arrays and objects)."""
MAX_SCHEMA_DEPTH = 64
"""Deepest nesting accepted in a tool's input or output schema."""


# --- walking ------------------------------------------------------------------------------------
def strings(value: Any, path: Path = ()) -> Iterator[tuple[Path, str]]:
    """Every string in a JSON value (not keys), depth first, with its path."""
    stack: list[tuple[Path, Any]] = [(path, value)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, str):
            yield where, node
        elif isinstance(node, dict):
            stack.extend(reversed([((*where, key), item) for key, item in node.items()]))
        elif isinstance(node, list):
            stack.extend(reversed([((*where, i), item) for i, item in enumerate(node)]))


def blocks(result: dict[str, Any]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The content blocks of a tools/call result (`content[]`) or a prompt (`messages[].content`)."""
    content = result.get("content")
    if isinstance(content, list):
        for i, block in enumerate(content):
            if isinstance(block, dict):
                yield ("content", i), block
    messages = result.get("messages")
    if isinstance(messages, list):
        for i, message in enumerate(messages):
            block = message.get("content") if isinstance(message, dict) else None
            if isinstance(block, dict):
                yield ("messages", i, "content"), block


def texts(result: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    """The text an agent reads in a result: text blocks, embedded resource text, `contents[].text`
    (resources/read) and every string of `structuredContent`. Binary data, URIs, MIME types,
    names and `_meta` are not text."""
    yield from _fields(result, "text")
    if "structuredContent" in result:
        yield from strings(result["structuredContent"], ("structuredContent",))


def uris(result: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    """Every resource URI a result names: resource links, embedded resources, resource contents."""
    return _fields(result, "uri")


_CARRIER = {"text": "text", "uri": "resource_link"}
"""Field -> the type of content block that carries it itself (others carry it in an embedded resource)."""


def _fields(result: dict[str, Any], key: str) -> Iterator[tuple[Path, str]]:
    for path, block in blocks(result):
        if block.get("type") == _CARRIER[key] and isinstance(block.get(key), str):
            yield (*path, key), block[key]
        resource = block.get("resource")
        if block.get("type") == "resource" and isinstance(resource, dict) and isinstance(resource.get(key), str):
            yield (*path, "resource", key), resource[key]
    contents = result.get("contents")
    if isinstance(contents, list):
        for i, item in enumerate(contents):
            if isinstance(item, dict) and isinstance(item.get(key), str):
                yield ("contents", i, key), item[key]


def replace(root: Any, changes: Iterable[tuple[Path, Any]]) -> Any:
    """`root` with the value at each path replaced. Containers on those paths are copied once;
    everything else is shared with the input, which is never modified."""
    copies: dict[int, Any] = {}

    def copy_of(node: Any) -> Any:
        copied = copies.get(id(node))
        if copied is None:
            copied = copies[id(node)] = dict(node) if isinstance(node, dict) else list(node)
        return copied

    new_root = root
    for path, value in changes:
        if not path:
            new_root = value
            continue
        if new_root is root:
            new_root = copy_of(root)
        original, node = root, new_root
        for key in path[:-1]:
            original = original[key]
            node[key] = node = copy_of(original)
        node[path[-1]] = value
    return new_root


def copy(value: Any) -> Any:
    """A deep copy of a JSON value, at any depth."""
    if not isinstance(value, dict | list):
        return value
    root = dict(value) if isinstance(value, dict) else list(value)
    stack = [root]
    while stack:
        node = stack.pop()
        keys = node.keys() if isinstance(node, dict) else range(len(node))
        for key in keys:
            child = node[key]
            if isinstance(child, dict | list):
                node[key] = dict(child) if isinstance(child, dict) else list(child)
                stack.append(node[key])
    return root


def depth(value: Any) -> int:
    """How deeply arrays and objects nest in a JSON value (a scalar: 0)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            stack.extend((child, level + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, level + 1) for child in node)
        else:
            continue
        deepest = max(deepest, level + 1)
    return deepest


def path_text(path: Path) -> str:
    """`("content", 0, "text")` -> `content[0].text`, for logs and findings."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


# --- what is valid ------------------------------------------------------------------------------
def check_result(method: str, result: Any) -> str | None:
    """Why `result` is not a valid MCP result of `method`, or None when it is."""
    if not isinstance(result, dict):
        return "result is not an object"
    if "_meta" in result and not isinstance(result["_meta"], dict):
        return "_meta is not an object"
    if result.get("resultType") == "input_required":
        requests, state = result.get("inputRequests"), result.get("requestState")
        if (requests is None and state is None) or not isinstance(requests, dict | None):
            return "input_required result without inputRequests or requestState"
        return None if isinstance(state, str | None) else "requestState is not a string"
    check = _RESULT_CHECKS.get(method)
    return check(result) if check is not None else None


LIST_KEYS = {
    "tools/list": "tools",
    "prompts/list": "prompts",
    "resources/list": "resources",
    "resources/templates/list": "resourceTemplates",
}
"""List method -> the result key holding its items."""


def definition_name(kind: str, definition: dict[str, Any]) -> str:
    """The identifier a definition is known by (pins, findings): a resource's `uri`, a template's
    `uriTemplate`, else its `name`. `kind`: `tool`, `resource`, `resource_template` or `prompt`."""
    if kind == "resource":
        return str(definition.get("uri") or definition.get("name") or "")
    if kind == "resource_template":
        return str(definition.get("uriTemplate") or definition.get("name") or "")
    return str(definition.get("name") or "")


def check_definition(list_key: str, item: Any) -> str | None:
    """Why a listed definition (an item of `tools`, `prompts`, `resources` or `resourceTemplates`)
    is not valid MCP, or None when it is."""
    if not isinstance(item, dict):
        return "not an object"
    if depth(item) > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH}"
    name_key = {"resources": "uri", "resourceTemplates": "uriTemplate"}.get(list_key, "name")
    for key in dict.fromkeys((name_key, "name")):
        if not isinstance(item.get(key), str) or not item[key]:
            return f"{key} is not a non-empty string"
    why = _optional(item, "title", str) or _optional(item, "description", str) or _optional(item, "annotations", dict)
    if why is None and list_key == "tools":
        why = _check_schema(item, "inputSchema", required=True) or _check_schema(item, "outputSchema", required=False)
    if why is None and list_key == "prompts":
        arguments = item.get("arguments")
        if arguments is not None and not (
            isinstance(arguments, list)
            and all(isinstance(a, dict) and isinstance(a.get("name"), str) for a in arguments)
        ):
            why = "arguments is not a list of named arguments"
    return why


def _check_schema(item: dict[str, Any], key: str, *, required: bool) -> str | None:
    schema = item.get(key)
    if schema is None and not required:
        return None
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return f"{key} is not an object schema"
    if depth(schema) > MAX_SCHEMA_DEPTH:
        return f"{key} is nested deeper than {MAX_SCHEMA_DEPTH}"
    return None


def _items(result: dict[str, Any], key: str, check: Callable[[Any], str | None] | None = None) -> str | None:
    """`result[key]` must be a list, each item passing `check`."""
    items = result.get(key)
    if not isinstance(items, list):
        return f"{key} is not a list"
    return _first(check(item) for item in items) if check is not None else None


def _check_message(message: Any) -> str | None:
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
        return "a message has no valid role"
    return _check_block(message.get("content"))


def _check_completion(result: dict[str, Any]) -> str | None:
    completion = result.get("completion")
    if not isinstance(completion, dict):
        return "completion is not an object"
    values = completion.get("values")
    if not isinstance(values, list) or len(values) > 100 or not all(isinstance(v, str) for v in values):
        return "completion.values is not a list of at most 100 strings"
    return _optional(completion, "total", int) or _optional(completion, "hasMore", bool)


def _check_block(block: Any) -> str | None:
    """A content block as the schema has it (the members the SDK clients type-check)."""
    if not isinstance(block, dict):
        return "a content block is not an object"
    common = _check_annotations(block) or _optional(block, "_meta", dict)
    kind = block.get("type")
    if kind == "text":
        return _required(block, "text", str) or common
    if kind in ("image", "audio"):
        return _required(block, "data", str) or _required(block, "mimeType", str) or common
    if kind == "resource_link":
        return (
            _required(block, "uri", str)
            or _required(block, "name", str)
            or _first(_optional(block, key, str) for key in ("title", "description", "mimeType"))
            or _optional_number(block, "size")
            or common
        )
    if kind == "resource":
        return _check_contents(block.get("resource")) or common
    return f"unknown content block type {str(kind)[:40]!r}"


def _check_annotations(block: dict[str, Any]) -> str | None:
    if "annotations" not in block or block["annotations"] is None:
        return None
    annotations = block["annotations"]
    if not isinstance(annotations, dict):
        return "annotations is not an object"
    audience = annotations.get("audience")
    if audience is not None and not (isinstance(audience, list) and all(r in ("user", "assistant") for r in audience)):
        return "annotations.audience is not a list of roles"
    priority = annotations.get("priority")
    if _optional_number(annotations, "priority") or (priority is not None and not 0 <= priority <= 1):
        return "annotations.priority is not a number from 0 to 1"
    return _optional(annotations, "lastModified", str)


def _check_contents(item: Any) -> str | None:
    if not isinstance(item, dict) or not isinstance(item.get("uri"), str):
        return "resource contents without a uri"
    if not isinstance(item.get("text"), str) and not isinstance(item.get("blob"), str):
        return "resource contents without text or blob"
    return _optional(item, "mimeType", str) or _optional(item, "_meta", dict)


def _check_call_result(result: dict[str, Any]) -> str | None:
    return (
        _items(result, "content", _check_block)
        or _optional(result, "isError", bool, nullable=False)
        or _optional(result, "structuredContent", dict)
        or _optional(result, "_meta", dict)
    )


def _optional_number(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return None
    return f"{key} is not a number"


def _required(item: dict[str, Any], key: str, kind: type) -> str | None:
    return None if isinstance(item.get(key), kind) else f"{key} is not a {kind.__name__}"


def _optional(item: dict[str, Any], key: str, kind: type, *, nullable: bool = True) -> str | None:
    """`nullable`: whether null stands for absent (as the SDK clients read most optional members)."""
    if key not in item:
        return None
    value = item[key]
    if (value is None and nullable) or (isinstance(value, kind) and (kind is not int or not isinstance(value, bool))):
        return None
    return f"{key} is not a {kind.__name__}"


def _first(reasons: Iterable[str | None]) -> str | None:
    return next((reason for reason in reasons if reason is not None), None)


_RESULT_CHECKS: dict[str, Callable[[dict[str, Any]], str | None]] = {
    "tools/call": _check_call_result,
    "prompts/get": lambda r: _items(r, "messages", _check_message) or _optional(r, "description", str),
    "resources/read": lambda r: _items(r, "contents", _check_contents),
    "completion/complete": _check_completion,
    **{
        method: lambda r, key=key: _items(r, key) or _optional(r, "nextCursor", str)  # type: ignore[misc]
        for method, key in LIST_KEYS.items()
    },
}
"""Method -> the check of its result (methods not here: any object). `isError: null` is refused:
the official Python client fails on it."""
