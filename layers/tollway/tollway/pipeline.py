"""What happens to one routed request (`tollway.methods.ROUTED`), in order. Read `handle`.

    check params -> resolve + policy (gate, authorize, publish) -> validate arguments (refused: a
    tool execution error from 2025-11-25 on, -32602 before)
    -> mask request -> approval -> quota -> route + upstream call -> mask response -> guard -> usage

Arguments are validated, and a call that waits for approval is answered, before the quota is
charged: a malformed or pending call costs no units. The approval judges the masked arguments,
what the upstream would get. The write that admits a call also records its usage; its outcome
(error, latency) follows whatever
happens next.
"""

from __future__ import annotations

import contextlib
import fnmatch
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio

from tollway import spec
from tollway.blocking import run_blocking
from tollway.config import GatewayConfig
from tollway.context import RequestContext
from tollway.errors import ArgumentsRefused, ResultWithheld, UpstreamError, UpstreamTimeout
from tollway.masking.stage import MaskingStage
from tollway.methods import Routed
from tollway.policy.approvals import Approvals, without_own_state
from tollway.policy.arguments import check_arguments
from tollway.policy.exposure import Exposure, Target
from tollway.policy.quota import Admission, QuotaEnforcer, QuotaExceeded
from tollway.routing.router import Router
from tollway.telemetry import metrics
from tollway.telemetry.audit import digest


class Pipeline:
    def __init__(
        self,
        config: GatewayConfig,
        exposure: Exposure,
        router: Router,
        quota: QuotaEnforcer,
        masking: MaskingStage,
        approvals: Approvals,
    ) -> None:
        self.config = config
        self.exposure = exposure
        self.router = router
        self.quota = quota
        self.masking = masking
        self.approvals = approvals

    async def handle(
        self, ctx: RequestContext, route: Routed, request: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield the notifications, relayed server requests and the final response of one request.
        What happened goes on `ctx.audit` (outcome, units, upstream time, digests)."""
        facts, started = ctx.audit, time.perf_counter()
        params, request_id = request.get("params") or {}, request["id"]
        route.check(params)
        target = await self.exposure.resolve(ctx, route, params)
        if target.definition is not None and "inputSchema" in target.definition:
            try:
                check_arguments(target.public_name, target.definition["inputSchema"], params.get("arguments"))
            except ArgumentsRefused as refused:
                if not spec.refuses_arguments_with_a_result(ctx.protocol_version):
                    raise
                # Audited as the -32602 would be; not sent upstream, not charged.
                facts.decision, facts.rule, facts.outcome = "invalid", type(refused).__name__, "refused"
                yield {"jsonrpc": "2.0", "id": request_id, "result": refused.tool_result()}
                return
        tenant = ctx.principal.tenant
        if self.masking.needs_hash_key(target.public_name):
            await run_blocking(self.masking.load_hash_key)  # may read Secrets Manager
        masked = self.masking.request(tenant, route.method, target.public_name, target.params)
        upstream_params = without_own_state(masked)  # the gateway's own approval round trip stays here
        facts.arguments_sha256 = digest(upstream_params.get("arguments", _without_meta(upstream_params)))
        arguments = upstream_params.get("arguments")
        if route.method == "tools/call" and self.approvals.rule(tenant, target.public_name, arguments) is not None:
            check = self.approvals.check  # a rule applies: the store decides, off the event loop
            verdict = await run_blocking(check, ctx, target.public_name, arguments, facts.arguments_sha256)
            if verdict is not None and not verdict.proceed:
                yield {"jsonrpc": "2.0", "id": request_id, "result": self.approvals.answer(ctx, verdict, params)}
                return
        admission = await self._admit(ctx, target.public_name) if route.metered else None
        facts.units = admission.units if admission else 0
        called = time.perf_counter()
        try:  # from here on, the admitted call's outcome is recorded whatever fails
            retry_safe = route.safe or self._idempotent(target)
            call = self.router.call(
                ctx, target.upstream, route.method, upstream_params, request_id, retry_safe=retry_safe, cancellable=True
            )
            async with contextlib.aclosing(call):
                async for message in call:
                    message = self.masking.message(tenant, route.method, target.public_name, message)
                    if "method" not in message and "result" in message:
                        facts.upstream_ms = _ms_since(called)
                        facts.outcome = "tool_error" if message["result"].get("isError") else "ok"
                        if route.guarded:
                            message = {**message, "result": self._guard(message["result"], target)}
                        facts.result_sha256 = digest(message["result"])
                    elif "method" not in message and "error" in message:
                        facts.upstream_ms, facts.outcome = _ms_since(called), _error_outcome(message["error"])
                    yield message
        except BaseException as exc:
            facts.outcome = facts.outcome if facts.outcome and facts.outcome != "ok" else _outcome_of(exc)
            if facts.upstream_ms is None:
                facts.upstream_ms = _ms_since(called)
            raise
        finally:
            if admission is not None and self._record(ctx, target.public_name, admission, started):
                # Shielded: a call the caller abandoned (its task cancelled) still writes its outcome.
                with anyio.CancelScope(shield=True):
                    await run_blocking(self.quota.flush_due)

    async def cancel(self, ctx: RequestContext, params: dict[str, Any]) -> None:
        """A 2025-era client's `notifications/cancelled`: passed on to the upstream request it names
        (`Router.cancel`). Its free-text reason stays here."""
        request_id = params.get("requestId")
        if isinstance(request_id, str | int) and not isinstance(request_id, bool):
            await self.router.cancel(ctx, request_id)

    async def relay(self, ctx: RequestContext, message: dict[str, Any]) -> None:
        """A 2025-era client's answer to a server request relayed to it: masked, then passed on."""
        await self.router.relay_client_response(ctx, self.masking.client_answer(message))

    def _guard(self, result: dict[str, Any], target: Target) -> dict[str, Any]:
        """Instruction-like text in a tool result: flag, wrap or withhold it (`definitions.result_injection`)."""
        mode = self.config.definitions.result_injection
        if mode == "off":
            return result
        from tollway.masking.guard import guard_result

        return guard_result(result, mode, item_name=target.public_name)  # ResultWithheld: no result

    def _idempotent(self, target: Target) -> bool:
        """A tool whose call may be repeated: annotated `idempotentHint`, or configured so."""
        definition = target.definition or {}
        if (definition.get("annotations") or {}).get("idempotentHint") is True:
            return True
        own = str(target.params.get("name", ""))
        return any(fnmatch.fnmatchcase(own, p) for p in self.router.upstream(target.upstream).idempotent_tools)

    # --- quota and usage ---------------------------------------------------------------------------
    async def _admit(self, ctx: RequestContext, tool: str) -> Admission:
        """Admission and the call's usage record: one write (`policy/quota.py`), off the event loop;
        none at all for a tenant without a plan when usage is not recorded."""
        try:
            if not self.quota.blocking(ctx.principal):
                return self.quota.admit(ctx.principal, tool)
            return await run_blocking(self.quota.admit, ctx.principal, tool)
        except QuotaExceeded as refused:
            ctx.audit.decision, ctx.audit.rule = "rate_limited", str((refused.data or {}).get("limit", ""))
            raise

    def _record(self, ctx: RequestContext, tool: str, admission: Admission, started: float) -> bool:
        """The call's outcome for finance and metrics (in memory); whether a usage write is due.
        Calls that fail upstream still consume their units: the upstream may have done the work,
        and a retry storm must not be free."""
        facts, latency_ms = ctx.audit, _ms_since(started)
        failed = facts.outcome != "ok"  # an error, a withheld result, or no answer at all
        tenant = ctx.principal.tenant
        cancelled = facts.outcome == "cancelled"
        due = self.quota.settle(
            ctx.principal, tool, admission, error=failed, latency_ms=latency_ms, cancelled=cancelled
        )
        metrics.tool_call(
            self.config.metric_tenant(tenant),
            tool,
            latency_ms=latency_ms,
            upstream_ms=facts.upstream_ms,
            error=failed,
            units=admission.units,
        )
        return due


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _without_meta(params: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if key != "_meta"}


def _error_outcome(error: dict[str, Any]) -> str:
    """The audit outcome of an upstream's error answer: its answer to a cancelled call, or an error."""
    return "cancelled" if error.get("code") == spec.REQUEST_CANCELLED else "upstream_error"


def _outcome_of(error: BaseException) -> str:
    """The audit outcome of a call that ended in `error` (a class, never its text)."""
    if isinstance(error, UpstreamTimeout):
        return "timeout"
    if isinstance(error, UpstreamError):
        return "upstream_error"
    if isinstance(error, ResultWithheld):
        return "result_withheld"
    if isinstance(error, Exception):
        return "error"
    return "cancelled"  # the caller went away (GeneratorExit, cancellation)
