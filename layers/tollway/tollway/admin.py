"""The admin API's shared rule, and its definition-approval endpoints.

Every `/admin/…` request passes the auth stage like `/mcp` (401 otherwise) and must also carry
`finance.admin_scope` (403 `insufficient_scope`); it is never served anonymously.

    GET  /admin/definitions/pending                  what changed or awaits approval
    POST /admin/definitions/approve  {"upstream", "name", "kind": "tool"}   pin what is served now
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from tollway.auth.middleware import insufficient_scope
from tollway.config import GatewayConfig
from tollway.context import ANONYMOUS, Principal
from tollway.errors import GatewayError, InternalError, InvalidRequest
from tollway.protocol import constants as c
from tollway.protocol.endpoint import json_response
from tollway.store.pins import PinStore

KINDS = ("tool", "resource", "resource_template", "prompt")


class AdminRequiresAuthentication(GatewayError):
    status, code, message = 403, c.INVALID_REQUEST, "Forbidden: the admin API requires authentication"


class NotFound(GatewayError):
    status, code, message = 404, c.INVALID_REQUEST, "Nothing awaits approval under that name"


def admin_principal(request: Request, config: GatewayConfig) -> Principal:
    # The auth stage leaves ANONYMOUS exactly when the gateway runs without authentication.
    principal: Principal = request.scope.get("principal", ANONYMOUS)
    if principal is ANONYMOUS:
        raise AdminRequiresAuthentication()
    scope = config.finance.admin_scope
    if scope not in principal.scopes:
        raise insufficient_scope(config, [scope], [scope], tenant=principal.tenant, path=request.url.path)
    return principal


class DefinitionsAdmin:
    def __init__(self, config: GatewayConfig, pins: PinStore) -> None:
        self.config = config
        self.pins = pins

    async def pending(self, request: Request) -> Response:
        admin_principal(request, self.config)
        upstreams = [u.name for u in self.config.upstreams]
        pins = await _store(lambda: self.pins.list_pending(upstreams))
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
        from tollway.policy.definitions import NothingToApprove, approve_current

        principal = admin_principal(request, self.config)
        body = await _json_object(request)
        upstream, name, kind = body.get("upstream"), body.get("name"), body.get("kind", "tool")
        if not isinstance(upstream, str) or upstream not in {u.name for u in self.config.upstreams}:
            raise InvalidRequest("Bad Request: upstream must name a configured upstream")
        if not isinstance(name, str) or not name or kind not in KINDS:
            raise InvalidRequest(f"Bad Request: name is required and kind is one of {', '.join(KINDS)}")
        by = f"{principal.tenant}/{principal.subject}"
        try:
            pin = await _store(lambda: approve_current(self.pins, upstream, kind, name, by))
        except NothingToApprove:
            raise NotFound() from None
        return json_response({"upstream": pin.upstream, "kind": pin.kind, "name": pin.name, "approvedHash": pin.hash})


async def _store(operation: Callable[[], Any]) -> Any:
    """Pin store I/O off the event loop; its failure is a retryable 503, as for /admin/usage."""
    try:
        return await anyio.to_thread.run_sync(operation)
    except InternalError as exc:
        raise InternalError("Pin store unavailable", data={"retryable": True}, status=503) from exc


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise InvalidRequest("Bad Request: body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidRequest("Bad Request: body must be a JSON object")
    return body
