"""`/mcp`: one HTTP exchange in, one JSON or SSE answer out, for both eras.

POST reads and validates the message (transport), binds it to a session (2025 era) or to its
own envelope (2026-07-28), sends it to the gateway's own methods (`protocol.server`) or through
the pipeline, and writes what comes back: plain JSON when the answer is a single response, SSE
when notifications or relayed server requests come first and the client accepts a stream.
Failures are raised, and answered by the one error middleware (`tollway.http`).

Where the gateway's process outlives a response (`tollway dev`, uvicorn; not Lambda), a
2025-11-25 session that accepts SSE gets every answer as a resumable stream (SEP-1699): a
priming event with an id and `retry` first. When the upstream closes its stream mid-call, so
does the gateway; the call goes on, its messages kept in the event store, and the client's GET
with `Last-Event-ID` (on any instance) replays them up to the response.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tollway import spec as c
from tollway.blocking import run_blocking
from tollway.config import GatewayConfig
from tollway.context import (
    ANONYMOUS,
    SCOPE_AUDIT,
    SCOPE_CONTEXT,
    AuditFacts,
    Principal,
    RequestContext,
    Session,
    new_id,
)
from tollway.errors import (
    MalformedParams,
    MethodNotAllowed,
    MethodNotFound,
    NotAcceptable,
    SessionNotFound,
    SessionRequired,
    answer_for,
    error_body,
    json_body,
    json_response,
)
from tollway.methods import OWN_LEGACY_ONLY, OWN_MODERN_ONLY, ROUTED, check_envelope
from tollway.pipeline import Pipeline
from tollway.protocol.listen import KEEP_ALIVE, Listener
from tollway.protocol.server import GatewayServer
from tollway.protocol.transport import Incoming, is_modern, read_post
from tollway.routing.upstream import STREAM_PAUSED, drain
from tollway.store.events import CALL_EVENT_ID, EVENT_ID, EventStore, MemoryEventStore, call_stream, new_event_id
from tollway.store.sessions import CachedSessionStore, SessionStore
from tollway.telemetry import logger

ALLOW_LEGACY = "POST, DELETE"
ALLOW_LEGACY_STREAMING = "GET, POST, DELETE"
STREAM_RETRY_MS = 2000
"""The standalone stream's `retry`: how soon a client reconnects (with `Last-Event-ID`) when it ends."""
RESUME_POLL_SECONDS = 0.2
"""How often a resumed request stream looks for the paused call's next messages."""
RESUME_GRACE_SECONDS = 5.0
"""A resumed request stream waits this much longer than the slowest upstream may take."""
ALLOW_MODERN = "POST"
KEEP_ALIVE_COMMENT = b": keep-alive\n\n"
SSE_HEADERS = {"cache-control": "no-cache, no-transform", "x-accel-buffering": "no"}
"""An event stream is neither cached nor buffered on its way (nginx reads `x-accel-buffering`)."""
LAMBDA_MARGIN_SECONDS = 1.0
"""On Lambda, an answer is written this long before the invocation would be cut off."""
LAMBDA_CONTEXT_HEADER = "x-amzn-lambda-context"
"""The Lambda Web Adapter's copy of the invocation's context (streaming deployment)."""
_BEHIND_ADAPTER = "AWS_LWA_INVOKE_MODE" in os.environ
"""Only the adapter's header is trusted: elsewhere a caller could send one."""
CLIENT_CLOSED = 499
"""The status recorded for a request whose client went away before its answer (nginx's)."""
SESSION_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
"""Visible ASCII (the spec's rule), and short: anything else cannot be one of ours."""


class McpEndpoint:
    def __init__(
        self,
        config: GatewayConfig,
        store: SessionStore,
        server: GatewayServer,
        pipeline: Pipeline,
        streaming: bool,
        buffered: bool = False,
        events: EventStore | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.server = server
        self.pipeline = pipeline
        self.streaming = streaming
        self.events: EventStore = events if events is not None else MemoryEventStore()
        """The standalone streams' events, for `Last-Event-ID` on any instance."""
        self.cap = config.http.buffered_deadline_seconds if buffered else None
        """Buffered deployment: how long a request may take before API Gateway would cut it."""
        self.pausing = streaming and not buffered and not _BEHIND_ADAPTER
        """Whether a call may go on after its response ended: only where the process outlives
        the response (Lambda freezes an instance once its response is written)."""

    async def handle(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.post(request)
        if request.method == "DELETE" and not is_modern(request):
            return await self.delete(request)
        if request.method == "GET" and not is_modern(request) and self.server.listener is not None:
            return await self.standalone(request)
        # The 2026-07-28 era has no GET (it listens with a request); a buffered deployment cannot stream.
        raise MethodNotAllowed(headers={"allow": self._allowed(request)})

    def _allowed(self, request: Request) -> str:
        if is_modern(request):
            return ALLOW_MODERN
        return ALLOW_LEGACY_STREAMING if self.server.listener is not None else ALLOW_LEGACY

    # --- GET: the 2025 era's standalone stream ------------------------------------------------
    async def standalone(self, request: Request) -> Response:
        """A session's stream of what the gateway pushes outside any request: its caller's list
        changes (`Listener.standalone`), each event with an id kept where any instance can replay
        it (`store/events.py`): a reconnect with `Last-Event-ID` first gets what it missed."""
        listener = self.server.listener
        assert listener is not None
        if c.CONTENT_TYPE_SSE not in request.headers.get("accept", ""):
            raise NotAcceptable("Not Acceptable: Accept must include text/event-stream")
        principal: Principal = request.scope.get("principal", ANONYMOUS)
        _facts(request).method = "GET /mcp"
        session = await self._session_of(request.headers.get(c.SESSION_ID_HEADER), principal)
        ctx = self._session_context(request, principal, session, session.protocol_version, streaming=True)
        last = request.headers.get(c.LAST_EVENT_ID_HEADER, "")
        if (resumed := CALL_EVENT_ID.fullmatch(last)) is not None:
            return _event_stream(self._resumed_call(session.id, resumed.group(1), resumed.group(2)))
        missed = await run_blocking(self.events.after, session.id, last) if EVENT_ID.fullmatch(last) else []
        return _event_stream(self._standalone_events(ctx, listener, missed))

    async def _standalone_events(
        self, ctx: RequestContext, listener: Listener, missed: list[tuple[str, dict[str, Any]]]
    ) -> AsyncIterator[bytes]:
        assert ctx.session is not None
        yield f"retry: {STREAM_RETRY_MS}\n\n".encode()
        for event_id, message in missed:
            yield _event(message, event_id)
        session_id = ctx.session.id

        async def reread() -> Session | None:
            return await run_blocking(self.store.get, session_id)

        async with contextlib.aclosing(listener.standalone(ctx, reread)) as messages:
            async for message in messages:
                if message is None:
                    yield KEEP_ALIVE_COMMENT  # under API Gateway's idle cut
                    continue
                event_id = await run_blocking(self.events.append, ctx.session.id, message)
                yield _event(message, event_id)

    async def _resumed_call(self, session_id: str, stream_id: str, after: str) -> AsyncIterator[bytes]:
        """A request stream the gateway closed mid-call, resumed: the call's messages after
        `after` as the paused call keeps them (on whichever instance it runs), up to its
        response. Bounded: a call that never answers (its instance gone) ends it empty."""
        stream = call_stream(session_id, stream_id)
        found = await run_blocking(self.events.after, stream, after)
        # Nothing after `after`: known stream (its pause is kept first), or none to resume?
        if not found and (after == stream_id or not await run_blocking(self.events.after, stream, stream_id)):
            return  # no call paused by that id (or its events expired)
        logger.info("request stream resumed")
        slowest = max((max(u.timeout_seconds, u.interaction_timeout_seconds) for u in self.config.upstreams), default=0)
        ends = time.monotonic() + slowest + RESUME_GRACE_SECONDS
        while True:
            for event_id, message in found:
                after = event_id
                if message.get("method") == STREAM_PAUSED:
                    continue  # where the call paused: no message
                yield _event(message, f"{stream_id}/{event_id}")
                if "method" not in message:
                    return  # the response: the request's stream ends with it
            if time.monotonic() >= ends:
                return
            await anyio.sleep(RESUME_POLL_SECONDS)
            found = await run_blocking(self.events.after, stream, after)

    # --- POST ---------------------------------------------------------------------------------
    async def post(self, request: Request) -> Response:
        incoming = await read_post(request, self.config.http)
        _facts(request).method = incoming.method
        principal: Principal = request.scope.get("principal", ANONYMOUS)
        if not incoming.modern and incoming.method == "initialize" and incoming.kind == "request":
            return await self._initialize(incoming, principal, request)
        ctx = await self._context(incoming, principal, request)
        if incoming.kind == "notification":
            # 2026-07-28 defines no client notifications over HTTP: closing the response cancels.
            if incoming.method == "notifications/cancelled" and not ctx.modern:
                await self.pipeline.cancel(ctx, incoming.params)
            return Response(status_code=202)
        if incoming.kind == "response":
            await self.pipeline.relay(ctx, incoming.message)
            return Response(status_code=202)
        return await self._answer(ctx, incoming, self._dispatch(ctx, incoming.message), request)

    async def _dispatch(self, ctx: RequestContext, request: dict[str, Any]) -> AsyncGenerator[dict[str, Any]]:
        """The gateway's own methods, or the pipeline for routed ones; the final result framed for the era."""
        method, params, request_id = request["method"], request.get("params") or {}, request["id"]
        check_envelope(params)
        own = self.server.methods.get(method)
        streamed = self.server.streams.get(method)
        route = ROUTED.get(method)
        offered = method not in (OWN_LEGACY_ONLY if ctx.modern else OWN_MODERN_ONLY)
        if own is not None and offered:
            result = await own(ctx, params)
            yield {"jsonrpc": "2.0", "id": request_id, "result": self.server.decorate(ctx, result)}
            return
        if streamed is not None and offered:
            async with contextlib.aclosing(streamed(ctx, params, request_id)) as messages:
                async for message in messages:
                    if _is_final(message, request_id) and "result" in message:
                        message = {**message, "result": self.server.decorate(ctx, message["result"])}
                    yield message
            return
        if route is None or (ctx.modern and not route.modern):
            raise MethodNotFound(data={"method": method})
        async with contextlib.aclosing(self.pipeline.handle(ctx, route, request)) as messages:
            async for message in messages:
                if "method" not in message and message.get("id") == request_id and "result" in message:
                    message = {**message, "result": self.server.decorate(ctx, message["result"])}
                yield message

    async def _context(self, incoming: Incoming, principal: Principal, request: Request) -> RequestContext:
        streaming = self.streaming and incoming.accepts_sse
        deadline = self._deadline(request)
        if incoming.modern:
            meta = _dict(incoming.params.get("_meta"))  # a request's envelope is checked on the way in
            return _published(
                request,
                RequestContext(
                    principal=principal,
                    modern=True,
                    protocol_version=incoming.protocol_version,
                    client_info=_dict(meta.get(c.META_CLIENT_INFO)),
                    client_capabilities=_dict(meta.get(c.META_CLIENT_CAPABILITIES)),
                    forward_headers=incoming.forward_headers,
                    streaming=streaming,
                    deadline=deadline,
                    audit=_facts(request),
                ),
            )
        session = await self._session_of(incoming.session_id, principal)
        return self._session_context(request, principal, session, incoming.protocol_version, streaming)

    def _session_context(
        self, request: Request, principal: Principal, session: Session, protocol_version: str, streaming: bool
    ) -> RequestContext:
        """A 2025-era request's context (POST, GET, DELETE): its session's client, published for
        the request's audit record."""
        return _published(
            request,
            RequestContext(
                principal=principal,
                modern=False,
                protocol_version=protocol_version,
                client_info=session.client_info,
                client_capabilities=session.client_capabilities,
                session=session,
                streaming=streaming,
                resumable=streaming and self.pausing and protocol_version >= c.RESUMABLE_STREAMS_FROM,
                deadline=self._deadline(request),
                audit=_facts(request),
            ),
        )

    async def _session_of(self, session_id: str | None, principal: Principal) -> Session:
        """The caller's session: from this instance's memory, on the event loop, when it was read
        lately and needs no renewal (most 2025-era calls: no thread hop); else `_session`."""
        if session_id and isinstance(self.store, CachedSessionStore):
            session = self.store.remembered(session_id)
            if session is not None and session.owned_by(principal) and not self._renewal_due(session):
                return session
        return await run_blocking(self._session, session_id, principal)

    def _renewal_due(self, session: Session) -> bool:
        return session.expires_at - time.time() < self.config.sessions.ttl_seconds / 2

    def _session(self, session_id: str | None, principal: Principal, renew: bool = True) -> Session:
        """The caller's session (blocking store I/O: called off the event loop)."""
        if not session_id:
            raise SessionRequired()
        session = self.store.get(session_id) if SESSION_ID.fullmatch(session_id) else None
        # A session of another principal is answered exactly like a missing one.
        if session is None or not session.owned_by(principal):
            raise SessionNotFound()
        ttl = self.config.sessions.ttl_seconds
        if renew and self._renewal_due(session):
            # Renew a used session once half its lifetime is gone: one write per half-TTL, not per
            # call (so its "last used" time, the renewal's, is accurate to half the TTL).
            session.expires_at = int(time.time()) + ttl
            session.used_at = int(time.time())
            self.store.renew(session.id, session.expires_at)
        return session

    async def _initialize(self, incoming: Incoming, principal: Principal, request: Request) -> Response:
        params = incoming.params
        check_envelope(params)
        requested = params.get("protocolVersion")
        capabilities, info = params.get("capabilities"), params.get("clientInfo")
        if not isinstance(requested, str) or not isinstance(capabilities, dict) or not isinstance(info, dict):
            raise MalformedParams("Invalid params: initialize needs protocolVersion, capabilities and clientInfo")
        version = requested if requested in c.HANDSHAKE_VERSIONS else c.LATEST_HANDSHAKE_VERSION
        now = int(time.time())
        session = Session(
            id=new_id(32),
            tenant=principal.tenant,
            subject=principal.subject,
            protocol_version=version,
            client_info=info,
            client_capabilities=capabilities,
            expires_at=now + self.config.sessions.ttl_seconds,
            created_at=now,
            used_at=now,
        )
        ctx = RequestContext(
            principal, False, version, client_info=info, deadline=self._deadline(request), audit=_facts(request)
        )
        _published(request, ctx)
        result = await self.server.initialize(ctx, version)
        await run_blocking(self.store.create, session)
        logger.info("session started", extra={"protocol_version": version, "tenant": principal.tenant})
        body = {"jsonrpc": "2.0", "id": incoming.message["id"], "result": result}
        return json_response(body, headers={c.SESSION_ID_HEADER: session.id})

    def _deadline(self, request: Request) -> float | None:
        """When the answer must be written, as `time.monotonic()`: before the Lambda invocation
        ends and, on the buffered deployment, before API Gateway gives up; None locally."""
        now = time.monotonic()
        ends = [now + self.cap] if self.cap is not None else []
        remaining = _invocation_remaining(request)
        if remaining is not None:
            ends.append(now + remaining - LAMBDA_MARGIN_SECONDS)
        return min(ends, default=None)

    async def _answer(
        self, ctx: RequestContext, incoming: Incoming, stream: AsyncGenerator[dict[str, Any]], request: Request
    ) -> Response:
        """JSON when the first thing the pipeline yields is the response; SSE when events come first."""
        first = await self._first(stream, request)
        if first is None:
            return Response(status_code=CLIENT_CLOSED)
        request_id = incoming.message["id"]
        if ctx.resumable:
            return await self._resumable(ctx, first, stream, request_id)
        if _is_final(first, request_id):
            await drain(stream)  # let the upstream exchange finish and release its connection
            return json_response(first, status=_status_of(first, ctx.modern))
        if not incoming.accepts_sse:
            final = await drain(stream)
            return json_response(final, status=_status_of(final, ctx.modern))
        return _event_stream(_sse(first, stream, request_id, ctx.modern))

    async def _resumable(
        self, ctx: RequestContext, first: dict[str, Any], stream: AsyncGenerator[dict[str, Any]], request_id: Any
    ) -> Response:
        """A 2025-11-25 session's answer as a stream it can resume (SEP-1699): a priming event
        whose id names the stream, then the messages. Where the upstream paused its stream
        (`STREAM_PAUSED`), this one ends too; the call goes on after the response, each
        message kept in the event store for the client's GET (`_resumed_call`)."""
        assert ctx.session is not None
        stream_id, paused = new_event_id(), False
        key = call_stream(ctx.session.id, stream_id)
        priming = f"id: {stream_id}/{stream_id}\nretry: {STREAM_RETRY_MS}\ndata: \n\n".encode()
        if _is_final(first, request_id):  # the usual answer: written at once, no stream to keep open
            await drain(stream)
            return Response(priming + _event(first), media_type=c.CONTENT_TYPE_SSE, headers=SSE_HEADERS)

        async def live() -> AsyncIterator[bytes]:
            nonlocal paused
            yield priming
            message: dict[str, Any] | None = first
            try:
                while message is not None:
                    if message.get("method") != STREAM_PAUSED:
                        yield _event(message)
                    elif await self._paused(key, message):
                        paused = True
                        return  # the rest goes to the event store: `kept` below
                    message = await anext(stream, None)
            except Exception as exc:
                yield _event(error_body(answer_for(exc), request_id, False))
            finally:
                if not paused:  # ended, failed, or the client went away: so does the call
                    await stream.aclose()

        async def kept() -> None:
            if not paused:
                return
            try:
                async with contextlib.aclosing(stream):
                    async for message in stream:
                        if message.get("method") != STREAM_PAUSED:  # paused again: the client resumes anyway
                            await run_blocking(self.events.append, key, message)
            except Exception as exc:
                logger.warning("paused request ended by a failure", extra={"error": type(exc).__name__})
                with contextlib.suppress(Exception):  # the event store itself may be what failed
                    await run_blocking(self.events.append, key, error_body(answer_for(exc), request_id, False))

        return _event_stream(live(), background=BackgroundTask(kept))

    async def _paused(self, key: str, marker: dict[str, Any]) -> bool:
        """Whether the request's stream may end here: its pause is kept first (a GET that finds
        no stream has nothing to resume); a store that cannot keep it keeps the stream live."""
        try:
            await run_blocking(self.events.append, key, marker)
        except Exception as exc:  # boundary: whatever the store raised, the stream stays live
            logger.warning("request stream not paused: the event store failed", extra={"error": type(exc).__name__})
            return False
        logger.info("request stream paused")
        return True

    async def _first(self, stream: AsyncIterator[dict[str, Any]], request: Request) -> dict[str, Any] | None:
        """The stream's first message; None when the client went away before it (the call is then
        cancelled: its upstream exchange closed, a 2025-era upstream told). Once an SSE answer
        has started, Starlette watches for the disconnect itself. Served buffered (Lambda behind
        an HTTP API), nobody can see a disconnect: the call runs to its end."""
        if not self.streaming:
            return await anext(stream)
        first: dict[str, Any] | None = None
        failure: Exception | None = None
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                while (await request.receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(watch)
            try:
                first = await anext(stream)
            except Exception as exc:  # raised as itself below, not in the task group's ExceptionGroup
                failure = exc
            group.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return first  # None: the disconnect cancelled the call, and the stream ended with it

    # --- DELETE ---------------------------------------------------------------------------------
    async def delete(self, request: Request) -> Response:
        principal: Principal = request.scope.get("principal", ANONYMOUS)
        # No renewal: a write right before the delete is wasted.
        session_id = request.headers.get(c.SESSION_ID_HEADER)
        session = await run_blocking(self._session, session_id, principal, False)
        self._session_context(request, principal, session, session.protocol_version, streaming=False)
        await self.pipeline.router.end_session(session)
        logger.info("session ended", extra={"tenant": principal.tenant})
        return Response(status_code=204)


def _facts(request: Request) -> AuditFacts:
    """The request's audit facts (the telemetry middleware's; fresh ones when it is absent)."""
    facts = request.scope.get(SCOPE_AUDIT)
    if facts is None:
        facts = request.scope[SCOPE_AUDIT] = AuditFacts()
    return facts


def _published(request: Request, ctx: RequestContext) -> RequestContext:
    """`ctx` on the scope, for the request's audit record (who, which client, which era)."""
    request.scope[SCOPE_CONTEXT] = ctx
    return ctx


def adapter_context(request: Request) -> dict[str, Any]:
    """The Lambda invocation's context as the Lambda Web Adapter sends it (streaming deployment):
    JSON with `request_id`, `deadline` (epoch milliseconds), `invoked_function_arn`. The adapter
    sets the header itself, replacing a caller's; elsewhere the header is ignored: {}."""
    if not _BEHIND_ADAPTER:
        return {}
    try:
        context = json.loads(request.headers.get(LAMBDA_CONTEXT_HEADER, ""))
    except ValueError:
        return {}
    return context if isinstance(context, dict) else {}


def _invocation_remaining(request: Request) -> float | None:
    """Seconds left in this Lambda invocation; None off Lambda. Buffered (Mangum), the invocation's
    context is on the scope; streamed, it comes from the adapter (`adapter_context`)."""
    context = request.scope.get("aws.context")
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is not None:
        return float(remaining()) / 1000
    deadline_ms = adapter_context(request).get("deadline")
    if isinstance(deadline_ms, bool) or not isinstance(deadline_ms, int | float):
        return None
    return deadline_ms / 1000 - time.time()


def _status_of(message: dict[str, Any], modern: bool) -> int:
    error = message.get("error")
    return c.error_http_status(error.get("code"), modern) if isinstance(error, dict) else 200


def _is_final(message: dict[str, Any], request_id: Any) -> bool:
    return "method" not in message and message.get("id") == request_id


async def _sse(
    first: dict[str, Any], rest: AsyncIterator[dict[str, Any]], request_id: Any, modern: bool
) -> AsyncIterator[bytes]:
    """The event stream of one request. The response has started: a failure becomes the last event."""
    yield _event(first)
    try:
        async with contextlib.aclosing(rest):  # a client that goes away ends the upstream exchange too
            async for item in rest:
                yield KEEP_ALIVE_COMMENT if item is KEEP_ALIVE else _event(item)
    except Exception as exc:
        yield _event(error_body(answer_for(exc), request_id, modern))


def _event_stream(body: AsyncIterator[bytes], background: BackgroundTask | None = None) -> StreamingResponse:
    return StreamingResponse(body, media_type=c.CONTENT_TYPE_SSE, headers=SSE_HEADERS, background=background)


def _event(message: dict[str, Any], event_id: str | None = None) -> bytes:
    head = b"id: " + event_id.encode() + b"\n" if event_id else b""
    return head + b"event: message\ndata: " + json_body(message) + b"\n\n"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
