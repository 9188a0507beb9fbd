"""One error tree, and the one place a failure becomes an HTTP status and a JSON-RPC answer.

Every error a caller can see is a `GatewayError` below: its class fixes the JSON-RPC code, a
stable message and, where the exchange itself is wrong, the HTTP status. Messages are chosen
here or where the error is raised; exception text from libraries, upstreams' transports or our
own bugs never reaches a caller (it goes to the log instead). `answer_for` maps anything else:
a storage failure is a retryable 503 naming the store, any other exception a logged internal error.

The era (2026-07-28 maps codes to statuses) and the request id are not known where a deep
failure is raised: the protocol stage publishes them on the ASGI scope (`SCOPE_MODERN`,
`SCOPE_REQUEST_ID`) and the one error middleware (tollway.http) reads them from there.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from tollway import spec
from tollway.telemetry import logger

SCOPE_MODERN = "tollway.modern"
"""ASGI scope key: True once the request is known to be a 2026-07-28 one."""
SCOPE_REQUEST_ID = "tollway.request_id"
"""ASGI scope key: the JSON-RPC id of the request being answered, once parsed."""


class TollwayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(TollwayError):
    """gateway.yaml (or its source) is missing or invalid. Raised at load time, never per request."""


class StorageError(TollwayError):
    """DynamoDB (or a store standing in for it) could not answer. Raised by the stores; answered
    as a retryable `ServiceUnavailable` unless a caller decides otherwise (quota failure policy)."""


class CommandError(TollwayError):
    """A `tollway` command cannot do what was asked. Its message is the one line the operator
    reads (the CLI prefixes `tollway: `); `status` is the exit status (2: the arguments are wrong)."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class GatewayError(TollwayError):
    """A failure answered to the caller as a JSON-RPC error.

    `status` None means "as the protocol era decides" (`spec.error_http_status`); failures of the
    exchange itself (bad headers, unknown session, oversized body) carry an explicit status.
    """

    status: int | None = None
    code: int = spec.INTERNAL_ERROR
    message: str = "Internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        data: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or type(self).message
        self.data = data
        if status is not None:
            self.status = status
        self.headers = headers or {}
        super().__init__(self.message)

    def http_status(self, modern: bool) -> int:
        return self.status if self.status is not None else spec.error_http_status(self.code_in(modern), modern)

    def code_in(self, modern: bool) -> int:
        """The JSON-RPC code in the caller's era (the same in both unless a revision changed it)."""
        return self.code

    def to_error(self, modern: bool = False) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code_in(modern), "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


# --- the exchange itself is wrong (status fixed, both eras) -------------------------------------
class ParseError(GatewayError):
    status, code, message = 400, spec.PARSE_ERROR, "Parse error: body is not valid JSON"


class InvalidRequest(GatewayError):
    status, code, message = 400, spec.INVALID_REQUEST, "Invalid request"


class NotAcceptable(GatewayError):
    status, code, message = 406, spec.INVALID_REQUEST, "Not Acceptable: Accept must include application/json"


class UnsupportedMediaType(GatewayError):
    status, code, message = 415, spec.INVALID_REQUEST, "Unsupported Media Type: Content-Type must be application/json"


class PayloadTooLarge(GatewayError):
    status, code, message = 413, spec.INVALID_REQUEST, "Payload too large"


class ForbiddenOrigin(GatewayError):
    status, code, message = 403, spec.INVALID_REQUEST, "Forbidden: origin not allowed"


class MisdirectedHost(GatewayError):
    status, code, message = 421, spec.INVALID_REQUEST, "Misdirected request: host not allowed"


class MethodNotAllowed(GatewayError):
    status, code, message = 405, spec.INVALID_REQUEST, "Method not allowed"


class SessionRequired(GatewayError):
    status, code, message = 400, spec.INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required"


class SessionNotFound(GatewayError):
    status, code, message = 404, spec.INVALID_REQUEST, "Session not found"


class UnsupportedVersion(GatewayError):
    """2025 era: an MCP-Protocol-Version header the gateway does not speak."""

    status, code, message = 400, spec.INVALID_REQUEST, "Bad Request: Unsupported protocol version"


class NotFound(GatewayError):
    """An admin API path names nothing (no such approval, no such session)."""

    status, code, message = 404, spec.INVALID_REQUEST, "Not found"


class ApprovalNotPending(GatewayError):
    """An approver's decision on an approval already decided, used or expired."""

    status, code, message = 409, spec.INVALID_REQUEST, "Conflict: the approval is not pending (decided or expired)"


# --- who is calling -------------------------------------------------------------------------------
class Unauthorized(GatewayError):
    status, code, message = 401, spec.INVALID_REQUEST, "Unauthorized"


class Forbidden(GatewayError):
    """A valid token without what the path needs (the admin scope; authentication at all)."""

    status, code, message = 403, spec.INVALID_REQUEST, "Forbidden: insufficient scope"


# --- 2026-07-28 envelope --------------------------------------------------------------------------
class HeaderMismatch(GatewayError):
    code, message = spec.HEADER_MISMATCH, "Routing header does not match the request body"


class UnsupportedModernVersion(GatewayError):
    code, message = spec.UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version"


# --- request level: answered inside a normal exchange ---------------------------------------------
class MethodNotFound(GatewayError):
    code, message = spec.METHOD_NOT_FOUND, "Method not found"


class InvalidParams(GatewayError):
    """A name no upstream serves (or the caller may not use): the era decides the status."""

    code, message = spec.INVALID_PARAMS, "Invalid params"


class MalformedParams(InvalidParams):
    """Params that break the method's own shape or the tool's input schema: 400 in both eras.
    The message names the field and the rule, never the value."""

    status = 400


class ArgumentsRefused(MalformedParams):
    """Arguments a tool's inputSchema refuses (`detail`: where and which rule, no value). Before
    2025-11-25 a -32602 like any malformed params; from it on a tool execution error
    (`tool_result`), which the pipeline answers instead of raising."""

    def __init__(self, tool: str, detail: str) -> None:
        super().__init__(f"Invalid params: arguments of tool '{tool}': {detail}")
        self.tool_text = f"Invalid arguments for tool '{tool}': {detail}"

    def tool_result(self) -> dict[str, Any]:
        return {"content": [{"type": "text", "text": self.tool_text}], "isError": True}


class ResourceNotFound(InvalidParams):
    """-32002 in the 2025 era; 2026-07-28 (SEP-2164) answers an unknown resource with -32602."""

    code, message = spec.RESOURCE_NOT_FOUND, "Resource not found"

    def code_in(self, modern: bool) -> int:
        return spec.INVALID_PARAMS if modern else self.code


class QuotaExceeded(GatewayError):
    status, code, message = 429, spec.RATE_LIMITED, "Rate limit exceeded"


class ServiceUnavailable(GatewayError):
    """A dependency of the gateway's own (DynamoDB) did not answer: retry shortly."""

    status, code, message = 503, spec.INTERNAL_ERROR, "Service unavailable, retry shortly"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("data", {"retryable": True})
        kwargs.setdefault("headers", {"retry-after": "1"})
        super().__init__(message, **kwargs)


class ResultWithheld(GatewayError):
    """`result_injection: block`: a tool result carried instructions aimed at the model."""

    code, message = spec.INTERNAL_ERROR, "Tool result withheld: it contains instructions aimed at the model"


# --- upstream faults: 502 (bad answer), 503 (not taking calls), 504 (too slow) ---------------------
class UpstreamError(GatewayError):
    """An upstream could not be reached, or answered something that is not MCP."""

    status, code, message = 502, spec.INTERNAL_ERROR, "Upstream unavailable"

    def __init__(self, upstream: str, message: str | None = None, *, retryable: bool = False, **kwargs: Any) -> None:
        self.upstream = upstream
        data = {"upstream": upstream, **({"retryable": True} if retryable else {}), **kwargs.pop("data", {})}
        super().__init__(message or type(self).message.format(upstream=upstream), data=data, **kwargs)


class UpstreamUnavailable(UpstreamError):
    message = "Upstream '{upstream}' is unavailable"

    def __init__(self, upstream: str, message: str | None = None, *, sent: bool = True, **kwargs: Any) -> None:
        self.sent = sent
        """False when the request never reached the upstream (connection refused): always safe to retry."""
        super().__init__(upstream, message, **kwargs)


class UpstreamInvalidResponse(UpstreamError):
    message = "Upstream '{upstream}' returned an invalid response"


class UpstreamTooLarge(UpstreamError):
    message = "Upstream '{upstream}' returned a response larger than the gateway's limit"


class UpstreamAuthError(UpstreamError):
    """The gateway's own credentials for an upstream are missing or refused: not a probe miss."""

    message = "Upstream '{upstream}' refused the gateway's credentials"


class UpstreamTimeout(UpstreamError):
    status, code, message = 504, spec.REQUEST_TIMEOUT, "Upstream '{upstream}' timed out"


class UpstreamCircuitOpen(UpstreamError):
    """The upstream failed repeatedly: calls fail fast until a probe succeeds."""

    status, message = 503, "Upstream '{upstream}' is temporarily unavailable"


class NoUpstreamAvailable(GatewayError):
    status, code, message = 503, spec.INTERNAL_ERROR, "No upstream is available"


class InternalError(GatewayError):
    status, code, message = 500, spec.INTERNAL_ERROR, "Internal error"


# --- the answer writer ---------------------------------------------------------------------------
def answer_for(error: BaseException) -> GatewayError:
    """The error a caller sees for any failure (the detail of anything unexpected is logged)."""
    if isinstance(error, GatewayError):
        return error
    if isinstance(error, StorageError):
        logger.warning("store unavailable", extra={"store": str(error), "cause": type(error.__cause__).__name__})
        return ServiceUnavailable(str(error))  # a stable message the store chose ("Pin store unavailable")
    logger.error("unexpected failure", exc_info=error)
    return InternalError()


def error_body(error: GatewayError, request_id: Any, modern: bool = False) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.to_error(modern)}


def json_body(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def json_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json_body(body), status_code=status, media_type=spec.CONTENT_TYPE_JSON, headers=headers)


def error_response(error: GatewayError, request_id: Any = None, modern: bool = False) -> Response:
    body = error_body(error, request_id, modern)
    return json_response(body, status=error.http_status(modern), headers=error.headers)
