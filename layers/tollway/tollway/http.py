"""create_app(): every route, the middleware order and the parts they are built from, in one place.

telemetry  (outermost: request id, timing, access log, metrics, the audit record)
errors     (any failure becomes one well-formed HTTP + JSON-RPC answer: the only place)
origin     (Origin / Host allow-list on /mcp, before any token is read)
auth       (JWT -> Principal on scope["principal"]; every route but the public ones)
routes     /mcp -> McpEndpoint (protocol, sessions, pipeline); /admin/*; public: metadata, health
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollway.admin import ApprovalsAdmin, DefinitionsAdmin, SessionsAdmin, UpstreamsAdmin, UsageReportEndpoint
from tollway.auth import DEV_ISSUER
from tollway.auth.middleware import AuthMiddleware
from tollway.auth.verifier import TokenVerifier
from tollway.blocking import serving
from tollway.config import GatewayConfig, response_mode
from tollway.context import SCOPE_AUDIT, SCOPE_CONTEXT, AuditFacts
from tollway.errors import SCOPE_MODERN, SCOPE_REQUEST_ID, ConfigError, answer_for, error_response
from tollway.masking.stage import MaskingStage
from tollway.pipeline import Pipeline
from tollway.policy.approvals import Approvals
from tollway.policy.definitions import DefinitionGate
from tollway.policy.exposure import Exposure
from tollway.policy.quota import QuotaEnforcer
from tollway.protocol.endpoint import McpEndpoint
from tollway.protocol.listen import Listener
from tollway.protocol.server import GatewayServer
from tollway.protocol.transport import check_origin
from tollway.routing.router import Router
from tollway.routing.upstream import UpstreamClient
from tollway.secrets import field_hash_key
from tollway.store import Stores
from tollway.store.sessions import CachedSessionStore, SessionStore
from tollway.telemetry import count, logger, metric
from tollway.telemetry.audit import (
    SCOPE_LOG,
    SCOPE_REQUEST,
    SCOPE_WRITTEN,
    AuditLog,
    admin_outcome,
    admin_record,
    mcp_record,
)
from tollway.telemetry.metrics import flush_due, flush_metrics

if TYPE_CHECKING:
    from jwt import PyJWKSet


def create_app(
    config: GatewayConfig,
    *,
    stores: Stores | None = None,
    store: SessionStore | None = None,
    streaming: bool | None = None,
    dev_keys: PyJWKSet | None = None,
    public_routes: list[Route] | None = None,
    upstreams: Mapping[str, UpstreamClient] | None = None,
    previous: Starlette | None = None,
) -> Starlette:
    """The gateway as an ASGI app.

    `stores`: DynamoDB by default; tests pass `Stores.memory()` (or just `store=` a session
    store, which implies an in-memory ledger too). `dev_keys` (trusted for `auth.issuer`)
    and `public_routes` (their JWKS and issuer metadata) are passed only by `tollway dev`.
    `upstreams`: the clients of the upstreams by name (default: streamable HTTP to their URLs;
    tests pass stand-ins).

    `previous`: the app this one replaces (a live config change, `tollway.live`); the parts
    whose settings did not change are kept with their state: the token verifier and its JWKS
    cache, each upstream's client (circuit breaker, credentials), the definition gate (pins
    and verdicts read), the audit log, and the usage counters still waiting for a write (never
    its quota leases: the limits may have changed). Pass the same `stores`: sessions, the ledger
    and pins live there."""
    mode = response_mode()
    if streaming is None:
        streaming = config.http.streaming if config.http.streaming is not None else mode == "stream"
    kept = previous.state if previous is not None else None
    if kept is not None and kept.config.auth == config.auth and kept.dev_keys is dev_keys:
        verifier = kept.verifier
    else:
        verifier = build_verifier(config, dev_keys)
    stores = stores or (Stores.memory(sessions=store) if store is not None else Stores.dynamo())
    if upstreams is None and kept is not None:
        upstreams = {
            u.name: kept.upstreams[u.name]
            if getattr(kept.upstreams.get(u.name), "config", None) == u
            else UpstreamClient(u)
            for u in config.upstreams
        }
    sessions = stores.sessions
    if config.sessions.cache_seconds > 0:
        if kept is not None and isinstance(kept.sessions, CachedSessionStore) and kept.sessions.inner is sessions:
            sessions = kept.sessions  # a live config change keeps what this instance has read
        else:
            sessions = CachedSessionStore(sessions, config.sessions.cache_seconds)
    router = Router(config, sessions, upstreams)
    if kept is not None and kept.config.definitions == config.definitions and kept.gate.store is stores.pins:
        gate = kept.gate
    else:
        gate = DefinitionGate(config.definitions, stores.pins)
    masking = MaskingStage(config, hash_key=lambda: field_hash_key(config))
    exposure = Exposure(config, router, gate, masking)
    approvals = Approvals(config, stores.approvals)
    quota = QuotaEnforcer(config, stores.ledger)
    if kept is not None and getattr(kept, "quota", None) is not None:
        quota.take_pending(kept.quota)
    pipeline = Pipeline(config, exposure, router, quota, masking, approvals)
    server = GatewayServer(config, exposure, router, Listener(config, pipeline) if streaming else None)
    endpoint = McpEndpoint(
        config, sessions, server, pipeline, streaming=streaming, buffered=mode == "buffered", events=stores.events
    )
    definitions_admin = DefinitionsAdmin(config, stores.pins, gate)
    approvals_admin = ApprovalsAdmin(config, approvals)
    # The same sink across a swap, so an invocation's batch of records spans it.
    same_audit = kept is not None and kept.config.audit == config.audit
    audit = kept.audit if same_audit else AuditLog.create(config.audit.file)
    sessions_admin = SessionsAdmin(config, sessions, router)
    upstreams_admin = UpstreamsAdmin(config, router, stores.pins)

    resource_metadata = protected_resource_metadata(config)

    async def metadata(request: Request) -> Response:
        return JSONResponse(resource_metadata)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    public = [
        Route("/.well-known/oauth-protected-resource", metadata, methods=["GET"]),
        Route("/.well-known/oauth-protected-resource/mcp", metadata, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        *(public_routes or []),
    ]
    routes = [
        *public,
        # Every method on one route, so refusals (405 with the right Allow) are JSON-RPC answers too.
        Route("/mcp", endpoint.handle, methods=["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS"]),
        Route("/admin/usage", UsageReportEndpoint(config, stores.usage).handle, methods=["GET"]),
        Route("/admin/definitions/pending", definitions_admin.pending, methods=["GET"]),
        Route("/admin/definitions/approve", definitions_admin.approve, methods=["POST"]),
        Route("/admin/approvals", approvals_admin.listing, methods=["GET"]),
        Route("/admin/approvals/{id}", approvals_admin.get, methods=["GET"]),
        Route("/admin/approvals/{id}/approve", approvals_admin.approve, methods=["POST"]),
        Route("/admin/approvals/{id}/deny", approvals_admin.deny, methods=["POST"]),
        Route("/admin/sessions", sessions_admin.list, methods=["GET"]),
        Route("/admin/sessions/{session_id}", sessions_admin.end, methods=["DELETE"]),
        Route("/admin/upstreams", upstreams_admin.list, methods=["GET"]),
    ]
    middleware = [
        Middleware(TelemetryMiddleware, audit=audit),
        Middleware(ErrorMiddleware),
        Middleware(OriginGuard, config=config),
        Middleware(
            AuthMiddleware, config=config, verifier=verifier, public_paths=frozenset(route.path for route in public)
        ),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        # The local server stops: usage counters still waiting for a write are written now.
        await anyio.to_thread.run_sync(quota.flush_all)
        flush_metrics()  # and metric values still held for their window

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.config = config
    app.state.endpoint = endpoint
    app.state.audit = audit
    # What a successor built for a changed config may keep (`previous`).
    app.state.verifier = verifier
    app.state.dev_keys = dev_keys
    app.state.upstreams = router.clients
    app.state.gate = gate
    app.state.quota = quota
    app.state.sessions = sessions
    return app


def protected_resource_metadata(config: GatewayConfig) -> dict[str, Any]:
    """RFC 9728 metadata for the MCP endpoint."""
    auth = config.auth
    return {
        "resource": config.resource,
        "authorization_servers": [auth.issuer] if auth.issuer else [],
        "bearer_methods_supported": ["header"],
        "scopes_supported": auth.scopes_supported if auth.scopes_supported is not None else auth.required_scopes,
        "resource_name": config.name,
    }


def build_verifier(config: GatewayConfig, dev_keys: PyJWKSet | None) -> TokenVerifier | None:
    """Fail closed: a gateway without a usable issuer refuses to start, unless anonymous access
    is asked for in so many words."""
    auth = config.auth
    if dev_keys is not None:
        # Only `tollway dev` hands over dev keys, having named itself (its URL) the issuer.
        if not auth.issuer:
            raise ConfigError("the local development issuer needs auth.issuer")
        return TokenVerifier(auth, config.audience, jwks=dev_keys)
    if auth.issuer == DEV_ISSUER:
        raise ConfigError(f"auth.issuer {DEV_ISSUER!r} is the local development issuer: only `tollway dev` accepts it")
    if auth.issuer:
        if not auth.jwks_url:
            raise ConfigError("auth.jwks_url is required when auth.issuer is set")
        return TokenVerifier(auth, config.audience)
    if auth.allow_anonymous:
        logger.warning("authentication is disabled by auth.allow_anonymous")
        return None
    raise ConfigError(
        "auth.issuer and auth.jwks_url are required (authentication fails closed); "
        "set auth.allow_anonymous: true only for local experiments"
    )


CLIENT_GONE = "tollway.client_gone"
"""ASGI scope key: the client went away before an answer (logged as 499, not as a failure)."""


class ErrorMiddleware:
    """The one place a failure is answered: whatever is raised below becomes the error
    `errors.answer_for` says, with the era and request id the protocol stage put on the scope.
    A client that went away gets no answer (there is nobody to read it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            logger.info("client disconnected", extra={"path": scope.get("path")})
            scope[CLIENT_GONE] = True
        except Exception as exc:
            if started:
                raise
            error = answer_for(exc)
            facts = scope.get(SCOPE_AUDIT)
            if facts is not None:
                facts.error = type(error).__name__
            response = error_response(error, scope.get(SCOPE_REQUEST_ID), scope.get(SCOPE_MODERN, False))
            await response(scope, receive, send)


class OriginGuard:
    """Refuses `/mcp` requests from a browser origin or Host the config does not allow."""

    def __init__(self, app: ASGIApp, config: GatewayConfig) -> None:
        self.app = app
        self.http = config.http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/mcp"):
            check_origin(Request(scope), self.http)  # raises; ErrorMiddleware answers
        await self.app(scope, receive, send)


class TelemetryMiddleware:
    """Request id, timing, one structured access-log line, metrics and the audit record of each
    request: every `/mcp` exchange, and each `/admin/…` request its endpoint did not record."""

    def __init__(self, app: ASGIApp, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        status = 500
        start = time.perf_counter()
        sizes = [0, 0]  # request and response body bytes
        scope[SCOPE_AUDIT], scope[SCOPE_LOG], scope[SCOPE_REQUEST] = AuditFacts(), self.audit, (request_id, start)

        async def counting_receive() -> Message:
            message = await receive()
            sizes[0] += len(message.get("body", b""))
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            elif message["type"] == "http.response.body":
                sizes[1] += len(message.get("body", b""))
            await send(message)

        try:
            with serving(scope):
                await self.app(scope, counting_receive, send_with_id)
        finally:
            if scope.get(CLIENT_GONE):
                status = 499  # as proxies log it: the client closed the request
            elapsed_ms = (time.perf_counter() - start) * 1000
            audited = self._audit(scope, request_id, status, elapsed_ms, sizes)
            # A success its audit record describes is logged at DEBUG (the record has the same facts,
            # and log bytes are billed per call); failures and unaudited paths at INFO.
            logger.log(
                logging.DEBUG if audited and status < 400 else logging.INFO,
                "request",
                extra={
                    "request_id": request_id,
                    "http_method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round(elapsed_ms, 2),
                },
            )
            count("Requests")
            metric("Latency", elapsed_ms)
            if status >= 500:
                count("Errors")
            flush_due()

    def _audit(self, scope: Scope, request_id: str, status: int, elapsed_ms: float, sizes: list[int]) -> bool:
        """Writes the request's audit record, if its path has one; whether it had."""
        path = scope.get("path", "")
        if path.startswith("/mcp"):
            ctx = scope.get(SCOPE_CONTEXT)
            record = mcp_record(
                scope[SCOPE_AUDIT],
                request_id=request_id,
                principal=ctx.principal if ctx is not None else scope.get("principal"),
                client_info=ctx.client_info if ctx is not None else {},
                era=ctx.protocol_version if ctx is not None else None,
                status=status,
                ms=elapsed_ms,
                request_bytes=sizes[0],
                response_bytes=sizes[1],
            )
        elif path.startswith("/admin/") and not scope.get(SCOPE_WRITTEN):
            record = admin_record(
                request_id=request_id,
                principal=scope.get("principal"),
                action=f"{scope.get('method')} {_route_of(path)}"[:128],
                target=None,
                outcome=admin_outcome(status),
                status=status,
                ms=elapsed_ms,
            )
        else:
            return bool(scope.get(SCOPE_WRITTEN))
        self.audit.write(record)
        return True


_ROUTE_WORD = re.compile(r"^[a-z][a-z-]{0,23}$")


def _route_of(path: str) -> str:
    """An admin path as its route: identifiers in it (a session's, an approval's) become `{id}`, so
    a refused request never puts another principal's identifier in the audit trail."""
    return "/".join(part if not part or _ROUTE_WORD.match(part) else "{id}" for part in path.split("/"))
