"""`subscriptions/listen` (2026-07-28): one caller's stream of change notifications.

The stream is the listen request's own SSE answer: the acknowledgement first (the part of the
caller's filter the gateway will honor), then every notification it asked for, each tagged with
the subscription id (the listen request's id), and last, when the stream's time is up, the
listen result that closes it gracefully. It lives as long as its request: at most
`http.listen_max_seconds` and never past the invocation's deadline; a client that goes away
ends it, and with it everything it opened upstream.

What reaches the stream has two sources. The gateway's own: every `http.listen_check_seconds`
it judges what the caller may see (`Exposure.visible`: the policy step's judgement over the
instance's catalog, refreshed after `definitions.cache_seconds`) and announces a list that
changed: a definition approved or withheld, a config change, an upstream's list seen changed on
refresh, on whichever instance made the change. And the upstreams': for each upstream that
offers what the caller asked for, the gateway opens its own listen there for this stream's
lifetime (`Router.listen`: a 2026-07-28 listen, or a 2025-era session with its subscriptions
and standalone stream), with the caller's filter (resource URIs the caller may read, in the
upstream's own form), and passes on its notifications as they come. A resource URI the caller
may not read is not honored, exactly like one nobody serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from tollway import spec
from tollway.config import GatewayConfig
from tollway.context import AuditFacts, Deadline, RequestContext, Session
from tollway.errors import GatewayError, MalformedParams, NotAcceptable, UpstreamError
from tollway.methods import ROUTED
from tollway.pipeline import Pipeline
from tollway.routing.upstream import UpstreamInfo
from tollway.telemetry import logger

MAX_RESOURCE_SUBSCRIPTIONS = 100
"""URIs one listen request may name."""
QUEUE_SIZE = 256
"""Notifications waiting for a slow client; beyond this the upstream streams wait."""
UPSTREAM_GRACE_SECONDS = 1.0
"""An upstream listen outlives the caller's stream by this much, so the gateway ends it, not a timeout."""


def offers(info: UpstreamInfo, capability: str, feature: str) -> bool:
    """Whether an upstream delivers `capability.feature` (e.g. resources.subscribe): on a listen
    stream (2026-07-28) or on a session's standalone stream (2025 era)."""
    value = info.capabilities.get(capability)
    return isinstance(value, dict) and value.get(feature) is True


KEEP_ALIVE: dict[str, Any] = {}
"""Yielded by a listen stream after a check that found nothing: the endpoint writes an SSE
comment, so idle streams stay under proxies' and API Gateway's idle cut."""


class Listener:
    def __init__(self, config: GatewayConfig, pipeline: Pipeline) -> None:
        self.config = config
        self.pipeline = pipeline
        self.router = pipeline.router

    async def listen(
        self, ctx: RequestContext, params: dict[str, Any], request_id: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """The listen stream's messages, the closing result last."""
        if not ctx.streaming:
            raise NotAcceptable("Not Acceptable: subscriptions/listen answers with an event stream (text/event-stream)")
        wanted = _filter(params.get("notifications"))
        ends = time.monotonic() + self.config.http.listen_max_seconds
        if ctx.deadline is not None:
            ends = min(ends, ctx.deadline)
        infos = await self.router.reachable(ctx)
        filters = await self._upstream_filters(ctx, wanted, infos)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        deadline = Deadline(ends + UPSTREAM_GRACE_SECONDS)
        tasks = []
        for name, notifications in filters.items():
            acks[name] = asyncio.get_running_loop().create_future()
            tasks.append(asyncio.create_task(self._pump(ctx, name, notifications, deadline, acks[name], queue)))
        try:
            honored = await self._honored(wanted, acks, ends, self._own_kinds(infos))
            uris = set(honored.get("resourceSubscriptions", ()))
            watched = [cap for flag, cap in spec.LISTEN_FLAGS.items() if honored.get(flag)]
            views = {kind: await self._view(ctx, kind) for kind in watched}
            yield _tagged(
                {"jsonrpc": "2.0", "method": spec.LISTEN_ACKNOWLEDGED, "params": {"notifications": honored}},
                request_id,
            )
            async for message in self._paced(queue, ends):
                if message is None:  # time for a check
                    changes = await self.changes(ctx, views)
                    for changed in changes:
                        yield _tagged(changed, request_id)
                    if not changes:
                        yield KEEP_ALIVE
                elif _wanted(message, honored, uris):
                    masked = self.pipeline.masking.message(
                        ctx.principal.tenant, "subscriptions/listen", message["method"], message
                    )
                    yield _tagged(masked, request_id)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        yield {"jsonrpc": "2.0", "id": request_id, "result": {"_meta": {spec.META_SUBSCRIPTION_ID: request_id}}}

    async def standalone(
        self, ctx: RequestContext, reread: Callable[[], Awaitable[Session | None]]
    ) -> AsyncIterator[dict[str, Any] | None]:
        """A 2025-era session's standalone stream (`GET /mcp`), until `http.listen_max_seconds`
        or the invocation's deadline (the client then opens it again): the list changes of the
        caller's view as the gateway judges them (checked every `http.listen_check_seconds`; None
        after a check that found none: the stream's keep-alive), and what each upstream pushes on
        the stream of the caller's own upstream session there (the updates of resources it
        subscribed to), made public and masked. `reread` gives the session as stored now: upstream
        sessions opened since (by the caller's calls, on any instance) are listened to as well."""
        assert ctx.session is not None
        ends = time.monotonic() + self.config.http.listen_max_seconds
        if ctx.deadline is not None:
            ends = min(ends, ctx.deadline)
        kinds = self._own_kinds(await self.router.reachable(ctx))
        views = {kind: await self._view(ctx, kind) for kind in sorted(kinds)}
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        deadline = Deadline(ends + UPSTREAM_GRACE_SECONDS)
        pumps: dict[tuple[str, str], asyncio.Task[None]] = {}

        def follow(session: Session) -> None:
            for name, opened in session.upstreams.items():
                key = (name, opened.session_id or "")
                if opened.session_id and key not in pumps and name in self.router.clients:
                    on = ctx.replace(session=session, audit=AuditFacts(), budgets={})
                    pumps[key] = asyncio.create_task(self._pushes(on, name, deadline, queue))

        try:
            follow(ctx.session)
            async for message in self._paced(queue, ends):
                if message is not None:
                    yield self.pipeline.masking.message(ctx.principal.tenant, "GET /mcp", message["method"], message)
                    continue
                changed = await self.changes(ctx, views)  # time for a check
                for found in changed:
                    yield found
                if not changed:
                    yield None
                if (session := await reread()) is None:
                    return  # ended meanwhile
                follow(session)
        finally:
            for task in pumps.values():
                task.cancel()
            await asyncio.gather(*pumps.values(), return_exceptions=True)

    async def _pushes(
        self, ctx: RequestContext, name: str, deadline: Deadline, queue: asyncio.Queue[dict[str, Any]]
    ) -> None:
        """What upstream `name` pushes on the caller's upstream session there, into `queue`."""
        try:
            async with contextlib.aclosing(self.router.session_pushes(ctx, name, deadline)) as items:
                async for item in items:
                    await queue.put(item)
        except UpstreamError as error:
            logger.info("upstream session stream ended", extra={"upstream": name, "error": type(error).__name__})

    async def _paced(self, queue: asyncio.Queue[dict[str, Any]], ends: float) -> AsyncIterator[dict[str, Any] | None]:
        """A stream's pace, for both eras: each message from `queue` as it comes, and None every
        `http.listen_check_seconds` (time for the gateway's own checks), until `ends`."""
        check_every = self.config.http.listen_check_seconds
        next_check = time.monotonic() + check_every
        while (left := ends - time.monotonic()) > 0:
            until_check = next_check - time.monotonic()
            try:
                message = await asyncio.wait_for(queue.get(), min(left, max(until_check, 0)))
            except TimeoutError:
                # Which wait ended says what is due, not the clock: a loop's timers may fire a
                # moment early (uvloop's run on a millisecond clock read once per iteration).
                if until_check < left:
                    next_check = time.monotonic() + check_every
                    yield None
                continue  # else the stream's time: the loop's test ends it once it is up
            yield message

    async def changes(self, ctx: RequestContext, views: dict[str, str]) -> list[dict[str, Any]]:
        """`notifications/<kind>/list_changed` for each list of `views` (kind -> digest) that the
        caller now sees otherwise; `views` takes the new digests. Both eras' streams call this."""
        changed = []
        for kind in views:
            seen = await self._view(ctx, kind)
            if seen != views[kind]:
                views[kind] = seen
                changed.append({"jsonrpc": "2.0", "method": f"notifications/{kind}/list_changed", "params": {}})
        return changed

    async def _upstream_filters(
        self, ctx: RequestContext, wanted: dict[str, Any], infos: dict[str, UpstreamInfo]
    ) -> dict[str, dict[str, Any]]:
        """Per upstream worth listening to: the caller's filter in the upstream's own terms."""
        filters: dict[str, dict[str, Any]] = {}
        reaches = self.pipeline.exposure.authorizer.reaches
        for name, info in infos.items():
            if not reaches(ctx.principal, name):
                continue  # not even a "something changed" from an upstream the caller cannot use
            flags = {
                f: True for f, cap in spec.LISTEN_FLAGS.items() if wanted.get(f) and offers(info, cap, "listChanged")
            }
            if flags:
                filters[name] = flags
        # Each URI judged like a read of it: unknown and not-allowed URIs are simply not honored.
        quiet = ctx.replace(audit=AuditFacts())  # the listen's own audit facts stay its own
        for uri in wanted.get("resourceSubscriptions", ()):
            try:
                target = await self.pipeline.exposure.resolve(quiet, ROUTED["resources/read"], {"uri": uri})
            except GatewayError:
                continue
            info = infos.get(target.upstream)
            if info is not None and offers(info, "resources", "subscribe"):
                own = filters.setdefault(target.upstream, {}).setdefault("resourceSubscriptions", [])
                own.append(target.params["uri"])
        return filters

    async def _pump(
        self,
        ctx: RequestContext,
        name: str,
        notifications: dict[str, Any],
        deadline: Deadline,
        ack: asyncio.Future[dict[str, Any]],
        queue: asyncio.Queue[dict[str, Any]],
    ) -> None:
        """One upstream's listen stream into the caller's queue; its acknowledgement into `ack`."""
        try:
            async with contextlib.aclosing(self.router.listen(ctx, name, notifications, deadline)) as items:
                async for item in items:
                    if item["method"] == spec.LISTEN_ACKNOWLEDGED:
                        if not ack.done():
                            ack.set_result(item["params"]["notifications"])
                    elif ack.done():  # nothing before the acknowledgement counts (the spec's order)
                        await queue.put(item)
        except UpstreamError as error:
            logger.info("upstream listen ended", extra={"upstream": name, "error": type(error).__name__})
        finally:
            if not ack.done():
                ack.set_result({})

    @staticmethod
    def _own_kinds(infos: dict[str, UpstreamInfo]) -> set[str]:
        """The lists whose changes the gateway announces itself: tools always, prompts and
        resources where an upstream has them."""
        offered = {cap for info in infos.values() for cap in info.capabilities}
        return {"tools"} | ({"prompts", "resources"} & offered)

    async def _view(self, ctx: RequestContext, kind: str) -> str:
        """A digest of the list `kind` as the caller may see it now (`Exposure.visible`). Each
        check is a request of its own upstream: fresh budgets (the listen's would have run out
        after `timeout_seconds`), its own audit facts."""
        quiet = ctx.replace(audit=AuditFacts(), budgets={})
        try:
            items = await self.pipeline.exposure.visible(quiet, kind)
        except GatewayError:
            return ""  # nothing reachable: an empty view
        return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()

    async def _honored(
        self,
        wanted: dict[str, Any],
        acks: dict[str, asyncio.Future[dict[str, Any]]],
        ends: float,
        own: set[str],
    ) -> dict[str, Any]:
        """What the caller gets: what it asked for that the gateway announces itself (`own`
        lists) or that at least one upstream acknowledged. An upstream that has not acknowledged
        within the upstream timeout contributes nothing."""
        if acks:
            wait = min(max(u.timeout_seconds for u in self.config.upstreams), ends - time.monotonic())
            await asyncio.wait(acks.values(), timeout=max(wait, 0))
        answers = [a.result() for a in acks.values() if a.done()]
        honored: dict[str, Any] = {
            f: True
            for f, cap in spec.LISTEN_FLAGS.items()
            if wanted.get(f) and (cap in own or any(a.get(f) is True for a in answers))
        }
        acknowledged = {u for a in answers for u in a.get("resourceSubscriptions") or () if isinstance(u, str)}
        uris = [u for u in wanted.get("resourceSubscriptions", ()) if u in acknowledged]
        if uris:
            honored["resourceSubscriptions"] = uris
        return honored


def _filter(value: Any) -> dict[str, Any]:
    """The caller's `SubscriptionFilter`, checked: flags are booleans, URIs a bounded list of strings."""
    if not isinstance(value, dict):
        raise MalformedParams("Invalid params: params.notifications must be an object")
    for flag in spec.LISTEN_FLAGS:
        if flag in value and not isinstance(value[flag], bool):
            raise MalformedParams(f"Invalid params: params.notifications.{flag} must be a boolean")
    uris = value.get("resourceSubscriptions", [])
    if (
        not isinstance(uris, list)
        or len(uris) > MAX_RESOURCE_SUBSCRIPTIONS
        or not all(isinstance(u, str) and u for u in uris)
    ):
        raise MalformedParams(
            "Invalid params: params.notifications.resourceSubscriptions must be a list of at most "
            f"{MAX_RESOURCE_SUBSCRIPTIONS} URIs"
        )
    return {**{f: value.get(f) is True for f in spec.LISTEN_FLAGS}, "resourceSubscriptions": list(dict.fromkeys(uris))}


def _wanted(message: dict[str, Any], honored: dict[str, Any], uris: set[str]) -> bool:
    """Within the acknowledged filter: a list change asked for, or an update of a subscribed
    resource (or of a sub-resource of one, which the spec allows)."""
    method = message["method"]
    if method == "notifications/resources/updated":
        uri = message["params"].get("uri")
        return isinstance(uri, str) and any(uri == u or uri.startswith(u.rstrip("/") + "/") for u in uris)
    kind = method.removeprefix("notifications/").removesuffix("/list_changed")
    return any(honored.get(f) and cap == kind for f, cap in spec.LISTEN_FLAGS.items())


def _tagged(message: dict[str, Any], subscription_id: Any) -> dict[str, Any]:
    params = message.get("params") or {}
    return {**message, "params": {**params, "_meta": {spec.META_SUBSCRIPTION_ID: subscription_id}}}
