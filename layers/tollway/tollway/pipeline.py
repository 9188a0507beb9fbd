"""What happens to one routed request (`tollway.methods.ROUTED`), in order. Read `handle`.

    check params -> resolve + policy (gate, authorize, publish) -> validate arguments
    -> quota -> mask request -> route + upstream call -> mask response -> guard -> usage

Arguments are validated before the quota is charged: a malformed call costs no units. Once
units are charged, the call is recorded as usage whatever happens next.
"""

from __future__ import annotations

import contextlib
import fnmatch
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from tollway.config import GatewayConfig
from tollway.context import RequestContext
from tollway.errors import ResultWithheld, StorageError
from tollway.masking.stage import MaskingStage
from tollway.methods import Routed
from tollway.policy.arguments import check_arguments
from tollway.policy.exposure import Exposure, Target
from tollway.policy.quota import QuotaEnforcer, QuotaExceeded
from tollway.routing.router import Router
from tollway.store.usage import UsageRecorder
from tollway.telemetry import count, logger, tool_call_metrics


@dataclass
class _Outcome:
    failed: bool = True
    """Until the upstream's result arrives and is neither an error nor withheld."""


class Pipeline:
    def __init__(
        self,
        config: GatewayConfig,
        exposure: Exposure,
        router: Router,
        quota: QuotaEnforcer,
        usage: UsageRecorder,
        masking: MaskingStage,
    ) -> None:
        self.config = config
        self.exposure = exposure
        self.router = router
        self.quota = quota
        self.usage = usage
        self.masking = masking

    async def handle(
        self, ctx: RequestContext, route: Routed, request: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield the notifications, relayed server requests and the final response of one request."""
        params, request_id = request.get("params") or {}, request["id"]
        route.check(params)
        target = await self.exposure.resolve(ctx, route, params)
        if target.definition is not None and "inputSchema" in target.definition:
            check_arguments(target.public_name, target.definition["inputSchema"], params.get("arguments"))
        units = await anyio.to_thread.run_sync(self._admit, ctx, target.public_name) if route.metered else None
        started, outcome = time.perf_counter(), _Outcome()
        try:  # from here on, admitted units are recorded as usage whatever fails
            tenant = ctx.principal.tenant
            if self.masking.needs_hash_key(target.public_name):
                await anyio.to_thread.run_sync(self.masking.load_hash_key)  # may read Secrets Manager
            upstream_params = self.masking.request(tenant, route.method, target.public_name, target.params)
            retry_safe = route.safe or self._idempotent(target)
            call = self.router.call(
                ctx, target.upstream, route.method, upstream_params, request_id, retry_safe=retry_safe
            )
            async with contextlib.aclosing(call):
                async for message in call:
                    message = self.masking.message(tenant, route.method, target.public_name, message)
                    if "method" not in message and "result" in message:
                        outcome.failed = bool(message["result"].get("isError"))
                        if route.guarded:
                            message = {**message, "result": self._guard(message["result"], target, outcome)}
                    yield message
        finally:
            if units is not None:
                await anyio.to_thread.run_sync(self._record, ctx, target.public_name, units, outcome, started)

    async def relay(self, ctx: RequestContext, message: dict[str, Any]) -> None:
        """A 2025-era client's answer to a server request relayed to it: masked, then passed on."""
        await self.router.relay_client_response(ctx, self.masking.client_answer(message))

    def _guard(self, result: dict[str, Any], target: Target, outcome: _Outcome) -> dict[str, Any]:
        """Instruction-like text in a tool result: flag, wrap or withhold it (`definitions.result_injection`)."""
        mode = self.config.definitions.result_injection
        if mode == "off":
            return result
        from tollway.masking.guard import guard_result

        try:
            return guard_result(result, mode, item_name=target.public_name)
        except ResultWithheld:
            outcome.failed = True  # the agent got no result: not a success in usage
            raise

    def _idempotent(self, target: Target) -> bool:
        """A tool whose call may be repeated: annotated `idempotentHint`, or configured so."""
        definition = target.definition or {}
        if (definition.get("annotations") or {}).get("idempotentHint") is True:
            return True
        own = str(target.params.get("name", ""))
        return any(fnmatch.fnmatchcase(own, p) for p in self.router.upstream(target.upstream).idempotent_tools)

    # --- quota and usage ---------------------------------------------------------------------------
    def _admit(self, ctx: RequestContext, tool: str) -> int:
        try:
            return self.quota.admit(ctx.principal, tool).units
        except QuotaExceeded:
            self._safely(lambda: self.usage.record(ctx.principal.tenant, tool, rejected=True))
            raise

    def _record(self, ctx: RequestContext, tool: str, units: int, outcome: _Outcome, started: float) -> None:
        """Usage for finance (durable) and metrics. Calls that fail upstream still consume their
        units: the upstream may have done the work, and a retry storm must not be free."""
        latency_ms = (time.perf_counter() - started) * 1000
        tenant = ctx.principal.tenant
        self._safely(lambda: self.usage.record(tenant, tool, units=units, error=outcome.failed, latency_ms=latency_ms))
        known = tenant if tenant in self.config.tenants else "other"
        tool_call_metrics(known, tool, latency_ms, outcome.failed, units)

    @staticmethod
    def _safely(write: Any) -> None:
        # The call already happened: a usage write that fails is logged and counted, not answered.
        try:
            write()
        except StorageError:
            logger.error("usage record lost")
            count("UsageWriteFailures", 1)
