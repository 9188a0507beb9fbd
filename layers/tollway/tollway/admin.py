"""The admin API: every `/admin/…` request passes the auth stage like `/mcp` (401 otherwise) and
must also carry `finance.admin_scope` (403 `insufficient_scope`); it is never served anonymously
(403 when the gateway runs without authentication). Refusals are the gateway's usual JSON-RPC
error bodies, with a stable message and no detail; a store that does not answer is a retryable 503.

    GET    /admin/usage?month=2026-11[&tenant=acme][&format=json|csv|table]  one month's usage
    GET    /admin/definitions/pending                  what changed or awaits approval
    POST   /admin/definitions/approve  {"upstream", "name", "kind": "tool"}   pin what is served now
    GET    /admin/approvals[?status=pending&tenant=acme]   tool calls waiting for a human (and past ones)
    GET    /admin/approvals/{id}                       one approval
    POST   /admin/approvals/{id}/approve | /deny       decide a pending approval (404 unknown, 409 not pending)
    GET    /admin/sessions?tenant=acme[&limit=50][&cursor=…]   a tenant's live 2025-era sessions
    DELETE /admin/sessions/{id}                        end a session and its upstream sessions
    GET    /admin/upstreams                            upstreams: host, era, health, tools, pins

Admins are global: the admin scope lets its holder read and act on every tenant, whatever the
admin's own tenant (the gateway's operators hold it, not tenants' users).

`/admin/usage` answers the report's JSON (shape in `tollway.finance.report`), its CSV as an
attachment, or the text table; 400 for a month that is not YYYY-MM, an empty or repeated
parameter, an unknown format. An approval applies at once on the instance that made it (other
warm instances read pins again within `definitions.cache_seconds`).

`/admin/sessions` pages newest first; `nextCursor` (absent on the last page) asks for the next
page, and a page may hold fewer than `limit` sessions while more follow. "Last used" is the
session's last renewal: a session in use is renewed once per half TTL (not written per call), so
it was last used at `lastUsed` or up to half the TTL later. `/admin/upstreams` reports what
the instance that answers has seen: eras it probed, its circuit breakers, its catalog
(`"observedBy": "this instance"`); another Lambda instance may have seen otherwise.

Each admin request leaves one audit record (`tollway.telemetry.audit.admin_action`): the endpoint
writes it once it knows what was done; a request refused before that (401, 403, 400, 503) gets
its record from the telemetry middleware, by status.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from tollway import spec
from tollway.auth.middleware import insufficient_scope
from tollway.blocking import run_blocking
from tollway.config import GatewayConfig, UpstreamConfig
from tollway.context import ANONYMOUS, Principal, Session
from tollway.errors import Forbidden, InvalidRequest, NotFound, json_response
from tollway.policy.approvals import STATUS_FILTERS, Approvals
from tollway.policy.definitions import DefinitionGate, NothingToApprove
from tollway.protocol.endpoint import SESSION_ID
from tollway.routing.router import Router, UpstreamStatus
from tollway.store.pins import Pin, PinStore, pin_counts
from tollway.store.sessions import MAX_PAGE, InvalidCursor, SessionStore
from tollway.store.usage import UsageReader
from tollway.telemetry import logger
from tollway.telemetry.audit import admin_action

KINDS = ("tool", "resource", "resource_template", "prompt")
CSV_TYPE = "text/csv; charset=utf-8"
_FORMATS = ("json", "csv", "table")
TEXT_TYPE = "text/plain; charset=utf-8"
OBSERVED_BY = "this instance"
DEFAULT_PAGE = 50
_MAX_CLIENT_FIELD = 128
_MAX_TENANT = 256


def admin_principal(request: Request, config: GatewayConfig) -> Principal:
    # The auth stage leaves ANONYMOUS exactly when the gateway runs without authentication.
    principal: Principal = request.scope.get("principal", ANONYMOUS)
    if principal is ANONYMOUS:
        raise Forbidden("Forbidden: the admin API requires authentication")
    scope = config.finance.admin_scope
    if scope not in principal.scopes:
        raise insufficient_scope(config, [scope], [scope], tenant=principal.tenant, path=request.url.path)
    return principal


class DefinitionsAdmin:
    def __init__(self, config: GatewayConfig, pins: PinStore, gate: DefinitionGate) -> None:
        self.config = config
        self.pins = pins
        self.gate = gate

    async def pending(self, request: Request) -> Response:
        principal = admin_principal(request, self.config)
        upstreams = [u.name for u in self.config.upstreams]
        pins = await _store(lambda: self.pins.list_pending(upstreams))
        admin_action(request, principal, "definitions.pending")
        return json_response({"pending": [pending_row(p) for p in pins]})

    async def approve(self, request: Request) -> Response:
        principal = admin_principal(request, self.config)
        body = await _json_object(request)
        upstream, name, kind = body.get("upstream"), body.get("name"), body.get("kind", "tool")
        if not isinstance(upstream, str) or upstream not in {u.name for u in self.config.upstreams}:
            raise InvalidRequest("Bad Request: upstream must name a configured upstream")
        if not isinstance(name, str) or not name or kind not in KINDS:
            raise InvalidRequest(f"Bad Request: name is required and kind is one of {', '.join(KINDS)}")
        by = f"{principal.tenant}/{principal.subject}"
        try:
            pin = await _store(lambda: self.gate.approve(upstream, kind, name, by))
        except NothingToApprove:
            admin_action(request, principal, "definitions.approve", _target(upstream, kind, name), "not_found", 404)
            raise NotFound("Nothing awaits approval under that name") from None
        admin_action(request, principal, "definitions.approve", _target(upstream, kind, name))
        return json_response(approved_row(pin))


class ApprovalsAdmin:
    """Tool calls waiting for a human: list, show, approve, deny (admin scope; an approver cannot
    decide their own call). Decisions are conditional writes: a second decision, or one after the
    expiry, is a 409. A refused request (404, 409, 403) gets its audit record from the middleware."""

    def __init__(self, config: GatewayConfig, approvals: Approvals) -> None:
        self.config = config
        self.approvals = approvals

    async def listing(self, request: Request) -> Response:
        principal = admin_principal(request, self.config)
        status, tenant = _param(request, "status"), _param(request, "tenant")
        if status is not None and status not in STATUS_FILTERS:
            raise InvalidRequest(f"Bad Request: status must be one of {', '.join(STATUS_FILTERS)}")
        if tenant is not None and len(tenant) > _MAX_TENANT:
            raise InvalidRequest("Bad Request: tenant is too long")
        found = await _store(lambda: self.approvals.listing(status, tenant))
        admin_action(request, principal, "approvals.list", f"{status or '*'} {tenant or '*'}"[:128])
        return json_response({"approvals": found}, headers={"cache-control": "no-store"})

    async def get(self, request: Request) -> Response:
        principal = admin_principal(request, self.config)
        approval = await _store(lambda: self.approvals.get(request.path_params["id"]))
        admin_action(request, principal, "approvals.get", approval.id)
        return json_response(self.approvals.view(approval), headers={"cache-control": "no-store"})

    async def approve(self, request: Request) -> Response:
        return await self._decide(request, approve=True)

    async def deny(self, request: Request) -> Response:
        return await self._decide(request, approve=False)

    async def _decide(self, request: Request, approve: bool) -> Response:
        principal = admin_principal(request, self.config)
        by = f"{principal.tenant}/{principal.subject}"
        approval_id = request.path_params["id"]
        decided = await _store(lambda: self.approvals.decide(approval_id, approve, by, principal))
        admin_action(request, principal, "approvals.approve" if approve else "approvals.deny", decided.id)
        return json_response(self.approvals.view(decided))


class SessionsAdmin:
    """`GET /admin/sessions?tenant=T` and `DELETE /admin/sessions/{id}`."""

    def __init__(self, config: GatewayConfig, store: SessionStore, router: Router) -> None:
        self.config = config
        self.store = store
        self.router = router

    async def list(self, request: Request) -> Response:
        principal = admin_principal(request, self.config)
        tenant = _param(request, "tenant")
        if tenant is None:
            raise InvalidRequest("Bad Request: tenant is required")
        if len(tenant) > _MAX_TENANT:
            raise InvalidRequest("Bad Request: tenant is too long")
        limit = _param(request, "limit") or str(DEFAULT_PAGE)
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE:
            raise InvalidRequest(f"Bad Request: limit must be a number from 1 to {MAX_PAGE}")
        cursor = _param(request, "cursor")
        try:
            sessions, next_cursor = await _store(lambda: self.store.list_tenant(tenant, int(limit), cursor))
        except InvalidCursor:
            raise InvalidRequest("Bad Request: cursor is not one this endpoint gave") from None
        admin_action(request, principal, "sessions.list", tenant[:128])
        body: dict[str, Any] = {"tenant": tenant, "sessions": [session_row(s) for s in sessions]}
        if next_cursor is not None:
            body["nextCursor"] = next_cursor
        return json_response(body, headers={"cache-control": "no-store"})

    async def end(self, request: Request) -> Response:
        principal = admin_principal(request, self.config)
        session_id = request.path_params["session_id"]
        session = await _store(lambda: self.store.get(session_id)) if SESSION_ID.fullmatch(session_id) else None
        if session is None:
            # Recorded here, not by the middleware (whose record names the path, with the id in it).
            admin_action(request, principal, "sessions.end", None, "not_found", 404)
            raise NotFound("Session not found")
        await self.router.end_session(session)
        # The target names the session's owner, not its id: a session id is the client's to present.
        admin_action(request, principal, "sessions.end", f"{session.tenant}/{session.subject}"[:256])
        logger.info("session ended by an admin", extra={"tenant": session.tenant, "admin_tenant": principal.tenant})
        return json_response(ended_row(session))


class UpstreamsAdmin:
    """`GET /admin/upstreams`: every configured upstream as this instance sees it."""

    def __init__(self, config: GatewayConfig, router: Router, pins: PinStore) -> None:
        self.config = config
        self.router = router
        self.pins = pins

    async def list(self, request: Request) -> Response:
        principal = admin_principal(request, self.config)
        pins = await _store(lambda: {u.name: list(self.pins.get_all(u.name).values()) for u in self.config.upstreams})
        rows = [upstream_row(u, pins[u.name], self.router.status(u.name)) for u in self.config.upstreams]
        admin_action(request, principal, "upstreams.list")
        return json_response({"observedBy": OBSERVED_BY, "upstreams": rows}, headers={"cache-control": "no-store"})


class UsageReportEndpoint:
    """`handle` is the Starlette endpoint; `store` is the gateway's usage store."""

    def __init__(self, config: GatewayConfig, store: UsageReader) -> None:
        self.config = config
        self.store = store

    async def handle(self, request: Request) -> Response:
        # Imported here, not with the app: the first /mcp request of a cold start does not wait for it.
        from tollway.finance.report import parse_month, render, summarize, to_json

        principal = admin_principal(request, self.config)
        month = _param(request, "month")
        if month is None:
            raise InvalidRequest("Bad Request: month is required (YYYY-MM)")
        try:
            parse_month(month)
        except ValueError:
            raise InvalidRequest("Bad Request: month must be YYYY-MM") from None
        tenant = _param(request, "tenant")
        if tenant is not None and len(tenant) > _MAX_TENANT:
            raise InvalidRequest("Bad Request: tenant is too long")
        format = _param(request, "format") or "json"
        if format not in _FORMATS:
            raise InvalidRequest("Bad Request: format must be json, csv or table")
        rows = await _store(lambda: self.store.month(month, tenant))
        admin_action(request, principal, "usage.report", f"{month} {tenant or '*'}"[:128])
        logger.info(
            "usage report",
            extra={
                "subject": principal.subject,
                "tenant": principal.tenant,
                "month": month,
                "report_tenant": tenant,
                "format": format,
            },
        )
        report = summarize(rows, month, tenant=tenant, model=self.config.finance.cost_model)
        headers = {"cache-control": "no-store"}
        if format == "csv":
            name = f"tollway-usage-{month}" + (f"-{_filename_safe(tenant)}" if tenant else "")
            headers["content-disposition"] = f'attachment; filename="{name}.csv"'
            return Response(render(report, "csv"), media_type=CSV_TYPE, headers=headers)
        if format == "table":
            return Response(render(report, "table"), media_type=TEXT_TYPE, headers=headers)
        # Compact: a Lambda answer is at most 6 MB, and the report is read by programs.
        body = json.dumps(to_json(report), separators=(",", ":"), ensure_ascii=False)
        return Response(body, media_type=spec.CONTENT_TYPE_JSON, headers=headers)


# --- answer shapes: the admin API's, which `tollway` prints in either mode ---------------------------
def pending_row(pin: Pin) -> dict[str, Any]:
    return {
        "upstream": pin.upstream,
        "kind": pin.kind,
        "name": pin.name,
        "state": pin.state,
        "approvedHash": pin.hash if pin.status == "approved" else None,
        "servedHash": pin.served_hash,
    }


def approved_row(pin: Pin) -> dict[str, Any]:
    return {
        "upstream": pin.upstream,
        "kind": pin.kind,
        "name": pin.name,
        "approvedHash": pin.hash,
        "approvedBy": pin.approved_by,
    }


def session_row(session: Session) -> dict[str, Any]:
    """What an admin sees of a session: who, which client, when; never upstream session ids."""
    info = session.client_info

    def client_field(name: str) -> str | None:
        value = info.get(name)
        return value[:_MAX_CLIENT_FIELD] if isinstance(value, str) else None

    return {
        "id": session.id,
        "tenant": session.tenant,
        "subject": session.subject,
        "client": {"name": client_field("name"), "version": client_field("version")},
        "protocolVersion": session.protocol_version,
        "createdAt": _iso(session.created_at),
        "lastUsed": _iso(session.used_at),
        "expiresAt": _iso(session.expires_at),
        "upstreamSessions": [
            {"upstream": name, "protocolVersion": value.protocol_version}
            for name, value in sorted(session.upstreams.items())
        ],
    }


def ended_row(session: Session) -> dict[str, Any]:
    return {
        "id": session.id,
        "tenant": session.tenant,
        "subject": session.subject,
        "upstreamSessionsEnded": sorted(session.upstreams),
    }


def upstream_row(upstream: UpstreamConfig, pins: Iterable[Pin], status: UpstreamStatus | None) -> dict[str, Any]:
    """An upstream without secrets: its host, not its URL (a URL may carry a key). `status` is
    None where no gateway instance answers (the CLI reading DynamoDB): era, health and tools are
    then unknown (null)."""
    parts = urlsplit(upstream.url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    row: dict[str, Any] = {
        "name": upstream.name,
        "host": f"{host}:{parts.port}" if parts.port else host,
        "prefix": upstream.namespace,
        "protocol": upstream.protocol,
        "era": None,
        "health": None,
        "tools": None,
        "pins": pin_counts(pins),
    }
    if status is not None:
        if status.info is not None:
            row["era"] = {"2026-07-28": status.info.modern, "2025": status.info.legacy}
        row["health"] = {
            "circuit": status.circuit,
            "consecutiveFailures": status.failures,
            "probeFailed": status.probe_failed,
            "observedBy": OBSERVED_BY,
        }
        row["tools"] = status.tools
    return row


def _iso(epoch: int) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch)) if epoch > 0 else None


async def _store(operation: Callable[[], Any]) -> Any:
    """Store I/O off the event loop (a StorageError becomes the retryable 503)."""
    return await run_blocking(operation)


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, RecursionError):
        raise InvalidRequest("Bad Request: body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Bad Request: body must be a JSON object")
    return body


def _param(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if not values:
        return None
    if len(values) > 1 or not values[0]:
        raise InvalidRequest(f"Bad Request: {name} must be given once, not empty")
    return values[0]


def _target(upstream: str, kind: str, name: str) -> str:
    """What an approval names, for its audit record (bounded: names come from the request)."""
    return f"{upstream}/{kind}/{name}"[:256]


def _filename_safe(value: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in value)
