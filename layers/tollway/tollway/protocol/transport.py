"""Streamable HTTP, inbound: checks on the exchange itself, then the era and its envelope.

`read_post` turns a POST into one validated JSON-RPC message or raises the GatewayError
the caller must see. Era rule (as the SDK's server): an MCP-Protocol-Version header that
is not a 2025 handshake version selects the stateless 2026-07-28 path, whose envelope is
then checked rung by rung; everything else is the 2025 session era.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Literal, NamedTuple

from starlette.requests import Request

from tollway import shapes
from tollway import spec as c
from tollway.config import HttpConfig
from tollway.errors import (
    SCOPE_MODERN,
    SCOPE_REQUEST_ID,
    ForbiddenOrigin,
    HeaderMismatch,
    InvalidRequest,
    MalformedParams,
    MisdirectedHost,
    NotAcceptable,
    ParseError,
    PayloadTooLarge,
    UnsupportedMediaType,
    UnsupportedModernVersion,
    UnsupportedVersion,
)

Kind = Literal["request", "notification", "response"]


class Incoming(NamedTuple):
    message: dict[str, Any]
    kind: Kind
    modern: bool
    protocol_version: str
    session_id: str | None
    accepts_sse: bool
    forward_headers: dict[str, str]
    """`Mcp-Param-*` headers of a 2026-07-28 call (none in the 2025 era)."""

    @property
    def method(self) -> str:
        return str(self.message.get("method", ""))

    @property
    def params(self) -> dict[str, Any]:
        return self.message.get("params") or {}


def check_origin(request: Request, http: HttpConfig) -> None:
    """403 for a browser origin not allowed by config; 421 for a foreign Host where hosts are pinned.

    Runs as its own middleware ahead of authentication (`OriginGuard`), so a DNS-rebinding or
    cross-site request is refused as such before any token is looked at."""
    origin = request.headers.get("origin")
    if origin and not any(_wildcard(p).fullmatch(origin) for p in http.allowed_origins or ()):
        raise ForbiddenOrigin()
    if http.allowed_hosts is not None:
        host = request.headers.get("host", "")
        if not any(_wildcard(p).fullmatch(host) for p in http.allowed_hosts):
            raise MisdirectedHost()


@lru_cache(maxsize=64)
def _wildcard(pattern: str) -> re.Pattern[str]:
    """An allow-list entry: `*` matches anything, every other character only itself (so the
    brackets of `[::1]:*` are an IPv6 host, not a character class)."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.IGNORECASE)


def is_modern(request: Request) -> bool:
    version = request.headers.get(c.PROTOCOL_VERSION_HEADER)
    return version is not None and version not in c.HANDSHAKE_VERSIONS and c.SESSION_ID_HEADER not in request.headers


async def read_post(request: Request, http: HttpConfig) -> Incoming:
    """The one JSON-RPC message of a POST. The era, and the request id once it is known, are
    published on the ASGI scope for whoever answers a failure (the error middleware)."""
    modern = request.scope[SCOPE_MODERN] = is_modern(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != c.CONTENT_TYPE_JSON:
        raise UnsupportedMediaType()
    accepts_json, accepts_sse = _accepts(request.headers.get("accept", ""))
    if not accepts_json:
        raise NotAcceptable()
    message = _parse(await _read_body(request, http.max_body_bytes))
    kind = _kind(message)
    if "id" in message:
        request.scope[SCOPE_REQUEST_ID] = message["id"]
    if modern:
        version = _check_modern(request, message, kind)
        return Incoming(message, kind, True, version, None, accepts_sse, _param_headers(request))
    version = request.headers.get(c.PROTOCOL_VERSION_HEADER)
    if version is not None and version not in c.HANDSHAKE_VERSIONS:
        raise UnsupportedVersion(data={"supported": list(c.HANDSHAKE_VERSIONS), "requested": version})
    return Incoming(
        message,
        kind,
        False,
        version or c.DEFAULT_HANDSHAKE_VERSION,
        request.headers.get(c.SESSION_ID_HEADER),
        accepts_sse,
        {},
    )


def _accepts(header: str) -> tuple[bool, bool]:
    types = {part.split(";")[0].strip().lower() for part in header.split(",")}
    wildcard = "*/*" in types
    return (
        wildcard or bool(types & {c.CONTENT_TYPE_JSON, "application/*"}),
        wildcard or bool(types & {c.CONTENT_TYPE_SSE, "text/*"}),
    )


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(data={"maxBytes": limit})
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(data={"maxBytes": limit})
    return bytes(body)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _parse(body: bytes) -> dict[str, Any]:
    """JSON as RFC 8259 has it: UTF-8, no NaN or Infinity, no lone UTF-16 surrogate (`\\ud800`
    parses in Python, then cannot be written as UTF-8 again); one object, nested at most
    `shapes.MAX_DEPTH` levels (whatever depth the parser itself could read)."""
    too_deep = InvalidRequest(f"Invalid request: nested deeper than {shapes.MAX_DEPTH} levels")
    try:
        # Decoded here: given bytes, `json.loads` would also accept UTF-16 and UTF-32.
        message = json.loads(body.decode("utf-8"), parse_constant=_not_json)
    except RecursionError:
        raise too_deep from None
    except ValueError:  # UnicodeError is a ValueError
        raise ParseError() from None
    if shapes.depth(message) > shapes.MAX_DEPTH:
        raise too_deep
    if _SURROGATE_ESCAPE.search(body):
        try:
            json.dumps(message, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise ParseError() from None
    if isinstance(message, list):
        raise InvalidRequest("Invalid request: batch requests are not supported")
    if not isinstance(message, dict):
        raise InvalidRequest("Invalid request: body must be one JSON-RPC object")
    return message


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _kind(message: dict[str, Any]) -> Kind:
    if message.get("jsonrpc") != "2.0":
        raise InvalidRequest('Invalid request: "jsonrpc" must be "2.0"')
    has_id = "id" in message
    if has_id and not _valid_id(message["id"]):
        raise InvalidRequest("Invalid request: id must be a string or an integer")
    if "method" in message:
        if not isinstance(message["method"], str) or not message["method"]:
            raise InvalidRequest("Invalid request: method must be a non-empty string")
        if "params" in message and not isinstance(message["params"], dict):
            raise InvalidRequest("Invalid request: params must be an object")
        return "request" if has_id else "notification"
    if has_id and (("result" in message) != ("error" in message)):
        return "response"
    raise InvalidRequest("Invalid request: not a JSON-RPC request, notification or response")


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _check_modern(request: Request, message: dict[str, Any], kind: Kind) -> str:
    """The 2026-07-28 ladder; first failing rung wins. Returns the protocol version."""
    header_version = _field(request, c.PROTOCOL_VERSION_HEADER) or ""
    if kind == "response":
        raise InvalidRequest("Invalid request: responses are not accepted at this protocol version")
    if kind == "notification":
        _require_supported(header_version)
        return header_version
    seen: set[str] = set()
    for raw_name, _ in request.headers.raw:
        name = raw_name.decode("latin-1").lower()
        if name in (c.PROTOCOL_VERSION_HEADER, c.METHOD_HEADER, c.NAME_HEADER):
            if name in seen:
                raise HeaderMismatch(f"{name} header appears more than once")
            seen.add(name)
    meta = message.get("params", {}).get("_meta") if isinstance(message.get("params"), dict) else None
    if not isinstance(meta, dict):
        raise MalformedParams(
            f"params._meta must be an object carrying {c.META_PROTOCOL_VERSION!r} and {c.META_CLIENT_CAPABILITIES!r}"
        )
    missing = [k for k in (c.META_PROTOCOL_VERSION, c.META_CLIENT_CAPABILITIES) if k not in meta]
    if missing:
        raise MalformedParams(f"params._meta is missing the required envelope key(s): {', '.join(missing)}")
    body_version = meta[c.META_PROTOCOL_VERSION]
    if header_version != body_version:
        raise HeaderMismatch("mcp-protocol-version header does not match the request envelope's protocol version")
    method = message["method"]
    if _field(request, c.METHOD_HEADER) != method:
        raise HeaderMismatch("mcp-method header does not match the request body's method")
    name_key = c.NAME_BEARING_METHODS.get(method)
    if name_key is not None:
        body_name = message["params"].get(name_key)
        # A name that is not a string is the params check's to refuse (-32602), not a mismatch.
        if isinstance(body_name, str) and c.decode_header_value(_field(request, c.NAME_HEADER)) != body_name:
            raise HeaderMismatch(f"mcp-name header does not match the request body's {name_key!r} parameter")
    _require_supported(body_version)
    return body_version


def _field(request: Request, name: str) -> str | None:
    """A header's value without the optional whitespace around it (RFC 9110 5.5: not part of it)."""
    value = request.headers.get(name)
    return value.strip(" \t") if value is not None else None


def _require_supported(version: str) -> None:
    if version not in c.MODERN_VERSIONS:
        raise UnsupportedModernVersion(data={"supported": list(c.MODERN_VERSIONS), "requested": version})


def _param_headers(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k.startswith(c.PARAM_HEADER_PREFIX)}
