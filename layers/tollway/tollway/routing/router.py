"""Many upstreams behind one endpoint: which era each speaks, and one call to one of them.

An upstream's era is learned once per warm instance: `server/discover` for 2026-07-28 and, for
`protocol: auto`, `initialize` when it does not answer that; whether a 2026-07-28 upstream also
speaks the 2025 era is asked only when a 2025-era caller needs it (by opening its session). A
failed probe is remembered for `probe_retry_seconds`.

A call has one budget, the upstream's `timeout_seconds` (and on Lambda the invocation's
remaining time), shared by the probe, opening a session, retries and the call itself. Retries
(jittered backoff) happen only where safe: the request never reached the upstream, or the caller
says the request is safe to repeat (lists, idempotent tools), and nothing was relayed yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple

import anyio

from tollway import spec
from tollway.config import GatewayConfig, UpstreamConfig
from tollway.context import Deadline, RequestContext, Session, UpstreamSession
from tollway.errors import UpstreamAuthError, UpstreamError, UpstreamInvalidResponse, UpstreamUnavailable
from tollway.routing import publish
from tollway.routing.catalog import Catalog, log_skip
from tollway.routing.namespace import Namespace
from tollway.routing.resilience import backoff
from tollway.routing.sessions import UpstreamSessions
from tollway.routing.upstream import (
    STREAM_PAUSED,
    NotSpoken,
    SessionLost,
    UpstreamClient,
    UpstreamInfo,
    drain,
    next_request_id,
)
from tollway.store.sessions import SessionStore
from tollway.telemetry import logger

SERVER_REQUEST_ID_PREFIX = "tw:"
CANCEL_NOTICE_SECONDS = 2.0
"""How long telling an upstream that a call was abandoned may take."""
_ENVELOPE_KEYS = (spec.META_PROTOCOL_VERSION, spec.META_CLIENT_INFO, spec.META_CLIENT_CAPABILITIES)
_LOG_LEVEL_META = "io.modelcontextprotocol/logLevel"


class UpstreamStatus(NamedTuple):
    info: UpstreamInfo | None
    """The era and capabilities probed; None: not probed by this instance yet."""
    probe_failed: bool
    """The last probe failed and is not retried before `probe_retry_seconds`."""
    circuit: str
    """`closed`, `open` or `half_open` (`CircuitBreaker.state`)."""
    failures: int
    """Consecutive failed exchanges."""
    tools: int | None
    """Tools in the cached catalog; None when this instance holds no whole list."""


class Router:
    def __init__(
        self, config: GatewayConfig, store: SessionStore, clients: Mapping[str, UpstreamClient] | None = None
    ) -> None:
        """`clients`: the upstream clients by upstream name (tests pass stand-ins); default: HTTP."""
        self.config = config
        self._configs = {u.name: u for u in config.upstreams}
        self.clients: dict[str, UpstreamClient] = (
            dict(clients) if clients is not None else {u.name: UpstreamClient(u) for u in config.upstreams}
        )
        self.namespace = Namespace(config.upstreams)
        self.sessions = UpstreamSessions(config, store, self.clients)
        self.catalog = Catalog(self, config.definitions.cache_seconds)
        self._eras: dict[str, UpstreamInfo] = {}
        self._failed_probes: dict[str, tuple[float, UpstreamError]] = {}

    def upstream(self, name: str) -> UpstreamConfig:
        return self._configs[name]

    def deadline(self, ctx: RequestContext, name: str) -> Deadline:
        """The request's one budget with upstream `name`: made on first use, shared by everything
        the request does there (era probe, session, catalog, retries, the call)."""
        budget = ctx.budgets.get(name)
        if budget is None:
            budget = ctx.budgets[name] = Deadline(ctx.budget(self._configs[name].timeout_seconds))
        return budget

    # --- what upstreams speak ---------------------------------------------------------------------
    async def info(self, name: str, ctx: RequestContext) -> UpstreamInfo:
        known = self._eras.get(name)
        if known is not None:
            return known
        failed = self._failed_probes.get(name)
        if failed is not None and failed[0] > time.monotonic():
            raise copy.copy(failed[1])
        deadline = self.deadline(ctx, name)
        try:
            for attempt in range(self.upstream(name).retries + 1):
                try:
                    info = await self._probe(name, deadline)
                    break
                except UpstreamUnavailable as error:
                    await self._before_retry(name, error, attempt, deadline, retry_safe=True)
        except UpstreamAuthError:
            raise  # the gateway's credentials: not the upstream's era, and not worth remembering
        except UpstreamError as error:
            self._failed_probes[name] = (time.monotonic() + self.upstream(name).probe_retry_seconds, error)
            raise
        self._eras[name] = info
        self._failed_probes.pop(name, None)
        logger.info("upstream probed", extra={"upstream": name, "modern": info.modern, "legacy": info.legacy})
        return info

    async def _probe(self, name: str, deadline: Deadline) -> UpstreamInfo:
        client, protocol = self.clients[name], self.upstream(name).protocol
        if protocol != "legacy":
            try:
                info = await client.discover(deadline)
                info.legacy = False if protocol == "2026-07-28" else None
                return info
            except NotSpoken:
                if protocol == "2026-07-28":
                    raise UpstreamInvalidResponse(name, f"Upstream '{name}' does not answer server/discover") from None
        try:
            opened, result = await client.initialize({}, {"name": "tollway-probe", "version": "1"}, deadline)
        except NotSpoken:
            raise UpstreamInvalidResponse(name, f"Upstream '{name}' speaks no MCP era the gateway knows") from None
        await client.delete_session(opened)
        return UpstreamInfo(modern=False, legacy=True, capabilities=_dict(result.get("capabilities")))

    async def reachable(self, ctx: RequestContext) -> dict[str, UpstreamInfo]:
        """Every upstream that answers, probed concurrently; the others are logged and skipped."""
        names = list(self.clients)
        found = await asyncio.gather(*(self.info(n, ctx) for n in names), return_exceptions=True)
        infos = {}
        for name, info in zip(names, found, strict=True):
            if isinstance(info, BaseException):
                log_skip(name, info)
            else:
                infos[name] = info
        return infos

    # --- calls ------------------------------------------------------------------------------------
    async def call(
        self,
        ctx: RequestContext,
        name: str,
        method: str,
        params: dict[str, Any],
        request_id: Any,
        *,
        retry_safe: bool = False,
        cancellable: bool = False,
    ) -> AsyncIterator[dict[str, Any]]:
        """Send one request to upstream `name`; yield its notifications and relayed server
        requests, then the response (carrying the caller's `request_id`, names made public).
        `cancellable`: the caller's own request, which its 2025-era client may cancel by id
        (`cancel`); the gateway's own requests are not."""
        deadline = self.deadline(ctx, name)
        base_id = upstream_request_id(ctx, request_id) if cancellable else None
        for attempt in range(self.upstream(name).retries + 1):
            relayed = answered = False
            # A retry gets an id of its own: the upstream may still be running the first attempt.
            upstream_id = attempt_id(base_id, attempt) if base_id else None
            try:
                call = self._call(ctx, name, method, params, request_id, deadline, upstream_id)
                async with contextlib.aclosing(call) as items:
                    async for item in items:
                        relayed = True
                        answered = answered or ("method" not in item and item.get("id") == request_id)
                        yield item
            except UpstreamUnavailable as error:
                if relayed:
                    raise  # the caller has seen part of this call: repeating it would show it twice
                await self._before_retry(name, error, attempt, deadline, retry_safe)
                continue
            if not answered:
                # Every consumer expects the response last: without it a caller would get `{}`.
                logger.warning("upstream answered no response", extra={"upstream": name})
                raise UpstreamInvalidResponse(name)
            return

    async def _before_retry(
        self, name: str, error: UpstreamUnavailable, attempt: int, deadline: Deadline, retry_safe: bool
    ) -> None:
        """Wait before retry number `attempt + 1`, or re-raise `error` when retrying is not safe
        (the request may have done its work), not allowed (attempts used up) or too late."""
        pause = backoff(attempt)
        retryable = error.data.get("retryable") and (retry_safe or not error.sent)
        if not retryable or attempt == self.upstream(name).retries or deadline.remaining() <= pause:
            raise error
        logger.info("retrying upstream", extra={"upstream": name, "attempt": attempt + 1})
        await anyio.sleep(pause)

    async def _call(
        self,
        ctx: RequestContext,
        name: str,
        method: str,
        params: dict[str, Any],
        request_id: Any,
        deadline: Deadline,
        upstream_id: str | None,
    ) -> AsyncIterator[dict[str, Any]]:
        info = await self.info(name, ctx)
        if not (ctx.modern and info.modern) and info.legacy is not False:
            try:
                legacy = self._call_legacy(ctx, name, info, method, params, request_id, deadline, upstream_id)
                async with contextlib.aclosing(legacy):
                    async for item in legacy:
                        yield item
                return
            except NotSpoken:
                if not info.modern:
                    raise UpstreamInvalidResponse(name) from None
                info.legacy = False  # remembered: this upstream speaks only 2026-07-28
                logger.info("upstream speaks only 2026-07-28", extra={"upstream": name})
        async with contextlib.aclosing(self._call_modern(ctx, name, method, params, request_id, deadline)) as modern:
            async for item in modern:
                yield item

    async def _call_modern(
        self, ctx: RequestContext, name: str, method: str, params: dict[str, Any], request_id: Any, deadline: Deadline
    ) -> AsyncIterator[dict[str, Any]]:
        message = {
            "jsonrpc": "2.0",
            "id": next_request_id(),
            "method": method,
            "params": {**params, "_meta": {**(params.get("_meta") or {}), **_envelope(ctx)}},
        }
        client = self.clients[name]
        exchange = client.exchange(
            message,
            deadline=deadline,
            protocol_version=spec.LATEST_MODERN_VERSION,
            modern=True,
            extra_headers={**ctx.forward_headers, **self._identity(ctx, name)},
        )
        async with contextlib.aclosing(exchange):
            async for item in exchange:
                if "method" in item and "id" in item:
                    await client.decline(item, deadline=deadline, protocol_version=spec.LATEST_MODERN_VERSION)
                    continue
                item = self._to_client(name, item, message["id"], request_id)
                if not ctx.modern and (item.get("result") or {}).get("resultType") == "input_required":
                    # A 2025-era client has no input_required round trip, and this upstream speaks
                    # only 2026-07-28: say so instead of handing over a result it cannot parse.
                    raise UpstreamError(
                        name, f"Upstream '{name}' needs client input that cannot be relayed to a 2025-era session"
                    )
                yield item

    async def listen(
        self, ctx: RequestContext, name: str, notifications: dict[str, Any], deadline: Deadline
    ) -> AsyncIterator[dict[str, Any]]:
        """Change notifications from upstream `name` until it stops sending them or `deadline`:
        an acknowledgement first (what it agreed to send, as a 2026-07-28 listen has it), then
        the notifications, resource URIs made public both ways (`notifications` names the
        upstream's own URIs). A 2026-07-28 upstream is asked with `subscriptions/listen`; a
        2025-era one gets a session of its own: `resources/subscribe` for each URI, then its
        standalone stream, and the session is ended with the stream. The upstream's
        subscription id stays here: the caller's stream carries its own."""
        info = await self.info(name, ctx)
        items = (
            self._listen_modern(ctx, name, notifications, deadline)
            if info.modern
            else self._listen_legacy(ctx, name, info, notifications, deadline)
        )
        upstream = self.upstream(name)
        async with contextlib.aclosing(items):
            async for item in items:
                params = {k: v for k, v in _dict(item.get("params")).items() if k != "_meta"}
                if item["method"] == spec.LISTEN_ACKNOWLEDGED:
                    honored = _dict(params.get("notifications"))
                    uris = honored.get("resourceSubscriptions")
                    if isinstance(uris, list):
                        public = [self.namespace.public_uri(upstream, u) for u in uris if isinstance(u, str)]
                        honored = {**honored, "resourceSubscriptions": [u for u in public if u]}
                    yield {"jsonrpc": "2.0", "method": item["method"], "params": {"notifications": honored}}
                elif (published := self._pushed(name, item)) is not None:
                    yield published

    async def session_pushes(self, ctx: RequestContext, name: str, deadline: Deadline) -> AsyncIterator[dict[str, Any]]:
        """What upstream `name` pushes on the standalone stream of the caller's own upstream session
        (2025 era: e.g. updates of the resources the caller subscribed to through it), made public
        like a listen's; nothing when the caller has no session there."""
        assert ctx.session is not None
        opened = ctx.session.upstreams.get(name)
        if opened is None or not opened.session_id:
            return
        pushed = self.clients[name].standalone(opened, deadline, self._identity(ctx, name))
        async with contextlib.aclosing(pushed):
            async for item in pushed:
                if (published := self._pushed(name, item)) is not None:
                    yield published

    def _pushed(self, name: str, item: dict[str, Any]) -> dict[str, Any] | None:
        """An upstream's notification as the caller may see it: a resource URI made public (None:
        a URI this mount cannot show, not the caller's to see)."""
        params = {k: v for k, v in _dict(item.get("params")).items() if k != "_meta"}
        if isinstance(params.get("uri"), str):
            public_uri = self.namespace.public_uri(self.upstream(name), params["uri"])
            if public_uri is None:
                return None
            params = {**params, "uri": public_uri}
        return {"jsonrpc": "2.0", "method": item["method"], "params": params}

    async def _listen_modern(
        self, ctx: RequestContext, name: str, notifications: dict[str, Any], deadline: Deadline
    ) -> AsyncIterator[dict[str, Any]]:
        message = {
            "jsonrpc": "2.0",
            "id": next_request_id(),
            "method": "subscriptions/listen",
            "params": {"notifications": notifications, "_meta": _envelope(ctx)},
        }
        client = self.clients[name]
        exchange = client.exchange(
            message,
            deadline=deadline,
            protocol_version=spec.LATEST_MODERN_VERSION,
            modern=True,
            extra_headers={**ctx.forward_headers, **self._identity(ctx, name)},
        )
        async with contextlib.aclosing(exchange):
            async for item in exchange:
                if "method" not in item:
                    return  # the upstream ended the subscription (or refused it)
                if "id" in item:
                    await client.decline(item, deadline=deadline, protocol_version=spec.LATEST_MODERN_VERSION)
                    continue
                yield item

    async def _listen_legacy(
        self,
        ctx: RequestContext,
        name: str,
        info: UpstreamInfo,
        notifications: dict[str, Any],
        deadline: Deadline,
    ) -> AsyncIterator[dict[str, Any]]:
        client = self.clients[name]
        client_info = ctx.client_info or {"name": "tollway", "version": "1"}
        opened, _ = await client.initialize({}, client_info, deadline)
        try:
            identity = self._identity(ctx, name)  # as on the caller's calls: the upstream may scope by it
            on = {"session": opened.session_id, "protocol_version": opened.protocol_version, "extra_headers": identity}
            subscribed = []
            for uri in notifications.get("resourceSubscriptions") or ():
                request = {"jsonrpc": "2.0", "id": next_request_id(), "method": "resources/subscribe"}
                reply = await client.request({**request, "params": {"uri": uri}}, deadline=deadline, **on)
                if "result" in reply:
                    subscribed.append(uri)
            honored: dict[str, Any] = {
                flag: True
                for flag, capability in spec.LISTEN_FLAGS.items()
                if notifications.get(flag) and _dict(info.capabilities.get(capability)).get("listChanged") is True
            }
            if subscribed:
                honored["resourceSubscriptions"] = subscribed
            yield {"jsonrpc": "2.0", "method": spec.LISTEN_ACKNOWLEDGED, "params": {"notifications": honored}}
            async with contextlib.aclosing(client.standalone(opened, deadline, identity)) as pushed:
                async for item in pushed:
                    yield item
        finally:
            with anyio.CancelScope(shield=True):
                await client.delete_session(opened)

    async def _call_legacy(
        self,
        ctx: RequestContext,
        name: str,
        info: UpstreamInfo,
        method: str,
        params: dict[str, Any],
        request_id: Any,
        deadline: Deadline,
        upstream_id: str | None,
    ) -> AsyncIterator[dict[str, Any]]:
        meta = {k: v for k, v in (params.get("_meta") or {}).items() if k not in _ENVELOPE_KEYS}
        message: dict[str, Any] = {
            "jsonrpc": "2.0",
            "id": upstream_id or next_request_id(),
            "method": method,
            "params": {k: v for k, v in params.items() if k not in ("_meta", "inputResponses", "requestState")},
        }
        if meta:
            message["params"]["_meta"] = meta
        log_floor = _log_floor(params) if ctx.modern else None
        client, interaction = self.clients[name], self.upstream(name).interaction_timeout_seconds
        stale = None
        for attempt in (1, 2):
            session = await self.sessions.get(ctx, name, deadline, stale)
            info.legacy = True
            wire = {"session": session.session_id, "protocol_version": session.protocol_version}
            exchange = client.exchange(message, deadline=deadline, extra_headers=self._identity(ctx, name), **wire)
            answered = False
            try:
                async with contextlib.aclosing(exchange):
                    async for item in exchange:
                        answered = answered or "method" not in item
                        if item.get("method") == STREAM_PAUSED:
                            if ctx.resumable:
                                yield item  # the caller's stream pauses too (its endpoint resumes it)
                            continue
                        if "method" in item and "id" in item:
                            if not ctx.relays:
                                await client.decline(item, deadline=deadline, **wire)
                                continue
                            # A person may now be answering (elicitation): the call may take longer.
                            deadline.extend_to(ctx.budget(interaction))
                            yield {**item, "id": f"{SERVER_REQUEST_ID_PREFIX}{name}:{json.dumps(item['id'])}"}
                            continue
                        if (
                            ctx.modern
                            and item.get("method") == "notifications/message"
                            and not _loud_enough(item, log_floor)
                        ):
                            continue  # 2026-07-28: logs only for requests that opted in, at their level
                        yield self._to_client(name, item, message["id"], request_id)
                return
            except SessionLost:
                logger.info("upstream session lost; re-initializing", extra={"upstream": name})
                stale = session
                if attempt == 2:
                    raise UpstreamUnavailable(name, f"Upstream '{name}' keeps losing its session") from None
            except (GeneratorExit, asyncio.CancelledError):
                # The caller went away mid-call (disconnect, cancelled task): closing the exchange
                # is not a cancellation in the 2025 era, the notification is.
                if not answered:
                    await self._cancel_upstream(name, session, message["id"])
                raise

    def _to_client(self, name: str, item: dict[str, Any], upstream_id: Any, client_id: Any) -> dict[str, Any]:
        if "method" in item or item.get("id") != upstream_id:
            return item
        upstream = self.upstream(name)
        if "result" in item:
            return {**item, "id": client_id, "result": publish.result(self.namespace, upstream, item["result"])}
        return {**item, "id": client_id, "error": publish.error(self.namespace, upstream, item["error"])}

    def _identity(self, ctx: RequestContext, name: str) -> dict[str, str]:
        if not self.upstream(name).identity_headers:
            return {}
        return {"x-tollway-tenant": ctx.principal.tenant, "x-tollway-subject": ctx.principal.subject}

    # --- the caller's side of relayed requests, broadcasts, endings -------------------------------
    async def relay_client_response(self, ctx: RequestContext, message: dict[str, Any]) -> None:
        """A 2025-era client answers a relayed server request: pass it to the upstream that asked."""
        target = message.get("id")
        if ctx.session is None or not isinstance(target, str) or not target.startswith(SERVER_REQUEST_ID_PREFIX):
            logger.info("client response to an unknown request dropped")
            return
        name, _, raw_id = target[len(SERVER_REQUEST_ID_PREFIX) :].partition(":")
        session = ctx.session.upstreams.get(name)
        if name not in self.clients or session is None:
            logger.info("client response for an unknown upstream dropped")
            return
        try:
            original_id = json.loads(raw_id)
        except ValueError:
            return
        await self.clients[name].notify(
            {**message, "id": original_id},
            deadline=self.deadline(ctx, name),
            session=session.session_id,
            protocol_version=session.protocol_version,
        )

    async def cancel(self, ctx: RequestContext, request_id: Any) -> None:
        """A 2025-era client cancels its request `request_id`: `notifications/cancelled` to each
        upstream session of its session, naming the ids the request may carry there (one per
        attempt). They are derived from the client's (`upstream_request_id`), and the session's
        upstream sessions are in its record, so any instance can forward it, whichever runs the
        call; an upstream ignores a cancellation of a request it does not have."""
        if ctx.session is None:
            return
        base_id = upstream_request_id(ctx, request_id)
        opened = [(n, s) for n, s in ctx.session.upstreams.items() if n in self.clients]
        await asyncio.gather(
            *(
                self._cancel_upstream(n, s, attempt_id(base_id, attempt))
                for n, s in opened
                for attempt in range(self.upstream(n).retries + 1)  # whichever attempt is running
            )
        )

    async def _cancel_upstream(self, name: str, session: UpstreamSession, upstream_id: Any) -> None:
        """Tell upstream `name` its request `upstream_id` is abandoned (2025 era); bounded and
        shielded, since it runs while the caller's own task is being cancelled; failures logged."""
        notice = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": upstream_id}}
        with anyio.CancelScope(shield=True), anyio.move_on_after(CANCEL_NOTICE_SECONDS):
            try:
                await self.clients[name].notify(
                    notice,
                    deadline=Deadline(time.monotonic() + CANCEL_NOTICE_SECONDS),
                    session=session.session_id,
                    protocol_version=session.protocol_version,
                )
                logger.info("upstream call cancelled", extra={"upstream": name})
            except (UpstreamError, SessionLost):
                logger.info("upstream cancellation not delivered", extra={"upstream": name})

    async def broadcast(self, ctx: RequestContext, method: str, params: dict[str, Any], capability: str) -> None:
        """Send a request to every upstream that has `capability`; failures are logged, not raised."""
        infos = await self.reachable(ctx)
        names = [n for n, i in infos.items() if capability in i.capabilities]
        results = await asyncio.gather(
            *(drain(self.call(ctx, n, method, params, request_id=0, retry_safe=True)) for n in names),
            return_exceptions=True,
        )
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                log_skip(name, result)

    async def end_session(self, session: Session) -> None:
        """End a client session and the upstream sessions it opened (`UpstreamSessions.end`)."""
        await self.sessions.end(session)

    # --- what an admin sees -------------------------------------------------------------------------
    def status(self, name: str) -> UpstreamStatus:
        """What this instance knows of upstream `name`: nothing here is shared between instances."""
        failed = self._failed_probes.get(name)
        breaker = self.clients[name].breaker
        return UpstreamStatus(
            info=self._eras.get(name),
            probe_failed=failed is not None and failed[0] > time.monotonic(),
            circuit=breaker.state,
            failures=breaker.failures,
            tools=self.catalog.known_count(name, "tools"),
        )


def upstream_request_id(ctx: RequestContext, request_id: Any) -> str:
    """The id a caller's request carries upstream. In a 2025-era session it is derived from the
    session and the client's id (unique per session), so a cancellation naming the client's id
    can be forwarded by any instance without a lookup; a digest, so neither is shown upstream."""
    if ctx.session is None:
        return next_request_id()
    key = f"{ctx.session.id}\0{json.dumps(request_id)}".encode()
    return f"tw-c-{hashlib.sha256(key).hexdigest()[:32]}"


def attempt_id(base_id: str, attempt: int) -> str:
    """The upstream id of attempt number `attempt` (0: the first) of a request whose id is `base_id`."""
    return f"{base_id}.{attempt}" if attempt else base_id


def _envelope(ctx: RequestContext) -> dict[str, Any]:
    return {
        spec.META_PROTOCOL_VERSION: spec.LATEST_MODERN_VERSION,
        spec.META_CLIENT_CAPABILITIES: ctx.client_capabilities,
        spec.META_CLIENT_INFO: ctx.client_info or {"name": "tollway", "version": "1"},
    }


def _log_floor(params: dict[str, Any]) -> int | None:
    """2026-07-28: log messages go only to requests that opted in, at or above their level."""
    level = (params.get("_meta") or {}).get(_LOG_LEVEL_META)
    return spec.LOG_LEVELS.index(level) if level in spec.LOG_LEVELS else None


def _loud_enough(notification: dict[str, Any], floor: int | None) -> bool:
    level = (notification.get("params") or {}).get("level")
    return floor is not None and level in spec.LOG_LEVELS and spec.LOG_LEVELS.index(level) >= floor


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
