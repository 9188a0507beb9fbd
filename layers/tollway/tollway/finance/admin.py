"""GET /admin/usage: one month's usage report over HTTP, for finance tools and spreadsheets.

    GET /admin/usage?month=2026-11[&tenant=acme][&format=json|csv]
    Authorization: Bearer <a token carrying finance.admin_scope, default `tollway:admin`>

200: the report's JSON (shape in `tollway.finance.report`), or its CSV as an attachment.
401: no token, or one that fails verification; the same `WWW-Authenticate` challenge as /mcp.
403: a valid token without the admin scope: `error="insufficient_scope", scope="tollway:admin"`;
     also every request when the gateway runs without authentication (`auth.allow_anonymous`):
     every tenant's usage is never anonymous.
400: a month that is not YYYY-MM, an empty or repeated parameter, an unknown format.
Refusals are the gateway's usual JSON-RPC error bodies, with a stable message and no detail.

The auth stage verifies the token as for /mcp (same issuer, audience, JWKS cache and claims);
this endpoint adds the admin-scope check.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from tollway.admin import admin_principal
from tollway.config import GatewayConfig
from tollway.errors import InternalError, InvalidRequest
from tollway.protocol import constants as c
from tollway.store.usage import UsageRow
from tollway.telemetry import logger

PATH = "/admin/usage"
CSV_TYPE = "text/csv; charset=utf-8"
_FORMATS = ("json", "csv")
_MAX_TENANT = 256


class UsageReader(Protocol):
    def month(self, month: str, tenant: str | None = None) -> list[UsageRow]: ...


class UsageReportEndpoint:
    """`handle` is the Starlette endpoint; `store` is the gateway's usage store."""

    def __init__(self, config: GatewayConfig, store: Any) -> None:
        self.config = config
        self.store: UsageReader = store

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
        rows = await self._rows(month, tenant)
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
        return Response(body, media_type=c.CONTENT_TYPE_JSON, headers=headers)

    async def _rows(self, month: str, tenant: str | None) -> list[UsageRow]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await anyio.to_thread.run_sync(self.store.month, month, tenant)
        except (BotoCoreError, ClientError) as exc:
            logger.error("usage store unavailable", extra={"error": type(exc).__name__, "detail": str(exc)})
            raise InternalError("Usage store unavailable", data={"retryable": True}, status=503) from exc


def _param(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if not values:
        return None
    if len(values) > 1 or not values[0]:
        raise InvalidRequest(f"Bad Request: {name} must be given once, not empty")
    return values[0]


def _filename_safe(value: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in value)
