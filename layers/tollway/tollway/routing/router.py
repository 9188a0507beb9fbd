"""Many upstreams behind one endpoint: which upstream, which era, which session.

Lists fan out to every upstream concurrently and merge under namespaces; calls go to
the one upstream a name resolves to. An upstream's era is learned once per warm
instance. Legacy upstream sessions are opened lazily: once per client session for a
2025-era caller, once per principal for a sessionless 2026-era caller, and re-opened
once when the upstream has lost them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio.to_thread

from tollway.config import GatewayConfig, UpstreamConfig
from tollway.context import RequestContext
from tollway.errors import GatewayError, InvalidParams, UpstreamError
from tollway.policy.definitions import DefinitionGate
from tollway.protocol import constants as c
from tollway.routing.namespace import Namespace
from tollway.routing.upstream import SessionLost, Upstream, UpstreamInfo, drain, invalid_response, next_request_id
from tollway.store.sessions import SessionStore, UpstreamSession
from tollway.telemetry import logger

LIST_METHODS = {
    "tools/list": ("tools", "tools"),
    "prompts/list": ("prompts", "prompts"),
    "resources/list": ("resources", "resources"),
    "resources/templates/list": ("resourceTemplates", "resources"),
}
"""List method -> (result key, capability an upstream must have, also the policy's kind)."""

Visible = Callable[[str, str, str], bool]
"""(kind, upstream name, public name) -> whether the caller may see the item."""

_NAME_FIELD = {"tools": "name", "prompts": "name", "resources": "uri", "resourceTemplates": "uriTemplate"}
_ENVELOPE_KEYS = (c.META_PROTOCOL_VERSION, c.META_CLIENT_INFO, c.META_CLIENT_CAPABILITIES)
SERVER_REQUEST_ID_PREFIX = "tw:"
CATALOG_MIN_REFRESH_SECONDS = 5.0
"""A missing name refreshes a catalog at most this often (a flood of unknown names costs nothing)."""
CATALOG_MAX_AGE_SECONDS = 30.0
CATALOG_MAX_PAGES = 50


class Router:
    def __init__(self, config: GatewayConfig, store: SessionStore, gate: DefinitionGate) -> None:
        self.config = config
        self.store = store
        self.gate = gate
        self.namespace = Namespace(config.upstreams)
        self.upstreams = {u.name: Upstream(u) for u in config.upstreams}
        self._info: dict[str, UpstreamInfo] = {}
        self._catalogs: dict[tuple[str, str], tuple[float, frozenset[str]]] = {}
        self._principal_sessions: dict[tuple[str, str], UpstreamSession] = {}

    # --- what upstreams speak ---------------------------------------------------------------
    async def info(self, name: str) -> UpstreamInfo:
        info = self._info.get(name)
        if info is None:
            info = await self.upstreams[name].probe()
            self._info[name] = info
            logger.info(
                "upstream probed",
                extra={"upstream": name, "modern": info.modern, "legacy": info.legacy},
            )
        return info

    async def reachable(self) -> dict[str, UpstreamInfo]:
        """Every upstream that answers, probed concurrently; the others are logged and skipped."""
        names = list(self.upstreams)
        found = await asyncio.gather(*(self.info(n) for n in names), return_exceptions=True)
        infos = {}
        for name, info in zip(names, found, strict=True):
            if isinstance(info, BaseException):
                _log_skip(name, info)
            else:
                infos[name] = info
        return infos

    # --- lists ----------------------------------------------------------------------------------
    async def list(self, ctx: RequestContext, method: str, cursor: Any, visible: Visible) -> dict[str, Any]:
        key, capability = LIST_METHODS[method]
        if cursor is None:
            infos = await self.reachable()
            pending = {n: None for n, i in infos.items() if capability in i.capabilities}
            failed_all = not infos
        else:
            pending = _decode_cursor(cursor, self.upstreams)
            failed_all = False
        names = list(pending)
        pages = await asyncio.gather(
            *(self._page(ctx, name, method, pending[name]) for name in names), return_exceptions=True
        )
        items: list[dict[str, Any]] = []
        next_state: dict[str, str] = {}
        ok = 0
        for name, page in zip(names, pages, strict=True):
            if isinstance(page, BaseException):
                _log_skip(name, page)
                continue
            ok += 1
            upstream = self.upstreams[name].config
            raw = [item for item in page.get(key) or [] if isinstance(item, dict)]
            for item in await anyio.to_thread.run_sync(self.gate.admit, name, key, raw):
                public = self._publish(upstream, key, item)
                if public is not None and visible(capability, name, public[_NAME_FIELD[key]]):
                    items.append(public)
            if isinstance(page.get("nextCursor"), str):
                next_state[name] = page["nextCursor"]
        if failed_all or (names and ok == 0):
            raise UpstreamError("No upstream is available", data={"retryable": True})
        result: dict[str, Any] = {key: items}
        if next_state:
            result["nextCursor"] = _encode_cursor(next_state)
        return result

    async def _page(self, ctx: RequestContext, name: str, method: str, cursor: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"cursor": cursor} if cursor else {}
        reply = await drain(self.call(ctx, name, method, params, request_id=0))
        if "error" in reply:
            raise UpstreamError(f"Upstream {name!r} refused {method}", data={"upstream": name})
        result = reply.get("result")
        if not isinstance(result, dict):
            raise UpstreamError(f"Upstream {name!r} returned an invalid response")
        return result

    def _publish(self, upstream: UpstreamConfig, key: str, item: Any) -> dict[str, Any] | None:
        if not isinstance(item, dict):
            return None
        item = dict(item)
        field = _NAME_FIELD[key]
        if key in ("tools", "prompts"):
            public = self.namespace.public_name(upstream, str(item.get(field, "")))
        else:
            public = self.namespace.public_uri(upstream, str(item.get(field, "")))
        if public is None:
            logger.warning("item withheld: name cannot be mounted", extra={"upstream": upstream.name, "kind": key})
            return None
        item[field] = public
        return item

    # --- catalogs -------------------------------------------------------------------------------
    async def exists(self, ctx: RequestContext, name: str, method: str, item: str) -> bool:
        """Whether upstream `name` lists tool/prompt `item` (its own name). The gateway answers an
        unknown name itself, exactly as it answers a denied one, so neither can be told apart.
        Catalogs are cached per warm instance and refreshed when a name is missing."""
        kind = "tools" if method == "tools/call" else "prompts"
        cached = self._catalogs.get((name, kind))
        now = time.monotonic()
        if cached is not None:
            age = now - cached[0]
            # Known names are trusted for CATALOG_MAX_AGE_SECONDS, so a definition that changes
            # (drift) is withheld from calls on warm instances too; unknown names refresh at most
            # every CATALOG_MIN_REFRESH_SECONDS.
            if (item in cached[1] and age < CATALOG_MAX_AGE_SECONDS) or age < CATALOG_MIN_REFRESH_SECONDS:
                return item in cached[1]
        names: set[str] = set()
        cursor: str | None = None
        for _ in range(CATALOG_MAX_PAGES):
            # An upstream error raises here: caching an empty catalog would answer "unknown" after it recovers.
            result = await self._page(ctx, name, f"{kind}/list", cursor)
            raw = [x for x in result.get(kind) or [] if isinstance(x, dict)]
            # Only what may be published can be called: withheld and blocked items are unknown.
            names.update(str(x.get("name")) for x in await anyio.to_thread.run_sync(self.gate.admit, name, kind, raw))
            cursor = result.get("nextCursor") if isinstance(result.get("nextCursor"), str) else None
            if cursor is None:
                break
        self._catalogs[(name, kind)] = (now, frozenset(names))
        return item in names

    # --- calls ----------------------------------------------------------------------------------
    def resolve(self, method: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """The upstream a routed request goes to, and its params with the upstream's own names."""
        params = dict(params)
        if method in ("tools/call", "prompts/get"):
            found = self.namespace.resolve_name(str(params.get("name", "")))
            if found:
                params["name"] = found[1]
        elif method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
            found = self.namespace.resolve_uri(str(params.get("uri", "")))
            if found:
                params["uri"] = found[1]
        elif method == "completion/complete":
            ref = dict(params.get("ref") or {})
            if ref.get("type") == "ref/prompt":
                found = self.namespace.resolve_name(str(ref.get("name", "")))
                if found:
                    ref["name"] = found[1]
            else:
                found = self.namespace.resolve_uri(str(ref.get("uri", "")))
                if found:
                    ref["uri"] = found[1]
            params["ref"] = ref
        else:
            return None
        return (found[0].name, params) if found else None

    async def call(
        self, ctx: RequestContext, name: str, method: str, params: dict[str, Any], request_id: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Send one request to upstream `name`; yield its notifications, then the response
        (carrying the caller's `request_id`) with names mapped back to public ones."""
        answered = False
        async for item in self._call(ctx, name, method, params, request_id):
            answered = answered or ("method" not in item and item.get("id") == request_id)
            yield item
        if not answered:
            # Every consumer expects the response last: without it a caller would get `{}` or a crash.
            raise invalid_response(name, "no response")

    async def _call(
        self, ctx: RequestContext, name: str, method: str, params: dict[str, Any], request_id: Any
    ) -> AsyncIterator[dict[str, Any]]:
        upstream = self.upstreams[name]
        info = await self.info(name)
        message = {"jsonrpc": "2.0", "id": next_request_id(), "method": method, "params": dict(params)}
        publish = _Publisher(self, upstream.config, method)
        identity = (
            {"x-tollway-tenant": ctx.principal.tenant, "x-tollway-subject": ctx.principal.subject}
            if upstream.config.identity_headers
            else {}
        )
        if info.modern and (ctx.modern or not info.legacy):
            message["params"]["_meta"] = {**(params.get("_meta") or {}), **self._envelope(ctx)}
            stream = upstream.exchange(
                message,
                protocol_version=c.LATEST_MODERN_VERSION,
                modern=True,
                extra_headers={**ctx.forward_headers, **identity},
            )
            async for item in stream:
                item = _to_client(item, message["id"], request_id, publish)
                if not ctx.modern and (item.get("result") or {}).get("resultType") == "input_required":
                    # A 2025-era client has no input_required round trip, and this upstream speaks
                    # only 2026-07-28: say so instead of handing over a result it cannot parse.
                    raise UpstreamError(
                        f"Upstream {name!r} needs client input that cannot be relayed to a 2025-era session",
                        data={"upstream": name},
                    )
                yield item
            return
        meta = {k: v for k, v in (params.get("_meta") or {}).items() if k not in _ENVELOPE_KEYS}
        message["params"] = {k: v for k, v in params.items() if k not in ("_meta", "inputResponses", "requestState")}
        if meta:
            message["params"]["_meta"] = meta
        relays = ctx.streaming and ctx.session is not None
        read_timeout = upstream.config.interaction_timeout_seconds if relays else None
        log_floor = _log_floor(params) if ctx.modern else None
        stale: UpstreamSession | None = None
        for attempt in (1, 2):
            session = await self._legacy_session(ctx, name, stale=stale)
            try:
                async for item in upstream.exchange(
                    message,
                    session=session.session_id,
                    protocol_version=session.protocol_version,
                    extra_headers=identity,
                    read_timeout=read_timeout,
                ):
                    if "method" in item and "id" in item:
                        relayed = await self._server_request(ctx, name, item, session)
                        if relayed is not None:
                            yield relayed
                        continue
                    if (
                        ctx.modern
                        and item.get("method") == "notifications/message"
                        and not _loud_enough(item, log_floor)
                    ):
                        continue  # 2026-07-28: logs only for requests that opted in, at their level
                    yield _to_client(item, message["id"], request_id, publish)
                return
            except SessionLost:
                logger.info("upstream session lost; re-initializing", extra={"upstream": name})
                stale = session
                if attempt == 2:
                    raise UpstreamError(f"Upstream {name!r} keeps losing its session") from None

    async def _server_request(
        self, ctx: RequestContext, name: str, item: dict[str, Any], session: UpstreamSession
    ) -> dict[str, Any] | None:
        """Relay a server-to-client request when the caller can answer it; decline it otherwise."""
        if ctx.streaming and ctx.session is not None:
            return {**item, "id": f"{SERVER_REQUEST_ID_PREFIX}{name}:{json.dumps(item['id'])}"}
        await self.upstreams[name].decline(item, session=session.session_id, protocol_version=session.protocol_version)
        return None

    async def relay_client_response(self, ctx: RequestContext, message: dict[str, Any]) -> None:
        """A 2025-era client answers a relayed server request: pass it to the upstream that asked."""
        target = message.get("id")
        if ctx.session is None or not isinstance(target, str) or not target.startswith(SERVER_REQUEST_ID_PREFIX):
            logger.info("client response to an unknown request dropped")
            return
        name, _, raw_id = target[len(SERVER_REQUEST_ID_PREFIX) :].partition(":")
        session = ctx.session.upstreams.get(name)
        if name not in self.upstreams or session is None:
            logger.info("client response for an unknown upstream dropped")
            return
        try:
            original_id = json.loads(raw_id)
        except ValueError:
            return
        await self.upstreams[name].notify(
            {**message, "id": original_id}, session=session.session_id, protocol_version=session.protocol_version
        )

    async def broadcast(self, ctx: RequestContext, method: str, params: dict[str, Any], capability: str) -> None:
        """Send a request to every upstream that has `capability`; failures are logged, not raised."""
        infos = await self.reachable()
        names = [n for n, i in infos.items() if capability in i.capabilities]
        results = await asyncio.gather(
            *(drain(self.call(ctx, n, method, params, request_id=0)) for n in names), return_exceptions=True
        )
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException):
                _log_skip(name, result)

    async def close(self, ctx: RequestContext) -> None:
        """End the upstream sessions a client session opened."""
        if ctx.session is None:
            return
        await asyncio.gather(
            *(
                self.upstreams[n].delete_session(s.session_id, s.protocol_version)
                for n, s in ctx.session.upstreams.items()
                if n in self.upstreams and s.session_id
            )
        )

    # --- upstream sessions ----------------------------------------------------------------------
    async def _legacy_session(self, ctx: RequestContext, name: str, stale: UpstreamSession | None) -> UpstreamSession:
        if ctx.session is not None:
            current = ctx.session.upstreams.get(name)
            if current is not None and current != stale:
                return current
            opened = await self._open(ctx, name)
            replacing = stale.session_id if stale else None
            if not self.store.add_upstream(ctx.session.id, name, opened, replacing=replacing):
                # A concurrent request opened one first: use theirs, close ours.
                winner = self.store.get(ctx.session.id)
                if winner is not None and name in winner.upstreams:
                    if opened.session_id:
                        await self.upstreams[name].delete_session(opened.session_id, opened.protocol_version)
                    opened = winner.upstreams[name]
            ctx.session.upstreams[name] = opened
            return opened
        key = (ctx.principal.key, name)
        current = self._principal_sessions.get(key)
        if current is None and stale is None:
            current = self.store.get_principal_upstream(ctx.principal.key, name)
        if current is None or current == stale:
            current = await self._open(ctx, name)
            self.store.put_principal_upstream(ctx.principal.key, name, current, ttl=self.config.sessions.ttl_seconds)
        self._principal_sessions[key] = current
        return current

    async def _open(self, ctx: RequestContext, name: str) -> UpstreamSession:
        capabilities = dict(ctx.client_capabilities)
        if not (ctx.streaming and ctx.session is not None):
            # Without a back channel the upstream must not count on asking the client anything.
            for cap in ("sampling", "elicitation", "roots"):
                capabilities.pop(cap, None)
        info = ctx.client_info or {"name": "tollway", "version": "1"}
        opened, _ = await self.upstreams[name].initialize(capabilities, info)
        return UpstreamSession(session_id=opened.session_id, protocol_version=opened.protocol_version)

    def _envelope(self, ctx: RequestContext) -> dict[str, Any]:
        return {
            c.META_PROTOCOL_VERSION: c.LATEST_MODERN_VERSION,
            c.META_CLIENT_CAPABILITIES: ctx.client_capabilities,
            c.META_CLIENT_INFO: ctx.client_info or {"name": "tollway", "version": "1"},
        }


# --- helpers -----------------------------------------------------------------------------------
def _to_client(item: dict[str, Any], upstream_id: Any, client_id: Any, publish: _Publisher) -> dict[str, Any]:
    if "method" not in item and item.get("id") == upstream_id:
        item = {**item, "id": client_id}
        if isinstance(item.get("result"), dict):
            item["result"] = publish(item["result"])
        error = item.get("error")
        if isinstance(error, dict) and isinstance(error.get("data"), dict) and "uri" in error["data"]:
            # e.g. "Resource not found" names the URI: answer with the one the client sent.
            item["error"] = {**error, "data": {**error["data"], "uri": publish.uri(error["data"]["uri"])}}
    return item


class _Publisher:
    """Maps upstream resource URIs in a result (or an error) back to their public form."""

    def __init__(self, router: Router, upstream: UpstreamConfig, method: str) -> None:
        self.router, self.upstream, self.method = router, upstream, method

    def uri(self, uri: Any) -> Any:
        if isinstance(uri, str):
            return self.router.namespace.public_uri(self.upstream, uri) or uri
        return uri

    def __call__(self, result: dict[str, Any]) -> dict[str, Any]:
        if self.method == "resources/read":
            contents = [
                {**x, "uri": self.uri(x.get("uri"))} for x in result.get("contents") or [] if isinstance(x, dict)
            ]
            return {**result, "contents": contents}
        if self.method in ("tools/call", "prompts/get"):
            return _map_content_uris(result, self.uri)
        return result


def _map_content_uris(result: dict[str, Any], public_uri: Callable[[Any], Any]) -> dict[str, Any]:
    def block(item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        if item.get("type") == "resource_link":
            return {**item, "uri": public_uri(item.get("uri"))}
        if item.get("type") == "resource" and isinstance(item.get("resource"), dict):
            return {**item, "resource": {**item["resource"], "uri": public_uri(item["resource"].get("uri"))}}
        return item

    result = dict(result)
    if isinstance(result.get("content"), list):
        result["content"] = [block(x) for x in result["content"]]
    if isinstance(result.get("messages"), list):
        result["messages"] = [
            {**m, "content": block(m.get("content"))} if isinstance(m, dict) else m for m in result["messages"]
        ]
    return result


_LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_LOG_LEVEL_META = "io.modelcontextprotocol/logLevel"


def _log_floor(params: dict[str, Any]) -> int | None:
    """2026-07-28: log messages go only to requests that opted in, at or above their level."""
    level = (params.get("_meta") or {}).get(_LOG_LEVEL_META)
    return _LOG_LEVELS.index(level) if level in _LOG_LEVELS else None


def _loud_enough(notification: dict[str, Any], floor: int | None) -> bool:
    level = (notification.get("params") or {}).get("level")
    return floor is not None and level in _LOG_LEVELS and _LOG_LEVELS.index(level) >= floor


def _encode_cursor(state: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode()


def _decode_cursor(cursor: Any, upstreams: dict[str, Upstream]) -> dict[str, str]:
    try:
        state = json.loads(base64.urlsafe_b64decode(str(cursor).encode()))
    except ValueError:
        raise InvalidParams("Invalid cursor") from None
    if not isinstance(state, dict) or not state:
        raise InvalidParams("Invalid cursor")
    for name, value in state.items():
        if name not in upstreams or not isinstance(value, str):
            raise InvalidParams("Invalid cursor")
    return state


def _log_skip(name: str, error: BaseException) -> None:
    if isinstance(error, GatewayError):
        logger.warning("upstream skipped", extra={"upstream": name, "reason": error.message})
    else:
        logger.error("upstream skipped after an unexpected error", extra={"upstream": name}, exc_info=error)
