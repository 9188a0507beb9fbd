"""The wire of both MCP eras: header names, versions, JSON-RPC codes, the header value codec.

Kept as plain constants so the request path does not import the SDK's models
(`mcp_types` costs ~200 ms at cold start). A unit test pins them to `mcp_types`.
"""

import base64
import re
from typing import Final

# Protocol revisions the gateway serves.
HANDSHAKE_VERSIONS: Final = ("2025-03-26", "2025-06-18", "2025-11-25")
"""2025-era revisions: initialize handshake + Mcp-Session-Id."""
LATEST_HANDSHAKE_VERSION: Final = HANDSHAKE_VERSIONS[-1]
DEFAULT_HANDSHAKE_VERSION: Final = "2025-03-26"
"""What a 2025-era request without MCP-Protocol-Version is taken to speak (spec)."""
MODERN_VERSIONS: Final = ("2026-07-28",)
"""Stateless revisions: per-request `_meta` envelope, routing headers, no session."""
LATEST_MODERN_VERSION: Final = MODERN_VERSIONS[-1]
RESUMABLE_STREAMS_FROM: Final = "2025-11-25"
"""From this revision on (SEP-1699), a server may close a request's event stream mid-call; its
client resumes it with GET and `Last-Event-ID` (a priming event gives the id first)."""
ARGUMENT_ERRORS_AS_RESULTS_FROM: Final = "2025-11-25"
"""From this revision on (SEP-1303), arguments a tool's inputSchema refuses are a tool execution
error (a result with `isError`, which a model can read and correct), no longer -32602."""

# HTTP headers (lowercase, as ASGI delivers them).
SESSION_ID_HEADER: Final = "mcp-session-id"
PROTOCOL_VERSION_HEADER: Final = "mcp-protocol-version"
METHOD_HEADER: Final = "mcp-method"
NAME_HEADER: Final = "mcp-name"
PARAM_HEADER_PREFIX: Final = "mcp-param-"
LAST_EVENT_ID_HEADER: Final = "last-event-id"

# Request `_meta` keys of the 2026-07-28 envelope.
META_PROTOCOL_VERSION: Final = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_INFO: Final = "io.modelcontextprotocol/clientInfo"
META_CLIENT_CAPABILITIES: Final = "io.modelcontextprotocol/clientCapabilities"
META_SERVER_INFO: Final = "io.modelcontextprotocol/serverInfo"
META_SUBSCRIPTION_ID: Final = "io.modelcontextprotocol/subscriptionId"
"""On every frame of a 2026-07-28 `subscriptions/listen` stream: the listen request's id."""
LISTEN_ACKNOWLEDGED: Final = "notifications/subscriptions/acknowledged"
LISTEN_FLAGS: Final = {
    "toolsListChanged": "tools",
    "promptsListChanged": "prompts",
    "resourcesListChanged": "resources",
}
"""A listen filter's list-changed flags -> the capability whose `listChanged` delivers them."""

# Method -> params key mirrored in the Mcp-Name header (2026-07-28).
NAME_BEARING_METHODS: Final = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}

# JSON-RPC error codes.
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
CONNECTION_CLOSED: Final = -32000
REQUEST_TIMEOUT: Final = -32001
RESOURCE_NOT_FOUND: Final = -32002
HEADER_MISMATCH: Final = -32020
MISSING_REQUIRED_CLIENT_CAPABILITY: Final = -32021
UNSUPPORTED_PROTOCOL_VERSION: Final = -32022
RATE_LIMITED: Final = -32029
"""A call refused by a rate limit or quota (server-defined range)."""
REQUEST_CANCELLED: Final = -32800
"""A 2025-era server's answer to a request its client cancelled (the SDK's code)."""

LOG_LEVELS: Final = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
"""`logging/setLevel` levels (RFC 5424 severities), quietest first."""

# 2026-07-28: HTTP status for a JSON-RPC error code; unmapped codes answer 200.
MODERN_ERROR_STATUS: Final = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    MISSING_REQUIRED_CLIENT_CAPABILITY: 400,
    UNSUPPORTED_PROTOCOL_VERSION: 400,
    METHOD_NOT_FOUND: 404,
}


def refuses_arguments_with_a_result(protocol_version: str) -> bool:
    """Whether a caller speaking `protocol_version` gets refused arguments as a tool execution
    error (`ARGUMENT_ERRORS_AS_RESULTS_FROM`; revisions are dates, so they order as strings)."""
    return protocol_version >= ARGUMENT_ERRORS_AS_RESULTS_FROM


def error_http_status(code: int | None, modern: bool) -> int:
    """The HTTP status of a JSON-RPC error answer: 2026-07-28 maps codes to statuses, earlier eras answer 200."""
    return MODERN_ERROR_STATUS.get(code, 200) if modern and code is not None else 200


CONTENT_TYPE_JSON: Final = "application/json"
CONTENT_TYPE_SSE: Final = "text/event-stream"


# --- header values (2026-07-28): `=?base64?…?=` for values that are not plain ASCII ----------
_SAFE = re.compile(r"^[\x20-\x7E]*$")
_SENTINEL = re.compile(r"^=\?base64\?(?P<payload>.*)\?=$")


def encode_header_value(value: str) -> str:
    if _SAFE.fullmatch(value) and value == value.strip() and not _SENTINEL.fullmatch(value):
        return value
    return f"=?base64?{base64.b64encode(value.encode()).decode('ascii')}?="


def decode_header_value(value: str | None) -> str | None:
    """Inverse of `encode_header_value`; None for a malformed sentinel so it never matches."""
    if value is None:
        return None
    match = _SENTINEL.fullmatch(value)
    if match is None:
        return value
    payload = match.group("payload")
    try:
        decoded = base64.b64decode(payload, validate=True)
        if base64.b64encode(decoded).decode("ascii") != payload:
            return None
        return decoded.decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
