"""Where the `tollway` admin commands get their answers: the one switch between the admin API and
DynamoDB.

    backend(url=..., token=..., table=..., config_path=...) -> Backend

Given a gateway URL and an admin token (`--url`/`--token`, or `TOLLWAY_URL`/`TOLLWAY_TOKEN`) a
command calls the gateway's admin API over HTTP (`HttpBackend`); otherwise it reads and writes
the DynamoDB table itself (`DirectBackend`: table from `--table`/`TOLLWAY_TABLE`, endpoint from
the boto3 environment, e.g. `AWS_ENDPOINT_URL_DYNAMODB` beside `tollway dev`). Both answer in
the admin API's shapes (`tollway.admin`), so a command prints the same either way. What only a
running gateway knows (upstream eras, circuit breakers, cached catalogs) is null when read
directly. Failures are `AdminClientError`, one line for the operator.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import quote

from tollway.config import GatewayConfig, load_config
from tollway.errors import StorageError

URL_ENV = "TOLLWAY_URL"
TOKEN_ENV = "TOLLWAY_TOKEN"
HTTP_TIMEOUT_SECONDS = 30.0


class AdminClientError(Exception):
    """One line for the operator (no traceback); `status` is the command's exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Backend(Protocol):
    def list_sessions(self, tenant: str, cursor: str | None = None) -> dict[str, Any]:
        """One page: {"tenant", "sessions": [...], "nextCursor"?}."""
        ...

    def end_session(self, session_id: str, by: str) -> dict[str, Any]: ...
    def list_upstreams(self) -> dict[str, Any]: ...
    def pending_definitions(self) -> dict[str, Any]: ...
    def approve_definition(self, upstream: str, kind: str, name: str, by: str) -> dict[str, Any]: ...
    def usage_report(self, month: str, tenant: str | None, format: str) -> str: ...
    def list_approvals(self, status: str | None, tenant: str | None) -> list[dict[str, Any]]: ...
    def decide_approval(self, approval_id: str, approve: bool, by: str) -> dict[str, Any]:
        """`by` names the approver in direct mode; through the API the token's tenant/subject does."""
        ...


def _warn(line: str) -> None:
    print(f"tollway: {line}", file=sys.stderr)


def backend(
    *,
    url: str | None = None,
    token: str | None = None,
    table: str | None = None,
    config_path: str | None = None,
    warn: Callable[[str], None] = _warn,
) -> Backend:
    """The admin API when a gateway URL and token are given (flags, else environment), else
    DynamoDB. `warn` says what the operator should know but that does not stop a command."""
    url = url or os.environ.get(URL_ENV) or None
    token = token or os.environ.get(TOKEN_ENV) or None
    if url or token:
        if not (url and token):
            raise AdminClientError(f"--url and --token go together (or {URL_ENV} and {TOKEN_ENV})", status=2)
        return HttpBackend(url, token)
    return DirectBackend(table, config_path, warn)


# --- over HTTP ------------------------------------------------------------------------------------------
class HttpBackend:
    def __init__(self, url: str, token: str) -> None:
        base = url.rstrip("/")
        # The gateway's URL, with or without its MCP path.
        self.base = base[: -len("/mcp")] if base.endswith("/mcp") else base
        self.token = token

    def list_sessions(self, tenant: str, cursor: str | None = None) -> dict[str, Any]:
        params = {"tenant": tenant, **({"cursor": cursor} if cursor else {})}
        return self._call("GET", "/admin/sessions", params=params).json()

    def end_session(self, session_id: str, by: str) -> dict[str, Any]:
        return self._call("DELETE", f"/admin/sessions/{quote(session_id, safe='')}", missing="no such session").json()

    def list_upstreams(self) -> dict[str, Any]:
        return self._call("GET", "/admin/upstreams").json()

    def pending_definitions(self) -> dict[str, Any]:
        return self._call("GET", "/admin/definitions/pending").json()

    def approve_definition(self, upstream: str, kind: str, name: str, by: str) -> dict[str, Any]:
        # The gateway records the token's tenant/subject as the approver, not `by`.
        body = {"upstream": upstream, "kind": kind, "name": name}
        return self._call("POST", "/admin/definitions/approve", json=body, missing=f"no pending {kind} {name!r}").json()

    def usage_report(self, month: str, tenant: str | None, format: str) -> str:
        params = {"month": month, "format": format, **({"tenant": tenant} if tenant else {})}
        return self._call("GET", "/admin/usage", params=params).text

    def list_approvals(self, status: str | None, tenant: str | None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("status", status), ("tenant", tenant)) if v}
        return self._call("GET", "/admin/approvals", params=params).json()["approvals"]

    def decide_approval(self, approval_id: str, approve: bool, by: str) -> dict[str, Any]:
        path = f"/admin/approvals/{quote(approval_id, safe='')}/{'approve' if approve else 'deny'}"
        return self._call("POST", path, missing="no approval with that id").json()

    def _call(self, method: str, path: str, *, missing: str = "not found", **kwargs: Any) -> Any:
        import httpx

        try:
            response = httpx.request(
                method,
                self.base + path,
                headers={"authorization": f"Bearer {self.token}"},
                timeout=HTTP_TIMEOUT_SECONDS,
                follow_redirects=False,
                **kwargs,
            )
        except httpx.InvalidURL:
            raise AdminClientError(f"{self.base} is not a URL", status=2) from None
        except httpx.ConnectError:
            raise AdminClientError(f"cannot connect to the gateway at {self.base}") from None
        except httpx.TimeoutException:
            raise AdminClientError(f"the gateway at {self.base} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise AdminClientError(f"cannot reach the gateway at {self.base} ({type(exc).__name__})") from None
        if response.status_code < 300:
            return response
        raise AdminClientError(_refusal(response.status_code, _message(response), missing))


def _refusal(status: int, message: str | None, missing: str) -> str:
    if status == 401:
        return "the gateway refused the token (401 Unauthorized): expired, or not one it trusts"
    if status == 403 and message == "Forbidden: insufficient scope":
        return "the token lacks the admin scope (403 Forbidden)"
    if status == 404:
        return f"{missing} (404)"
    return f"{status} {message or _phrase(status)}"


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _message(response: Any) -> str | None:
    """The gateway's stable error message (a JSON-RPC error body), at most one short line."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return None
    return " ".join(message.split())[:200] if isinstance(message, str) else None


# --- straight to DynamoDB -------------------------------------------------------------------------------
class DirectBackend:
    """The operator's own AWS credentials against the table; no gateway involved."""

    def __init__(self, table: str | None, config_path: str | None, warn: Callable[[str], None] = _warn) -> None:
        from tollway.store.table import use_local_credentials_for_loopback

        use_local_credentials_for_loopback()
        self.table = table or os.environ.get("TOLLWAY_TABLE") or "TollwayTable"
        self.config_path = config_path
        self.warn = warn

    def config(self) -> GatewayConfig:
        return load_config(self.config_path)  # ConfigError: one line, exit 2, in the CLI

    def list_sessions(self, tenant: str, cursor: str | None = None) -> dict[str, Any]:
        from tollway.admin import DEFAULT_PAGE, session_row
        from tollway.store.sessions import DynamoSessionStore, InvalidCursor

        try:
            sessions, next_cursor = self._read(
                lambda: DynamoSessionStore(self.table).list_tenant(tenant, DEFAULT_PAGE, cursor)
            )
        except InvalidCursor:
            raise AdminClientError("that cursor was not given by this listing", status=2) from None
        body: dict[str, Any] = {"tenant": tenant, "sessions": [session_row(s) for s in sessions]}
        if next_cursor is not None:
            body["nextCursor"] = next_cursor
        return body

    def end_session(self, session_id: str, by: str) -> dict[str, Any]:
        import asyncio

        from tollway.admin import ended_row
        from tollway.routing.router import Router
        from tollway.routing.upstream import http_client
        from tollway.store.sessions import DynamoSessionStore

        store = DynamoSessionStore(self.table)
        session = self._read(lambda: store.get(session_id))
        if session is None:
            raise AdminClientError("no such session (it ended, expired, or never existed)")
        # The gateway's own way to end one: its upstream sessions too (their URLs are in the config).
        router = Router(self.config(), store)

        async def end() -> None:
            try:
                await router.end_session(session)
            finally:
                await http_client().aclose()

        self._read(lambda: asyncio.run(end()))
        self._audit(by, "sessions.end", f"{session.tenant}/{session.subject}")
        return ended_row(session)

    def list_upstreams(self) -> dict[str, Any]:
        from tollway.admin import upstream_row
        from tollway.store.pins import DynamoPinStore

        config, store = self.config(), DynamoPinStore(self.table)
        rows = [upstream_row(u, self._read(lambda u=u: store.get_all(u.name)).values(), None) for u in config.upstreams]
        return {"observedBy": None, "upstreams": rows}

    def pending_definitions(self) -> dict[str, Any]:
        from tollway.admin import pending_row
        from tollway.store.pins import DynamoPinStore

        names = [u.name for u in self.config().upstreams]
        pins = self._read(lambda: DynamoPinStore(self.table).list_pending(names))
        return {"pending": [pending_row(p) for p in pins]}

    def approve_definition(self, upstream: str, kind: str, name: str, by: str) -> dict[str, Any]:
        from tollway.admin import approved_row
        from tollway.policy.definitions import DefinitionGate, NothingToApprove
        from tollway.store.pins import DynamoPinStore

        config = self.config()
        if upstream not in {u.name for u in config.upstreams}:
            raise AdminClientError(f"unknown upstream {upstream!r}", status=2)
        gate = DefinitionGate(config.definitions, DynamoPinStore(self.table))
        try:
            pin = self._read(lambda: gate.approve(upstream, kind, name, by))
        except NothingToApprove:
            raise AdminClientError(f"no pending {kind} {name!r} on {upstream}") from None
        self._audit(by, "definitions.approve", f"{upstream}/{kind}/{name}")
        return approved_row(pin)

    def list_approvals(self, status: str | None, tenant: str | None) -> list[dict[str, Any]]:
        return self._read(lambda: self._approvals().listing(status, tenant))

    def decide_approval(self, approval_id: str, approve: bool, by: str) -> dict[str, Any]:
        from tollway.errors import GatewayError

        approvals = self._approvals()
        try:
            decided = self._read(lambda: approvals.decide(approval_id, approve, f"cli/{by}"))
        except GatewayError as exc:  # not found, not pending: the gateway's own stable message
            raise AdminClientError(exc.message) from None
        self._audit(by, "approvals.approve" if approve else "approvals.deny", decided.id)
        return approvals.view(decided)

    def _approvals(self) -> Any:
        from tollway.policy.approvals import Approvals
        from tollway.store.approvals import DynamoApprovalStore

        return Approvals(self.config(), DynamoApprovalStore(self.table))

    def _audit(self, by: str, action: str, target: str) -> None:
        """An operator's action taken straight on the table: an admin audit record, where the
        gateway's records go from here (`TOLLWAY_AUDIT_LOG_GROUP`, `TOLLWAY_AUDIT_FILE`, else `audit.file`)."""
        import uuid
        from types import SimpleNamespace

        from tollway.telemetry.audit import AuditLog, admin_record

        operator = SimpleNamespace(tenant=None, subject=f"cli/{by}"[:128])
        record = admin_record(
            request_id=f"cli-{uuid.uuid4().hex}",
            principal=operator,
            action=action,
            target=target[:256],
            outcome="ok",
            status=200,
            ms=0.0,
        )
        AuditLog.create(self.config().audit.file).write(record)

    def usage_report(self, month: str, tenant: str | None, format: str) -> str:
        from tollway.finance.report import render, summarize
        from tollway.store.ledger import DynamoLedger
        from tollway.store.usage import UsageReader

        rows = self._read(lambda: UsageReader(DynamoLedger(self.table)).month(month, tenant))
        model = self._cost_model()
        return render(summarize(rows, month, tenant=tenant, model=model), format)  # type: ignore[arg-type]

    def _cost_model(self) -> Any:
        """The config's prices; without `--config`, an unreadable default config means the
        default prices (the counts do not depend on them)."""
        from tollway.config import CostModel
        from tollway.errors import ConfigError

        if self.config_path is not None:
            return self.config().finance.cost_model
        try:
            return self.config().finance.cost_model
        except ConfigError as exc:
            self.warn(f"{exc}; estimating cost with the default cost model")
            return CostModel()

    def _read(self, operation: Any) -> Any:
        try:
            return operation()
        except StorageError as exc:
            from tollway.local_state import describe_failure

            raise AdminClientError(describe_failure(exc, self.table)[0]) from None
