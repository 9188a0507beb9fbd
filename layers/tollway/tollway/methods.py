"""The methods the gateway routes to an upstream, described once.

Each routed method names one tool, prompt or resource. The table says where that name is in the
params, which list it comes from (so the policy step can find its definition), how a name
nobody serves is answered, whether the call is metered (quota, usage), whether it passes the
definition gate, and which eras have it. The pipeline, the policy step and the router all read
this table; none of them switches on method names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from tollway import spec
from tollway.errors import GatewayError, InvalidParams, MalformedParams, ResourceNotFound


class Routed(NamedTuple):
    method: str
    list_key: Callable[[dict[str, Any]], str]
    """The list the named item comes from: `tools`, `prompts` or `resources`."""
    name_path: Callable[[dict[str, Any]], tuple[str, ...]]
    """Where the public name (or URI) is in the params."""
    unknown: Callable[[str], GatewayError]
    """The answer for a name no upstream serves, or that the caller may not use (the same one)."""
    check: Callable[[dict[str, Any]], None]
    """MalformedParams for params that break the method's shape."""
    metered: bool = False
    """Charged against quotas and recorded as usage."""
    safe: bool = True
    """Reads only: the router may repeat it after a failure (tools/call: only idempotent tools)."""
    guarded: bool = False
    """Its result passes the result guard (`definitions.result_injection`)."""
    gated: bool = True
    """The named item must pass the policy step (definition gate, authorization)."""
    modern: bool = True
    """Offered in the 2026-07-28 era too (some methods were removed there)."""

    def name(self, params: dict[str, Any]) -> str:
        value: Any = params
        for key in self.name_path(params):
            value = value[key]
        return str(value)

    def renamed(self, params: dict[str, Any], own: str) -> dict[str, Any]:
        """The params with the upstream's own name in place of the public one."""
        *parents, last = self.name_path(params)
        if not parents:
            return {**params, last: own}
        return {**params, parents[0]: {**params[parents[0]], last: own}}


def _string(params: dict[str, Any], key: str, where: str = "params") -> None:
    if not isinstance(params.get(key), str) or not params[key]:
        raise MalformedParams(f"Invalid params: {where}.{key} must be a non-empty string")


def _object(params: dict[str, Any], key: str, *, values: type | None = None) -> None:
    value = params.get(key)
    if value is None:
        return
    if not isinstance(value, dict) or (values is not None and not all(isinstance(v, values) for v in value.values())):
        kind = f"an object of {values.__name__}s" if values is str else "an object"
        raise MalformedParams(f"Invalid params: params.{key} must be {kind}")


def _check_call(params: dict[str, Any]) -> None:
    _string(params, "name")
    _object(params, "arguments")


def _check_prompt(params: dict[str, Any]) -> None:
    _string(params, "name")
    _object(params, "arguments", values=str)


def _check_uri(params: dict[str, Any]) -> None:
    _string(params, "uri")


def _check_complete(params: dict[str, Any]) -> None:
    ref, argument = params.get("ref"), params.get("argument")
    if not isinstance(ref, dict) or ref.get("type") not in ("ref/prompt", "ref/resource"):
        raise MalformedParams("Invalid params: params.ref must be a ref/prompt or ref/resource reference")
    _string(ref, "name" if ref["type"] == "ref/prompt" else "uri", "params.ref")
    if not isinstance(argument, dict) or not isinstance(argument.get("name"), str):
        raise MalformedParams("Invalid params: params.argument must have a string name")
    if not isinstance(argument.get("value"), str):
        raise MalformedParams("Invalid params: params.argument must have a string value")
    _object(params, "context")


def _ref_list(params: dict[str, Any]) -> str:
    return "prompts" if params["ref"]["type"] == "ref/prompt" else "resources"


def _ref_name(params: dict[str, Any]) -> tuple[str, ...]:
    return ("ref", "name") if params["ref"]["type"] == "ref/prompt" else ("ref", "uri")


def _unknown_resource(uri: str) -> GatewayError:
    return ResourceNotFound(data={"uri": uri})


ROUTED: dict[str, Routed] = {
    r.method: r
    for r in (
        Routed(
            "tools/call",
            lambda p: "tools",
            lambda p: ("name",),
            lambda name: InvalidParams(f"Unknown tool: {name}"),
            _check_call,
            metered=True,
            safe=False,
            guarded=True,
        ),
        Routed(
            "prompts/get",
            lambda p: "prompts",
            lambda p: ("name",),
            lambda name: InvalidParams(f"Unknown prompt: {name}"),
            _check_prompt,
        ),
        Routed("resources/read", lambda p: "resources", lambda p: ("uri",), _unknown_resource, _check_uri),
        Routed(
            "completion/complete",
            _ref_list,
            _ref_name,
            lambda name: InvalidParams("Unknown reference"),
            _check_complete,
        ),
        Routed(
            "resources/subscribe",
            lambda p: "resources",
            lambda p: ("uri",),
            _unknown_resource,
            _check_uri,
            modern=False,
        ),
        Routed(
            "resources/unsubscribe",
            lambda p: "resources",
            lambda p: ("uri",),
            _unknown_resource,
            _check_uri,
            gated=False,  # ending a subscription never needs permission
            modern=False,
        ),
    )
}

OWN_LEGACY_ONLY = frozenset({"ping", "logging/setLevel"})
"""Methods the gateway answers itself that 2026-07-28 removed (a stateless client gets -32601)."""
OWN_MODERN_ONLY = frozenset({"server/discover", "subscriptions/listen"})


def check_envelope(params: dict[str, Any]) -> None:
    """What every request's params must satisfy, whatever the method."""
    _object(params, "_meta")
    _object(params, "inputResponses")
    if "requestState" in params and not isinstance(params["requestState"], str):
        raise MalformedParams("Invalid params: params.requestState must be a string")


def check_level(params: dict[str, Any]) -> str:
    level = params.get("level")
    if level not in spec.LOG_LEVELS:
        raise MalformedParams(f"Invalid params: params.level must be one of {', '.join(spec.LOG_LEVELS)}")
    return str(level)
