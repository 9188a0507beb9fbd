"""`/mcp`: one HTTP exchange in, one JSON or SSE answer out, for both eras.

POST reads and validates the message (transport), binds it to a session (2025 era) or
to its own envelope (2026-07-28), runs the pipeline, and writes what the pipeline yields:
plain JSON when the answer is a single response, SSE when notifications or relayed
server requests come first and the client accepts a stream.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tollway.config import GatewayConfig
from tollway.context import ANONYMOUS, Principal, RequestContext
from tollway.errors import (
    GatewayError,
    InternalError,
    InvalidParams,
    MethodNotAllowed,
    SessionNotFound,
    SessionRequired,
)
from tollway.pipeline import Pipeline
from tollway.protocol import constants as c
from tollway.protocol.transport import Incoming, is_modern, read_post
from tollway.routing.upstream import drain
from tollway.store.sessions import Session, SessionStore
from tollway.telemetry import logger

ALLOW_LEGACY = "POST, DELETE"
ALLOW_MODERN = "POST"


class McpEndpoint:
    def __init__(self, config: GatewayConfig, store: SessionStore, pipeline: Pipeline, streaming: bool) -> None:
        self.config = config
        self.store = store
        self.pipeline = pipeline
        self.router = pipeline.router
        self.streaming = streaming

    # --- POST ---------------------------------------------------------------------------------
    async def post(self, request: Request) -> Response:
        incoming = await read_post(request, self.config.http)
        principal: Principal = request.scope.get("principal", ANONYMOUS)
        request_id = incoming.message.get("id")
        try:
            if not incoming.modern and incoming.method == "initialize" and incoming.kind == "request":
                return await self._initialize(incoming, principal)
            ctx = await self._context(incoming, principal)
            if incoming.kind == "notification":
                return Response(status_code=202)
            if incoming.kind == "response":
                await self.router.relay_client_response(ctx, incoming.message)
                return Response(status_code=202)
            return await self._answer(ctx, incoming, self.pipeline.handle(ctx, incoming.message))
        except GatewayError as error:
            return error_response(error, request_id, incoming.modern)
        except Exception:
            logger.exception("request failed", extra={"method": incoming.method})
            return error_response(InternalError(), request_id, incoming.modern)

    async def _context(self, incoming: Incoming, principal: Principal) -> RequestContext:
        if incoming.modern:
            meta = incoming.params.get("_meta") or {}
            return RequestContext(
                principal=principal,
                modern=True,
                protocol_version=incoming.protocol_version,
                client_info=_dict(meta.get(c.META_CLIENT_INFO)),
                client_capabilities=_dict(meta.get(c.META_CLIENT_CAPABILITIES)),
                forward_headers=incoming.forward_headers,
            )
        # Store I/O off the event loop: the local server serves many requests at once.
        session = await anyio.to_thread.run_sync(self._session, incoming.session_id, principal)
        return RequestContext(
            principal=principal,
            modern=False,
            protocol_version=incoming.protocol_version,
            client_info=session.client_info,
            client_capabilities=session.client_capabilities,
            session=session,
            streaming=self.streaming and incoming.accepts_sse,
        )

    def _session(self, session_id: str | None, principal: Principal, renew: bool = True) -> Session:
        if not session_id:
            raise SessionRequired()
        session = self.store.get(session_id)
        # A session of another principal is answered exactly like a missing one.
        if session is None or not session.owned_by(principal.tenant, principal.subject):
            raise SessionNotFound()
        ttl = self.config.sessions.ttl_seconds
        if renew and session.expires_at - time.time() < ttl / 2:
            # Renew a used session once half its lifetime is gone: one write per half-TTL, not per call.
            session.expires_at = int(time.time()) + ttl
            self.store.renew(session.id, session.expires_at)
        return session

    async def _initialize(self, incoming: Incoming, principal: Principal) -> Response:
        params = incoming.params
        requested = params.get("protocolVersion")
        capabilities, info = params.get("capabilities"), params.get("clientInfo")
        if not isinstance(requested, str) or not isinstance(capabilities, dict) or not isinstance(info, dict):
            raise InvalidParams("initialize needs protocolVersion, capabilities and clientInfo")
        version = requested if requested in c.HANDSHAKE_VERSIONS else c.LATEST_HANDSHAKE_VERSION
        session = Session(
            id=secrets.token_urlsafe(32),
            tenant=principal.tenant,
            subject=principal.subject,
            protocol_version=version,
            client_info=info,
            client_capabilities=capabilities,
            expires_at=int(time.time()) + self.config.sessions.ttl_seconds,
        )
        result = {
            "protocolVersion": version,
            "capabilities": await self.pipeline.capabilities(),
            "serverInfo": self.pipeline.server_info,
            "instructions": f"Tools of {len(self.config.upstreams)} MCP servers, namespaced by server prefix.",
        }
        self.store.create(session)
        logger.info("session started", extra={"protocol_version": version, "tenant": principal.tenant})
        body = {"jsonrpc": "2.0", "id": incoming.message["id"], "result": result}
        return json_response(body, headers={c.SESSION_ID_HEADER: session.id})

    async def _answer(self, ctx: RequestContext, incoming: Incoming, stream: AsyncIterator[dict[str, Any]]) -> Response:
        """JSON when the first thing the pipeline yields is the response; SSE when events come first."""
        first = await anext(stream)
        if _is_final(first, incoming.message["id"]):
            await drain(stream)  # let the upstream exchange finish and release its connection
            return json_response(first, status=_status_of(first, ctx.modern))
        if not incoming.accepts_sse:
            final = await drain(stream)
            return json_response(final, status=_status_of(final, ctx.modern))
        return StreamingResponse(
            _sse(first, stream, incoming.message["id"]),
            media_type=c.CONTENT_TYPE_SSE,
            headers={"cache-control": "no-cache, no-transform", "x-accel-buffering": "no"},
        )

    async def handle(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.post(request)
        if request.method == "DELETE" and not is_modern(request):
            return await self.delete(request)
        # GET included: there is no standalone server stream, nothing is pushed outside a request.
        raise MethodNotAllowed(headers={"allow": ALLOW_MODERN if is_modern(request) else ALLOW_LEGACY})

    # --- DELETE ---------------------------------------------------------------------------------
    async def delete(self, request: Request) -> Response:
        principal: Principal = request.scope.get("principal", ANONYMOUS)
        # No renewal: a write right before the delete is wasted.
        session = self._session(request.headers.get(c.SESSION_ID_HEADER), principal, renew=False)
        await self.router.close(RequestContext(principal, False, session.protocol_version, session=session))
        self.store.delete(session.id)
        logger.info("session ended", extra={"tenant": principal.tenant})
        return Response(status_code=204)


# --- writing answers -----------------------------------------------------------------------------
def json_response(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status_code=status,
        media_type=c.CONTENT_TYPE_JSON,
        headers=headers,
    )


def error_response(error: GatewayError, request_id: Any, modern: bool) -> Response:
    body = {"jsonrpc": "2.0", "id": request_id, "error": error.to_error()}
    return json_response(body, status=error.http_status(modern), headers=error.headers)


def _status_of(message: dict[str, Any], modern: bool) -> int:
    error = message.get("error")
    return c.error_http_status(error.get("code"), modern) if isinstance(error, dict) else 200


def _is_final(message: dict[str, Any], request_id: Any) -> bool:
    return "method" not in message and message.get("id") == request_id


async def _sse(first: dict[str, Any], rest: AsyncIterator[dict[str, Any]], request_id: Any) -> AsyncIterator[bytes]:
    yield _event(first)
    try:
        async for item in rest:
            yield _event(item)
    except GatewayError as error:
        yield _event({"jsonrpc": "2.0", "id": request_id, "error": error.to_error()})
    except Exception:
        logger.exception("stream failed")
        yield _event({"jsonrpc": "2.0", "id": request_id, "error": InternalError().to_error()})


def _event(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    return f"event: message\ndata: {data}\n\n".encode()


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
