"""Which tool calls wait for a human decision, and what becomes of them: the approval rule.

    first rule matching (tool glob, tenant globs, condition on the masked arguments)
    -> the call's digest (SHA-256 of its masked arguments, canonical JSON)
    -> the approval this caller's identical call has:
         approved, unexpired  -> consumed (a conditional write): the call proceeds, once
         pending, unexpired   -> answered "approval pending" (same id)
         denied, unexpired    -> answered "approval denied"
         none, expired, used  -> a new pending approval, an EventBridge event, answered "pending"

Audit: the call's own record says `pending_approval` (or `denied`) with the approval id, and
the call that uses an approval carries its id too (`ctx.audit`); approvers' decisions are admin
records (`tollway.admin`, or `tollway approvals` in direct mode).

Different arguments make a different digest, so they need their own approval. The condition
reads the masked arguments, as the digest does: what is judged is what the upstream will get.
A condition that cannot be evaluated (the argument is missing, or not comparable) holds: when in
doubt, a human is asked.

Answers: a tool result with `isError: true` whose text names the approval (the SDK clients hand
it to the model as the tool's output, so the agent can tell its user and retry; a JSON-RPC error
would surface as an exception instead). A 2026-07-28 client that can open URLs (elicitation
capability `url`) gets an `input_required` result instead: a URL elicitation pointing at the
approval and `requestState` naming it. Its retry is judged like any call — by the store, keyed
by caller, tool and digest — so the state needs no signature; it only marks the gateway's own
round trip, whose `inputResponses`/`requestState` are not passed upstream.
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from tollway import aws
from tollway.config import ApprovalRule, Condition, GatewayConfig
from tollway.context import Principal, RequestContext, new_id
from tollway.errors import ApprovalNotPending, Forbidden, NotFound, StorageError
from tollway.store.approvals import Approval, ApprovalStore, Status
from tollway.telemetry import logger, metrics

STATE_PREFIX = "tollway-approval:"
"""`requestState` of the gateway's own input_required round trip: the prefix, then the approval id."""
INPUT_KEY = "tollway-approval"
META_KEY = "io.tollway/approval"
EVENT_SOURCE = "tollway"
EVENT_DETAIL_TYPE = "Approval Requested"
_ATTEMPTS = 3
"""Reads of the call's approval when other instances race on it (each retry follows a lost write)."""


def holds(condition: Condition, arguments: Any) -> bool:
    """Whether `condition` holds of the arguments; True when it cannot be told (fail closed)."""
    value = arguments
    for part in condition.path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return True
    literal, op = condition.literal, condition.op
    if op in ("==", "!="):
        # JSON equality: true is not 1, and 1 equals 1.0.
        equal = type(value) is type(literal) or (_number(value) and _number(literal))
        equal = equal and value == literal
        return equal if op == "==" else not equal
    if not ((_number(value) and _number(literal)) or (isinstance(value, str) and isinstance(literal, str))):
        return True
    return {">": value > literal, ">=": value >= literal, "<": value < literal, "<=": value <= literal}[op]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Verdict(NamedTuple):
    """What the rule decided for one call that needs approval."""

    approval: Approval
    proceed: bool
    """True only for the one call that consumed an approved approval."""
    created: bool = False


class Approvals:
    def __init__(
        self,
        config: GatewayConfig,
        store: ApprovalStore,
        notify: Callable[[Approval], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.settings = config.approvals
        self.store = store
        self.notify = notify if notify is not None else EventBridgeNotifier(self.settings.event_bus)
        self.clock = clock
        self._rules = [
            (rule, None if rule.when is None else Condition.parse(rule.when)) for rule in self.settings.rules
        ]
        """Each rule with its condition, parsed once (the config checked it at load)."""

    def rule(self, tenant: str, tool: str, arguments: Any) -> ApprovalRule | None:
        """The first rule that makes this call wait for approval."""
        for rule, condition in self._rules:
            if not any(fnmatch.fnmatchcase(tool, p) for p in rule.match):
                continue
            if rule.tenants is not None and not any(fnmatch.fnmatchcase(tenant, p) for p in rule.tenants):
                continue
            if condition is None or holds(condition, arguments):
                return rule
        return None

    # --- a call ------------------------------------------------------------------------------------
    def check(self, ctx: RequestContext, tool: str, arguments: Any, call_digest: str) -> Verdict | None:
        """None if the call needs no approval; else the verdict (blocking store I/O: off the loop).
        `arguments`: masked, as they would go upstream; `call_digest`: their SHA-256, as audited
        (`tollway.telemetry.audit.digest`)."""
        principal = ctx.principal
        if self.rule(principal.tenant, tool, arguments) is None:
            return None
        verdict = self._judge(principal, tool, call_digest)
        ctx.audit.approval_id = verdict.approval.id
        if not verdict.proceed:  # answered with a result (HTTP 200), but nothing ran
            ctx.audit.decision = "pending_approval" if verdict.approval.status == "pending" else "denied"
            ctx.audit.rule, ctx.audit.outcome = f"approval {verdict.approval.status}", "refused"
        return verdict

    def _judge(self, principal: Principal, tool: str, call_digest: str) -> Verdict:
        for _ in range(_ATTEMPTS):
            now = int(self.clock())
            current = self.store.current(principal.tenant, principal.subject, tool, call_digest)
            if current is not None and not current.expired(now):
                if current.status in ("pending", "denied"):
                    return Verdict(current, proceed=False)
                if current.status == "approved":
                    if self.store.consume(current, now):
                        return Verdict(current, proceed=True)
                    continue  # another retry used it first: read again
            fresh = Approval(
                id=new_id(12),
                tenant=principal.tenant,
                subject=principal.subject,
                tool=tool,
                digest=call_digest,
                status="pending",
                created_at=now,
                expires_at=now + self.settings.expiry_seconds,
            )
            if self.store.create(fresh, replacing=current.id if current is not None else None):
                metrics.tenant_count("ApprovalsPending", self.config.metric_tenant(fresh.tenant))
                self.notify(fresh)
                return Verdict(fresh, proceed=False, created=True)
        raise StorageError("Approval store unavailable")  # the call's approval kept changing under us

    # --- the answer to a call that does not proceed -----------------------------------------------
    def answer(self, ctx: RequestContext, verdict: Verdict, params: dict[str, Any]) -> dict[str, Any]:
        """The result a call that waits (or was denied) gets, in the caller's era."""
        approval = verdict.approval
        info = {"id": approval.id, "status": approval.status, "expiresAt": approval.expires_at}
        if approval.status == "denied":
            text = f"Approval denied: {approval.tool} was denied by an approver (approval {approval.id}). Do not retry."
            return _tool_error(text, info)
        retry = own_state(params)
        if ctx.modern and not retry and _opens_urls(ctx.client_capabilities):
            message = (
                f"{approval.tool} needs an approver's decision. Open the link to follow approval "
                f"{approval.id}; the call continues once it is approved."
            )
            elicitation = {"mode": "url", "message": message, "url": self.url(approval.id)}
            return {
                "resultType": "input_required",
                "inputRequests": {INPUT_KEY: {"method": "elicitation/create", "params": elicitation}},
                "requestState": STATE_PREFIX + approval.id,
            }
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(approval.expires_at))
        text = (
            f"Approval required: {approval.tool} waits for an approver's decision (approval id {approval.id}, "
            f"expires {expires}); retry the same call with the same arguments after approval."
        )
        return _tool_error(text, info)

    def url(self, approval_id: str) -> str:
        if self.settings.approval_url:
            return self.settings.approval_url.replace("{id}", approval_id)
        parts = urlsplit(self.config.resource)
        return f"{parts.scheme}://{parts.netloc}/admin/approvals/{approval_id}"

    # --- approvers ---------------------------------------------------------------------------------
    def get(self, approval_id: str) -> Approval:
        approval = self.store.get(approval_id) if _valid_id(approval_id) else None
        if approval is None:
            raise NotFound("No approval with that id")
        return approval

    def decide(self, approval_id: str, approve: bool, by: str, approver: Principal | None = None) -> Approval:
        """An approver's decision. `approver`: the admin API's caller, who may not decide their own call."""
        approval = self.get(approval_id)
        if approver is not None and (approver.tenant, approver.subject) == (approval.tenant, approval.subject):
            raise Forbidden("Forbidden: an approver cannot decide their own call")
        status: Status = "approved" if approve else "denied"
        decided = self.store.decide(approval_id, status, by, int(self.clock()))
        if decided is None:
            raise ApprovalNotPending()
        return decided

    def listing(self, status: str | None = None, tenant: str | None = None) -> list[dict[str, Any]]:
        """Approvals as the admin API and CLI show them; `status` may be `expired` too."""
        now = self.clock()
        shown = [self.view(a, now) for a in self.store.list() if tenant is None or a.tenant == tenant]
        return [a for a in shown if status is None or a["status"] == status]

    def view(self, approval: Approval, now: float | None = None) -> dict[str, Any]:
        body = approval.as_json()
        if approval.status in ("pending", "approved") and approval.expired(self.clock() if now is None else now):
            body["status"] = "expired"
        return body


STATUS_FILTERS = ("pending", "approved", "denied", "consumed", "expired")


def own_state(params: dict[str, Any]) -> bool:
    """Whether the request retries the gateway's own approval round trip (2026-07-28)."""
    state = params.get("requestState")
    return isinstance(state, str) and state.startswith(STATE_PREFIX)


def without_own_state(params: dict[str, Any]) -> dict[str, Any]:
    """The params to send upstream: the gateway's own round trip is not the upstream's business."""
    if not own_state(params):
        return params
    return {k: v for k, v in params.items() if k not in ("requestState", "inputResponses")}


def _opens_urls(capabilities: dict[str, Any]) -> bool:
    elicitation = capabilities.get("elicitation")
    return isinstance(elicitation, dict) and isinstance(elicitation.get("url"), dict)


def _tool_error(text: str, info: dict[str, Any]) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": True, "_meta": {META_KEY: info}}


def _valid_id(approval_id: str) -> bool:
    return 0 < len(approval_id) <= 64 and all(ch.isalnum() or ch in "-_" for ch in approval_id)


class EventBridgeNotifier:
    """`Approval Requested` on an EventBridge bus (source `tollway`), so a team can route it to
    Slack or e-mail. The detail names the approval, never the arguments. An event that cannot be
    delivered is logged, not answered: the approval is stored already and the admin list shows it."""

    def __init__(self, bus: str | None) -> None:
        self.bus = bus
        self._client: Any = None

    def __call__(self, approval: Approval) -> None:
        if not self.bus:
            return
        detail = {
            "approvalId": approval.id,
            "tenant": approval.tenant,
            "subject": approval.subject,
            "tool": approval.tool,
            "argumentsSha256": approval.digest,
            "expiresAt": approval.expires_at,
        }
        entry = {
            "Source": EVENT_SOURCE,
            "DetailType": EVENT_DETAIL_TYPE,
            "Detail": json.dumps(detail),
            "EventBusName": self.bus,
        }
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            reply = self.client.put_events(Entries=[entry])
            failed = reply.get("FailedEntryCount", 0)
        except (BotoCoreError, ClientError) as exc:
            failed, cause = 1, type(exc).__name__
        else:
            cause = ((reply.get("Entries") or [{}])[0]).get("ErrorCode") if failed else None
        if failed:
            logger.error("approval event not delivered", extra={"approval_id": approval.id, "cause": cause})

    @property
    def client(self) -> Any:
        if self._client is None:
            # A slow bus must not hold the agent's call: a shorter wait for an answer, fewer tries.
            self._client = aws.client("events", read_timeout=3, retries={"total_max_attempts": 2})
        return self._client
