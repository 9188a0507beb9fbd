"""One error tree; the only place a failure becomes an HTTP status and a JSON-RPC error.

Messages are stable strings chosen here: exception text from libraries, upstreams'
transports or our own bugs never reaches a caller (it goes to the log instead).
"""

from __future__ import annotations

from typing import Any

from tollway.protocol import constants as c


class TollwayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(TollwayError):
    """gateway.yaml (or its source) is missing or invalid. Raised at load time, never per request."""


class GatewayError(TollwayError):
    """A failure answered to the caller as a JSON-RPC error.

    `status` None means "as the protocol era decides" (see `http_status`); transport-level
    failures (bad headers, unknown session, oversized body) carry an explicit status.
    """

    status: int | None = None
    request_id: str | int | None = None
    """Set where the failing request's id is already known, so the answer can carry it."""
    code: int = c.INTERNAL_ERROR
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
        return self.status if self.status is not None else c.error_http_status(self.code, modern)

    def to_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


# --- transport: the HTTP exchange itself is wrong ---------------------------------------
class ParseError(GatewayError):
    status, code, message = 400, c.PARSE_ERROR, "Parse error: body is not valid JSON"


class InvalidRequest(GatewayError):
    status, code, message = 400, c.INVALID_REQUEST, "Invalid request"


class NotAcceptable(GatewayError):
    status, code, message = 406, c.INVALID_REQUEST, "Not Acceptable: Accept must include application/json"


class UnsupportedMediaType(GatewayError):
    status, code, message = 415, c.INVALID_REQUEST, "Unsupported Media Type: Content-Type must be application/json"


class PayloadTooLarge(GatewayError):
    status, code, message = 413, c.INVALID_REQUEST, "Payload too large"


class ForbiddenOrigin(GatewayError):
    status, code, message = 403, c.INVALID_REQUEST, "Forbidden: origin not allowed"


class MisdirectedHost(GatewayError):
    status, code, message = 421, c.INVALID_REQUEST, "Misdirected request: host not allowed"


class MethodNotAllowed(GatewayError):
    status, code, message = 405, c.INVALID_REQUEST, "Method not allowed"


class SessionRequired(GatewayError):
    status, code, message = 400, c.INVALID_REQUEST, "Bad Request: Mcp-Session-Id header is required"


class SessionNotFound(GatewayError):
    status, code, message = 404, c.INVALID_REQUEST, "Session not found"


class UnsupportedVersion(GatewayError):
    """2025 era: an MCP-Protocol-Version header the gateway does not speak."""

    status, code, message = 400, c.INVALID_REQUEST, "Bad Request: Unsupported protocol version"


# --- 2026-07-28 envelope ------------------------------------------------------------------
class HeaderMismatch(GatewayError):
    code, message = c.HEADER_MISMATCH, "Routing header does not match the request body"


class UnsupportedModernVersion(GatewayError):
    code, message = c.UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version"


# --- request level: answered inside a normal exchange --------------------------------------
class MethodNotFound(GatewayError):
    code, message = c.METHOD_NOT_FOUND, "Method not found"


class InvalidParams(GatewayError):
    code, message = c.INVALID_PARAMS, "Invalid params"


class ResourceNotFound(InvalidParams):
    code, message = c.RESOURCE_NOT_FOUND, "Resource not found"


class UpstreamError(GatewayError):
    """An upstream could not be reached or answered something that is not MCP."""

    code, message = c.INTERNAL_ERROR, "Upstream unavailable"


class UpstreamAuthError(UpstreamError):
    """The gateway's own credentials for an upstream are missing or refused: not a probe miss."""


class InternalError(GatewayError):
    code, message = c.INTERNAL_ERROR, "Internal error"
