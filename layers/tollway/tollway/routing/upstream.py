"""Talking to one upstream MCP server over streamable HTTP, in either era: the wire only.

`exchange()` sends one JSON-RPC message and yields what comes back: notifications and
server-to-client requests as the upstream streams them (SSE), then the final response. What
reaches the caller is always well formed: every message is checked as it arrives (JSON-RPC
shape, our request's id, a valid MCP result for the method), the answer is read within the
request's deadline and the upstream's size limit, and an upstream error's own message and data
are bounded in size. Anything else is one of the `UpstreamError`s, and counts against the
upstream's circuit breaker. Eras, sessions and retries are the router's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import anyio

from tollway import shapes, spec
from tollway.config import UpstreamConfig
from tollway.context import Deadline, UpstreamSession
from tollway.errors import (
    UpstreamAuthError,
    UpstreamError,
    UpstreamInvalidResponse,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
)
from tollway.record import Record
from tollway.routing.credentials import UpstreamCredentials
from tollway.routing.resilience import CircuitBreaker
from tollway.routing.wire import Answer, ConnectionFailed, Http, LeanHttp, NotConnected
from tollway.telemetry import logger

ERROR_MESSAGE_CHARS = 500
"""An upstream error's message is cut to this many characters (it may carry a stack trace)."""
ERROR_DATA_BYTES = 2048
"""An upstream error's `data` is relayed only if its JSON is at most this large."""
CONNECT_TIMEOUT_SECONDS = 5.0
MAX_RESUMPTIONS = 10
"""How often one request's event stream is resumed (GET + Last-Event-ID) after the upstream closed it."""
DRAIN_SECONDS = 0.05
"""How long the end of an event stream is awaited after the response it carried."""
MAX_RETRY_SECONDS = 5.0
"""An upstream's `retry:` is honoured up to this long (the request's deadline bounds it too)."""
MAX_EVENT_ID_CHARS = 256
STREAM_PAUSED = "tollway/stream-paused"
"""The method of the marker a request's message stream carries where the upstream closed its event
stream before answering (SEP-1699 polling) and is about to be resumed: a caller whose own stream
can be resumed (`RequestContext.resumable`) gets its stream closed there too. Never sent anywhere."""
_T = TypeVar("_T")
_ids = itertools.count(1)


def next_request_id() -> str:
    """Ids the gateway uses upstream: unique per process, so callers sharing an upstream
    session never collide, whatever ids their clients chose."""
    return f"tw-{next(_ids)}"


class SessionLost(Exception):
    """The upstream answered 404 for our session id: it expired or the server restarted."""


class NotSpoken(Exception):
    """The upstream answered, but not in the era asked for (a probe's negative answer)."""


class _Cursor:
    """Where an upstream's event stream may be resumed from: the last event id it gave, and how
    long it asked to wait before reconnecting (`retry`, default 0)."""

    __slots__ = ("event_id", "retry_seconds")

    def __init__(self) -> None:
        self.event_id: str | None = None
        self.retry_seconds = 0.0


class UpstreamInfo(Record):
    """What an upstream speaks and offers; learned once per warm instance."""

    __slots__ = ("capabilities", "legacy", "modern")

    def __init__(self, modern: bool, legacy: bool | None, capabilities: dict[str, Any] | None = None) -> None:
        self.modern = modern
        self.legacy = legacy
        """None: not known yet (a 2026-07-28 upstream probed as `auto`; asked when a 2025 caller needs it)."""
        self.capabilities: dict[str, Any] = {} if capabilities is None else capabilities


_http_client: Http | None = None
_http_loop: asyncio.AbstractEventLoop | None = None


def http_client() -> Http:
    """One pooled client per event loop: warm invocations reuse connections to upstreams."""
    global _http_client, _http_loop
    loop = asyncio.get_running_loop()
    if _http_client is None or _http_loop is not loop:
        _http_client = LeanHttp()
        _http_loop = loop
    return _http_client


def _connect_seconds(deadline: Deadline) -> float:
    return min(CONNECT_TIMEOUT_SECONDS, max(deadline.remaining(), 0.01))


class UpstreamClient:
    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.name = config.name
        self.credentials = UpstreamCredentials(config)
        self.breaker = CircuitBreaker(config.name, config.circuit)

    async def exchange(
        self,
        message: dict[str, Any],
        *,
        deadline: Deadline,
        session: str | None = None,
        protocol_version: str | None = None,
        modern: bool = False,
        extra_headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """POST one message; yield every JSON-RPC message of the answer, the response last.

        For a notification or a response (202 Accepted) nothing is yielded. `response_headers`,
        when given, is filled with the HTTP response's headers (lower-case names).
        """
        self.breaker.check()
        healthy: bool | None = None
        items = self._exchange(message, deadline, session, protocol_version, modern, extra_headers, response_headers)
        try:
            async with contextlib.aclosing(items):
                async for item in items:
                    if "method" not in item:
                        healthy = True  # the answer arrived, whether or not the caller reads on
                    yield item
            healthy = True
        except (UpstreamAuthError, UpstreamTooLarge, SessionLost):
            healthy = True  # the upstream is up: configuration, the tool's answer, an expired session
            raise
        except UpstreamError:
            healthy = False
            raise
        finally:
            self.breaker.record(healthy)

    async def _exchange(
        self,
        message: dict[str, Any],
        deadline: Deadline,
        session: str | None,
        protocol_version: str | None,
        modern: bool,
        extra_headers: dict[str, str] | None,
        response_headers: dict[str, str] | None,
    ) -> AsyncIterator[dict[str, Any]]:
        headers = {
            "accept": f"{spec.CONTENT_TYPE_JSON}, {spec.CONTENT_TYPE_SSE}",
            "content-type": spec.CONTENT_TYPE_JSON,
            **self.config.headers,
            **(extra_headers or {}),
            **await self._within(deadline, self.credentials.headers()),
        }
        if protocol_version:
            headers[spec.PROTOCOL_VERSION_HEADER] = protocol_version
        if session:
            headers[spec.SESSION_ID_HEADER] = session
        if modern and "method" in message:
            headers[spec.METHOD_HEADER] = message["method"]
            name_key = spec.NAME_BEARING_METHODS.get(message["method"])
            name = (message.get("params") or {}).get(name_key) if name_key else None
            if isinstance(name, str):
                headers[spec.NAME_HEADER] = spec.encode_header_value(name)
        body = json.dumps(message, separators=(",", ":")).encode()
        # The deadline bounds every wait below; the client's own timeout only bounds connecting.
        sending = http_client().send("POST", self.config.url, headers, body, _connect_seconds(deadline))
        try:
            response = await self._within(deadline, sending)
            try:
                async with contextlib.aclosing(
                    self._read(response, message, deadline, session, protocol_version, response_headers)
                ) as read:
                    async for item in read:
                        yield item
            finally:
                await response.aclose()
        except TimeoutError:
            logger.warning("upstream timed out", extra={"upstream": self.name})
            raise UpstreamTimeout(self.name, retryable=True) from None
        except NotConnected as exc:
            logger.warning("upstream unreachable", extra={"upstream": self.name, "error": str(exc)})
            raise UpstreamUnavailable(self.name, retryable=True, sent=False) from exc
        except ConnectionFailed as exc:
            logger.warning("upstream connection failed", extra={"upstream": self.name, "error": str(exc)})
            raise UpstreamUnavailable(self.name, retryable=True) from exc

    async def _within(self, deadline: Deadline, step: Awaitable[_T]) -> _T:
        """Await one step of the exchange, or raise TimeoutError at the deadline."""
        remaining = deadline.remaining()
        if remaining <= 0:
            if asyncio.iscoroutine(step):
                step.close()
            raise TimeoutError
        # asyncio's own timeout: 8 µs a step against anyio.fail_after's 21 (uvloop, this host)
        async with asyncio.timeout(remaining):
            return await step

    async def _read(
        self,
        response: Answer,
        sent: dict[str, Any],
        deadline: Deadline,
        session: str | None,
        protocol_version: str | None,
        response_headers: dict[str, str] | None,
    ) -> AsyncIterator[dict[str, Any]]:
        if response_headers is not None:
            response_headers.update(response.headers)
        status = response.status_code
        if status == 404 and session:
            raise SessionLost(self.name)
        if status in (401, 403):
            raise self._refused()
        if status == 202:
            return
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == spec.CONTENT_TYPE_SSE and status == 200:
            cursor, current = _Cursor(), response
            try:
                for resumed in range(MAX_RESUMPTIONS + 1):
                    # Closed as soon as our response is read (generators left open are closed late, by GC).
                    async with contextlib.aclosing(self._events(current, deadline, cursor)) as events:
                        async for message in events:
                            checked = self._check(message, sent)
                            if _is_response(checked):
                                # Ours: the rest of the stream carries nothing for this request. Its
                                # end is read first (normally right behind our response; at most
                                # DRAIN_SECONDS, and not past one more message): a stream closed
                                # unread costs the connection, and each call would open a new one.
                                with anyio.move_on_after(DRAIN_SECONDS), contextlib.suppress(Exception):
                                    async for _ in events:  # garbage after it is not ours either
                                        break  # the upstream keeps it open: closed unread after all
                                yield checked
                                return
                            yield checked
                    if not (session and cursor.event_id) or resumed == MAX_RESUMPTIONS:
                        break
                    # The upstream closed the stream before answering, having given it an event id
                    # (2025 era, SEP-1699 polling): resume it with GET and Last-Event-ID after `retry`.
                    if current is not response:
                        await current.aclose()
                    yield {"jsonrpc": "2.0", "method": STREAM_PAUSED}
                    await self._within(deadline, anyio.sleep(cursor.retry_seconds))
                    current = await self._resume(deadline, session, protocol_version, cursor.event_id)
                raise self._invalid("stream ended without a response")
            finally:
                if current is not response:  # the first one is the exchange's to close
                    await current.aclose()
        async with contextlib.aclosing(self._chunks(response, deadline)) as body:
            raw = b"".join([chunk async for chunk in body])
        if content_type != spec.CONTENT_TYPE_JSON:
            raise self._unusable(status, f"HTTP {status} {content_type or 'without content type'}")
        try:
            message = _loads(raw)
        except ValueError:
            raise self._unusable(status, "body is not JSON") from None
        if status != 200 and not (isinstance(message, dict) and isinstance(message.get("error"), dict)):
            raise self._unusable(status, f"HTTP {status}")
        yield self._check(message, sent)

    async def _chunks(self, response: Answer, deadline: Deadline) -> AsyncIterator[bytes]:
        """The body, chunk by chunk, each within the deadline; refused past the size limit."""
        limit, total = self.config.max_response_bytes, 0
        async with contextlib.aclosing(response.aiter_bytes()) as chunks:
            while True:
                try:
                    chunk = await self._within(deadline, anext(chunks))
                except StopAsyncIteration:
                    return
                total += len(chunk)
                if total > limit:
                    logger.warning("upstream answer too large", extra={"upstream": self.name, "max_bytes": limit})
                    raise UpstreamTooLarge(self.name, data={"maxBytes": limit})
                yield chunk

    async def _events(self, response: Answer, deadline: Deadline, cursor: _Cursor) -> AsyncIterator[Any]:
        """JSON-RPC messages of an event stream; events without data (priming, keepalive) skipped.
        `cursor` keeps the last event id and `retry` the stream gave, to resume it from."""
        buffer, data = b"", []
        async with contextlib.aclosing(self._chunks(response, deadline)) as chunks:
            async for chunk in chunks:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
                    if line.startswith("data:"):
                        data.append(line[5:].removeprefix(" "))
                    elif line.startswith("id:"):
                        cursor.event_id = line[3:].removeprefix(" ")[:MAX_EVENT_ID_CHARS] or None
                    elif line.startswith("retry:") and line[6:].strip().isdigit():
                        cursor.retry_seconds = min(int(line[6:].strip()) / 1000, MAX_RETRY_SECONDS)
                    elif line == "" and data:
                        payload, data = "\n".join(data).strip(), []
                        if not payload:
                            continue  # a priming event: an id to resume from, no message
                        try:
                            yield _loads(payload.encode())
                        except ValueError:
                            raise self._invalid("event data is not JSON") from None

    async def _resume(self, deadline: Deadline, session: str, protocol_version: str | None, event_id: str) -> Answer:
        """GET the upstream's stream again from after `event_id`; an answer that is not an event
        stream fails the request (the upstream cannot resume it)."""
        headers = {
            "accept": spec.CONTENT_TYPE_SSE,
            **self.config.headers,
            **await self._within(deadline, self.credentials.headers()),
            spec.SESSION_ID_HEADER: session,
            spec.LAST_EVENT_ID_HEADER: event_id,
        }
        if protocol_version:
            headers[spec.PROTOCOL_VERSION_HEADER] = protocol_version
        sending = http_client().send("GET", self.config.url, headers, None, _connect_seconds(deadline))
        response = await self._within(deadline, sending)
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if response.status_code in (401, 403):
            await response.aclose()
            raise self._refused()
        if response.status_code != 200 or content_type != spec.CONTENT_TYPE_SSE:
            await response.aclose()
            raise self._invalid(f"stream not resumed (HTTP {response.status_code})")
        logger.info("upstream stream resumed", extra={"upstream": self.name})
        return response

    def _check(self, message: Any, sent: dict[str, Any]) -> dict[str, Any]:
        """The message as the caller may see it, or UpstreamInvalidResponse. Nesting is bounded
        (`shapes.MAX_DEPTH`), except in list results, whose items the definition gate checks one
        by one (one bad definition must not hide the others)."""
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            raise self._invalid("not a JSON-RPC message")
        if sent.get("method") not in shapes.LIST_KEYS and shapes.depth(message) > shapes.MAX_DEPTH:
            raise self._invalid("nested too deeply")
        if "method" in message:
            if not isinstance(message["method"], str) or not isinstance(message.get("params", {}), dict):
                raise self._invalid("malformed notification or request")
            if "id" in message and not _valid_id(message["id"]):
                raise self._invalid("server request with an invalid id")
            return message
        if message.get("id") != sent.get("id") or ("result" in message) == ("error" in message):
            raise self._invalid("response to another request, or neither result nor error")
        if "error" in message:
            return {"jsonrpc": "2.0", "id": message["id"], "error": self._bounded(message["error"])}
        why = shapes.check_result(str(sent.get("method")), message["result"])
        if why is not None:
            raise self._invalid(why)
        return message

    def _bounded(self, error: Any) -> dict[str, Any]:
        """An upstream's error object, well formed and small: its message may carry a stack trace."""
        code, message = error.get("code") if isinstance(error, dict) else None, None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = error["message"]
        if not isinstance(code, int) or isinstance(code, bool) or message is None:
            raise self._invalid("malformed error object")
        if len(message) > ERROR_MESSAGE_CHARS:
            message = message[: ERROR_MESSAGE_CHARS - 1] + "…"
        bounded: dict[str, Any] = {"code": code, "message": message or "Upstream error"}
        if "data" in error and len(json.dumps(error["data"])) <= ERROR_DATA_BYTES:
            bounded["data"] = error["data"]
        return bounded

    def _refused(self) -> UpstreamAuthError:
        self.credentials.forget_token()
        logger.error("upstream refused the gateway's credentials", extra={"upstream": self.name})
        return UpstreamAuthError(self.name)

    def _unusable(self, status: int, why: str) -> UpstreamError:
        """A 5xx without a JSON-RPC error is an upstream that is down; anything else is not MCP."""
        if status >= 500:
            logger.warning("upstream failed", extra={"upstream": self.name, "status": status})
            return UpstreamUnavailable(self.name, retryable=True)
        return self._invalid(why)

    def _invalid(self, why: str) -> UpstreamInvalidResponse:
        logger.warning("upstream answered invalid MCP", extra={"upstream": self.name, "reason": why})
        return UpstreamInvalidResponse(self.name)

    # --- one request, notifications, sessions ---------------------------------------------------
    async def request(self, message: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Send a request and return only its final response (server requests are declined)."""
        async with contextlib.aclosing(self.exchange(message, **kwargs)) as stream:
            async for item in stream:
                if "method" in item and "id" in item:
                    await self.decline(item, **kwargs)
                elif "method" not in item:
                    return item
        raise self._invalid("no response")

    async def notify(self, message: dict[str, Any], **kwargs: Any) -> None:
        async for _ in self.exchange(message, **kwargs):
            pass

    async def decline(self, server_request: dict[str, Any], **kwargs: Any) -> None:
        """Answer a server-to-client request the caller cannot take (no back channel)."""
        reply = {
            "jsonrpc": "2.0",
            "id": server_request["id"],
            "error": {
                "code": spec.METHOD_NOT_FOUND,
                "message": "Client requests are not available through the gateway",
            },
        }
        kwargs.pop("modern", None)
        kwargs.pop("response_headers", None)  # they belong to the request being answered
        with contextlib.suppress(UpstreamError):
            await self.notify(reply, **kwargs)

    async def standalone(
        self, session: UpstreamSession, deadline: Deadline, extra_headers: dict[str, str] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """A 2025-era session's standalone stream (GET): the notifications the upstream pushes
        outside any request, until it closes the stream or `deadline`. Nothing when the upstream
        offers no such stream (405). Server requests on it are declined."""
        if not session.session_id:
            return  # a stateless upstream has nowhere to push to
        headers = {
            "accept": spec.CONTENT_TYPE_SSE,
            **self.config.headers,
            **(extra_headers or {}),
            **await self._within(deadline, self.credentials.headers()),
            spec.SESSION_ID_HEADER: session.session_id,
            spec.PROTOCOL_VERSION_HEADER: session.protocol_version,
        }
        sending = http_client().send("GET", self.config.url, headers, None, _connect_seconds(deadline))
        try:
            response = await self._within(deadline, sending)
            try:
                content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if response.status_code in (401, 403):
                    raise self._refused()
                if response.status_code != 200 or content_type != spec.CONTENT_TYPE_SSE:
                    return
                async with contextlib.aclosing(self._events(response, deadline, _Cursor())) as events:
                    async for message in events:
                        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
                            continue  # only notifications and requests travel on this stream
                        if "id" in message:
                            await self.decline(
                                message,
                                deadline=deadline,
                                session=session.session_id,
                                protocol_version=session.protocol_version,
                            )
                            continue
                        if isinstance(message.get("params", {}), dict):
                            yield message
            finally:
                await response.aclose()
        except TimeoutError:
            return  # the stream's time is up
        except (NotConnected, ConnectionFailed) as exc:
            logger.info("upstream stream ended", extra={"upstream": self.name, "error": str(exc)})

    async def delete_session(self, session: UpstreamSession) -> None:
        if not session.session_id:
            return
        headers = {spec.SESSION_ID_HEADER: session.session_id, spec.PROTOCOL_VERSION_HEADER: session.protocol_version}
        try:
            headers.update(await self.credentials.headers())
            with anyio.fail_after(CONNECT_TIMEOUT_SECONDS):
                answer = await http_client().send("DELETE", self.config.url, headers, None, CONNECT_TIMEOUT_SECONDS)
                await answer.aclose()
        except (NotConnected, ConnectionFailed, TimeoutError, UpstreamError):
            logger.info("upstream session delete failed", extra={"upstream": self.name})

    async def discover(self, deadline: Deadline) -> UpstreamInfo:
        """Ask for the 2026-07-28 era (`server/discover`); NotSpoken when the upstream answers
        without it. A timeout or an unreachable upstream raises: that is no answer at all."""
        message = {
            "jsonrpc": "2.0",
            "id": next_request_id(),
            "method": "server/discover",
            "params": {
                "_meta": {
                    spec.META_PROTOCOL_VERSION: spec.LATEST_MODERN_VERSION,
                    spec.META_CLIENT_CAPABILITIES: {},
                    spec.META_CLIENT_INFO: {"name": "tollway", "version": "1"},
                }
            },
        }
        try:
            reply = await self.request(
                message, deadline=deadline, protocol_version=spec.LATEST_MODERN_VERSION, modern=True
            )
        except (UpstreamInvalidResponse, UpstreamUnavailable) as exc:
            if isinstance(exc, UpstreamUnavailable) and not exc.sent:
                raise  # nobody answered: that says nothing about the era
            raise NotSpoken() from None
        result = reply.get("result")
        if not isinstance(result, dict) or spec.LATEST_MODERN_VERSION not in (result.get("supportedVersions") or []):
            raise NotSpoken()
        return UpstreamInfo(modern=True, legacy=None, capabilities=_dict(result.get("capabilities")))

    async def initialize(
        self, client_capabilities: dict[str, Any], client_info: dict[str, Any], deadline: Deadline
    ) -> tuple[UpstreamSession, dict[str, Any]]:
        """Open a 2025-era session: initialize, then notifications/initialized. NotSpoken when the
        upstream answers without the 2025 era."""
        message = {
            "jsonrpc": "2.0",
            "id": next_request_id(),
            "method": "initialize",
            "params": {
                "protocolVersion": spec.LATEST_HANDSHAKE_VERSION,
                "capabilities": client_capabilities,
                "clientInfo": client_info,
            },
        }
        headers: dict[str, str] = {}
        try:
            reply = await self.request(message, deadline=deadline, response_headers=headers)
        except UpstreamInvalidResponse:
            raise NotSpoken() from None
        result = reply.get("result")
        if not isinstance(result, dict) or result.get("protocolVersion") not in spec.HANDSHAKE_VERSIONS:
            raise NotSpoken()
        opened = UpstreamSession(
            session_id=headers.get(spec.SESSION_ID_HEADER), protocol_version=result["protocolVersion"]
        )
        await self.notify(
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            deadline=deadline,
            session=opened.session_id,
            protocol_version=opened.protocol_version,
        )
        return opened, result


def _loads(raw: bytes) -> Any:
    """JSON as RFC 8259 has it: UTF-8, no NaN or Infinity (ValueError). Nesting past what the
    parser reads (about 1,000 levels on Python 3.11, 10,000 on 3.13) is a ValueError too."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _is_response(message: dict[str, Any]) -> bool:
    return "method" not in message


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


async def drain(stream: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    """Consume a message stream to its end (so its HTTP exchange closes) and return the last one."""
    last: dict[str, Any] = {}
    async for item in stream:
        last = item
    return last
