"""The admin API: every `/admin/…` request passes the auth stage like `/mcp` (401 otherwise) and
must also carry `finance.admin_scope` (403 `insufficient_scope`); it is never served anonymously
(403 when the gateway runs without authentication). Refusals are the gateway's usual JSON-RPC
error bodies, with a stable message and no detail; a store that does not answer is a retryable 503.

    GET  /admin/usage?month=2026-11[&tenant=acme][&format=json|csv]    one month's usage report
    GET  /admin/definitions/pending                  what changed or awaits approval
    POST /admin/definitions/approve  {"upstream", "name", "kind": "tool"}   pin what is served now
    GET  /admin/approvals[?status=pending&tenant=acme]   tool calls waiting for a human (and past ones)
    GET  /admin/approvals/{id}                       one approval
    POST /admin/approvals/{id}/approve | /deny       decide a pending approval (404 unknown, 409 not pending)

`/admin/usage` answers the report's JSON (shape in `tollway.finance.report`) or its CSV as an
attachment; 400 for a month that is not YYYY-MM, an empty or repeated parameter, an unknown
format. An approval applies at once on the instance that made it (other warm instances read
pins again within `definitions.cache_seconds`).

Each admin request leaves one audit record (`tollway.telemetry.audit.admin_action`): the endpoint
writes it once it knows what was done; a request refused before that (401, 403, 400, 503) gets
its record from the telemetry middleware, by status.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from tollway import spec
from tollway.auth.middleware import insufficient_scope
from tollway.config import GatewayConfig
from tollway.context import ANONYMOUS, Principal
from tollway.errors import Forbidden, InvalidRequest, NotFound, json_response
from tollway.policy.approvals import STATUS_FILTERS, Approvals
from tollway.policy.definitions import DefinitionGate, NothingToApprove
from tollway.store.pins import PinStore
from tollway.store.usage import UsageRecorder
from tollway.telemetry import logger
from tollway.telemetry.audit import admin_action

KINDS = ("tool", "resource", "resource_template", "prompt")
CSV_TYPE = "text/csv; charset=utf-8"
_FORMATS = ("json", "csv")
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
        return json_response(
            {
                "pending": [
                    {
                        "upstream": p.upstream,
                        "kind": p.kind,
                        "name": p.name,
                        "state": p.state,
                        "approvedHash": p.hash if p.status == "approved" else None,
                        "servedHash": p.served_hash,
                    }
                    for p in pins
                ]
            }
        )

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
        return json_response({"upstream": pin.upstream, "kind": pin.kind, "name": pin.name, "approvedHash": pin.hash})


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


class UsageReportEndpoint:
    """`handle` is the Starlette endpoint; `store` is the gateway's usage store."""

    def __init__(self, config: GatewayConfig, store: UsageRecorder) -> None:
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
            raise InvalidRequest("Bad Request: format must be json or csv")
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
        # Compact: a Lambda answer is at most 6 MB, and the report is read by programs.
        body = json.dumps(to_json(report), separators=(",", ":"), ensure_ascii=False)
        return Response(body, media_type=spec.CONTENT_TYPE_JSON, headers=headers)


async def _store(operation: Callable[[], Any]) -> Any:
    """Store I/O off the event loop (a StorageError becomes the retryable 503)."""
    return await anyio.to_thread.run_sync(operation)


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
