"""Talking to one upstream MCP server over streamable HTTP, in either era.

`exchange()` sends one JSON-RPC message and yields what comes back: notifications and
server-to-client requests as the upstream streams them (SSE), then the final response.
Sessions and era choice live in the router; this module only speaks the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from tollway.config import UpstreamConfig
from tollway.errors import UpstreamAuthError, UpstreamError
from tollway.protocol import constants as c
from tollway.protocol.headers import encode_header_value
from tollway.routing.credentials import UpstreamCredentials
from tollway.telemetry import logger

_ids = itertools.count(1)


def next_request_id() -> str:
    """Ids the gateway uses upstream: unique per process, so callers sharing an upstream
    session never collide, whatever ids their clients chose."""
    return f"tw-{next(_ids)}"


class SessionLost(Exception):
    """The upstream answered 404 for our session id: it expired or the server restarted."""


@dataclass
class UpstreamInfo:
    """What an upstream speaks and offers; learned once per warm instance."""

    modern: bool
    legacy: bool
    capabilities: dict[str, Any] = field(default_factory=dict)


_http_client: httpx.AsyncClient | None = None
_http_loop: asyncio.AbstractEventLoop | None = None


def http_client() -> httpx.AsyncClient:
    """One pooled client per event loop: warm invocations reuse connections to upstreams."""
    global _http_client, _http_loop
    loop = asyncio.get_running_loop()
    if _http_client is None or _http_loop is not loop:
        _http_client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            follow_redirects=False,
        )
        _http_loop = loop
    return _http_client


class Upstream:
    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.name = config.name
        self.credentials = UpstreamCredentials(config)

    async def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """What every request to this upstream carries: config headers, then the gateway's own
        credentials for it. Nothing from the caller's request except what `extra` names."""
        return {**self.config.headers, **(extra or {}), **await self.credentials.headers()}

    async def exchange(
        self,
        message: dict[str, Any],
        *,
        session: str | None = None,
        protocol_version: str | None = None,
        modern: bool = False,
        extra_headers: dict[str, str] | None = None,
        read_timeout: float | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """POST one message; yield every JSON-RPC message of the answer, the response last.

        `read_timeout` (default: the upstream's timeout) bounds the wait between two events; a
        call whose server requests are relayed to a person gets the longer interaction timeout.
        `response_headers`, when given, is filled with the HTTP response's headers (lower-case names).

        For a notification or a response (202 Accepted) nothing is yielded.
        """
        headers = {
            "accept": f"{c.CONTENT_TYPE_JSON}, {c.CONTENT_TYPE_SSE}",
            "content-type": c.CONTENT_TYPE_JSON,
            **await self._headers(extra_headers),
        }
        if protocol_version:
            headers[c.PROTOCOL_VERSION_HEADER] = protocol_version
        if session:
            headers[c.SESSION_ID_HEADER] = session
        if modern and "method" in message:
            headers[c.METHOD_HEADER] = message["method"]
            name_key = c.NAME_BEARING_METHODS.get(message["method"])
            name = (message.get("params") or {}).get(name_key) if name_key else None
            if isinstance(name, str):
                headers[c.NAME_HEADER] = encode_header_value(name)
        timeout = httpx.Timeout(
            self.config.timeout_seconds,
            connect=min(5.0, self.config.timeout_seconds),
            read=read_timeout or self.config.timeout_seconds,
        )
        body = json.dumps(message, separators=(",", ":")).encode()
        try:
            async with http_client().stream(
                "POST", self.config.url, content=body, headers=headers, timeout=timeout
            ) as response:
                async for item in self._read(response, session, response_headers):
                    yield item
        except (SessionLost, UpstreamError):
            raise
        except httpx.TimeoutException as exc:
            logger.warning("upstream timed out", extra={"upstream": self.name})
            raise UpstreamError(f"Upstream {self.name!r} timed out", data={"upstream": self.name}) from exc
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning("upstream unreachable", extra={"upstream": self.name, "error": type(exc).__name__})
            raise UpstreamError(
                f"Upstream {self.name!r} is unavailable", data={"upstream": self.name, "retryable": True}
            ) from exc

    async def request(self, message: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Send a request and return only its final response (notifications are dropped)."""
        last: dict[str, Any] | None = None
        async for item in self.exchange(message, **kwargs):
            if _is_response(item) and item.get("id") == message.get("id"):
                last = item
            elif "method" in item and "id" in item:
                await self.decline(item, **kwargs)
        if last is None:
            raise self._invalid("no response")
        return last

    async def notify(self, message: dict[str, Any], **kwargs: Any) -> None:
        async for _ in self.exchange(message, **kwargs):
            pass

    async def decline(self, server_request: dict[str, Any], **kwargs: Any) -> None:
        """Answer a server-to-client request the caller cannot take (no back channel)."""
        reply = {
            "jsonrpc": "2.0",
            "id": server_request["id"],
            "error": {"code": c.METHOD_NOT_FOUND, "message": "Client requests are not available through the gateway"},
        }
        kwargs.pop("modern", None)
        kwargs.pop("response_headers", None)  # they belong to the request being answered
        with contextlib.suppress(UpstreamError):
            await self.notify(reply, **kwargs)

    async def delete_session(self, session: str, protocol_version: str) -> None:
        try:
            headers = {
                c.SESSION_ID_HEADER: session,
                c.PROTOCOL_VERSION_HEADER: protocol_version,
                **await self._headers(),
            }
            await http_client().delete(self.config.url, headers=headers, timeout=5.0)
        except (httpx.HTTPError, UpstreamError):
            logger.info("upstream session delete failed", extra={"upstream": self.name})

    async def _read(
        self, response: httpx.Response, session: str | None, response_headers: dict[str, str] | None
    ) -> AsyncIterator[dict[str, Any]]:
        if response_headers is not None:
            response_headers.update(response.headers)
        if response.status_code == 404 and session:
            raise SessionLost(self.name)
        if response.status_code in (401, 403):
            raise self._refused()
        if response.status_code == 202:
            return
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == c.CONTENT_TYPE_SSE and response.status_code == 200:
            async for message in _sse_messages(response):
                yield message
            return
        raw = await response.aread()
        if content_type != c.CONTENT_TYPE_JSON:
            raise self._invalid(f"HTTP {response.status_code} {content_type or 'without content type'}")
        try:
            message = json.loads(raw)
        except ValueError:
            raise self._invalid("body is not JSON") from None
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            raise self._invalid("not a JSON-RPC message")
        yield message

    def _refused(self) -> UpstreamAuthError:
        self.credentials.forget_token()
        logger.error("upstream refused the gateway's credentials", extra={"upstream": self.name})
        return UpstreamAuthError(
            f"Upstream {self.name!r} refused the gateway's credentials", data={"upstream": self.name}
        )

    def _invalid(self, why: str) -> UpstreamError:
        return invalid_response(self.name, why)

    # --- lifecycle -----------------------------------------------------------------------------
    async def probe(self) -> UpstreamInfo:
        """Learn the upstream's era and capabilities: server/discover first, initialize if that fails."""
        if self.config.protocol != "legacy":
            info = await self._discover()
            if info is not None:
                info.legacy = self.config.protocol == "auto"
                return info
            if self.config.protocol == "2026-07-28":
                raise UpstreamError(f"Upstream {self.name!r} does not answer server/discover")
        opened, result = await self.initialize({}, {"name": "tollway-probe", "version": "1"})
        if opened.session_id:
            await self.delete_session(opened.session_id, opened.protocol_version)
        return UpstreamInfo(modern=False, legacy=True, capabilities=result.get("capabilities") or {})

    async def _discover(self) -> UpstreamInfo | None:
        message = {
            "jsonrpc": "2.0",
            "id": next_request_id(),
            "method": "server/discover",
            "params": {
                "_meta": {
                    c.META_PROTOCOL_VERSION: c.LATEST_MODERN_VERSION,
                    c.META_CLIENT_CAPABILITIES: {},
                    c.META_CLIENT_INFO: {"name": "tollway", "version": "1"},
                }
            },
        }
        try:
            reply = await self.request(message, protocol_version=c.LATEST_MODERN_VERSION, modern=True)
        except UpstreamAuthError:
            raise  # a credentials problem, not a sign of a 2025-only server
        except UpstreamError:
            return None
        result = reply.get("result")
        if not isinstance(result, dict) or c.LATEST_MODERN_VERSION not in (result.get("supportedVersions") or []):
            return None
        return UpstreamInfo(modern=True, legacy=False, capabilities=result.get("capabilities") or {})

    async def initialize(
        self, client_capabilities: dict[str, Any], client_info: dict[str, Any]
    ) -> tuple[LegacyOpened, dict[str, Any]]:
        """Open a 2025-era session: initialize, then notifications/initialized."""
        message = {
            "jsonrpc": "2.0",
            "id": next_request_id(),
            "method": "initialize",
            "params": {
                "protocolVersion": c.LATEST_HANDSHAKE_VERSION,
                "capabilities": client_capabilities,
                "clientInfo": client_info,
            },
        }
        headers: dict[str, str] = {}
        reply = await self.request(message, response_headers=headers)
        session_id = headers.get(c.SESSION_ID_HEADER)
        result = reply.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("protocolVersion"), str):
            raise self._invalid("initialize failed")
        version = result["protocolVersion"]
        opened = LegacyOpened(session_id=session_id, protocol_version=version)
        await self.notify(
            {"jsonrpc": "2.0", "method": "notifications/initialized"}, session=session_id, protocol_version=version
        )
        return opened, result


@dataclass(frozen=True)
class LegacyOpened:
    session_id: str | None
    protocol_version: str


def invalid_response(upstream: str, why: str) -> UpstreamError:
    """What the caller gets when an upstream answers something that is not MCP; `why` is only logged."""
    logger.warning("upstream answered invalid MCP", extra={"upstream": upstream, "reason": why})
    return UpstreamError(f"Upstream {upstream!r} returned an invalid response", data={"upstream": upstream})


def _is_response(message: dict[str, Any]) -> bool:
    return "method" not in message and ("result" in message or "error" in message)


async def _sse_messages(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    decoder = _SseDecoder()
    async for line in response.aiter_lines():
        if (message := decoder.feed(line)) is not None:
            yield message


class _SseDecoder:
    """SSE lines in, JSON-RPC messages out; events without data (priming, keepalive) give None."""

    def __init__(self) -> None:
        self.data: list[str] = []

    def feed(self, line: str) -> dict[str, Any] | None:
        if line.startswith("data:"):
            self.data.append(line[5:].removeprefix(" "))
            return None
        if line != "":
            return None  # event:, id:, retry: and comments carry nothing the gateway needs
        payload, self.data = "\n".join(self.data).strip(), []
        if not payload:
            return None
        try:
            decoded = json.loads(payload)
        except ValueError:
            raise UpstreamError("Upstream returned an invalid event stream") from None
        return decoded if isinstance(decoded, dict) else None


async def drain(stream: AsyncIterator[dict[str, Any]]) -> dict[str, Any]:
    """Consume a message stream to its end (so its HTTP exchange closes) and return the last one."""
    last: dict[str, Any] = {}
    async for item in stream:
        last = item
    return last
