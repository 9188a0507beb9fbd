"""HTTP/1.1 to upstream MCP servers, without httpx's per-request machinery.

An upstream exchange is one POST (or a GET for a stream) and an answer read as it arrives. Through
httpx that cost about 1.0 ms of CPU per call on the local server, the largest part of a call with
every feature off; the same exchange on an asyncio connection parsed by httptools (llhttp, the
parser uvicorn uses, already a dependency) costs about 0.2 ms (side by side in one process, an
ad-hoc A/B; README's performance section has `make bench`'s figures). `LeanHttp` is that: kept-
alive connections per origin, the request written in one call, the answer's head and body parsed
by httptools, the body handed over chunk by chunk as it arrives (an SSE stream stays a stream).

What it leaves to httpx (`HttpxHttp`, the same interface over an `httpx.AsyncClient`): an origin
behind a proxy (`HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY`, `NO_PROXY`, as httpx reads them), a URL
with user information, and anything not http or https. TLS uses httpx's own context
(`httpx.create_ssl_context()`: certifi's bundle, or `SSL_CERT_FILE`/`SSL_CERT_DIR`), so the trust
is the same either way. No compression is asked for, and no redirect is followed (the gateway
follows none).

Failures are two: `NotConnected` (nothing was sent: refused, unresolvable, TLS, connect timeout)
and `ConnectionFailed` (the connection broke, the answer was not HTTP, or a header could not be
sent); through httpx, its other timeouts are `TimeoutError`. Waits other than connecting are the
caller's to bound (`UpstreamClient._within`); a connection whose answer was not read to its end
is closed, never reused. A kept-alive connection the upstream closed while idle is never taken;
one that it closes just as it is taken (no byte of an answer read) is replaced once by a new
connection, as urllib3 and botocore do.
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote, urlsplit

import httptools

IDLE_PER_ORIGIN = 20
"""Kept-alive connections kept per upstream origin (httpx's pool kept 20 in all)."""
MAX_HEAD_BYTES = 64 * 1024
"""An answer whose status line and headers are larger is refused (h11's limit is 16 KiB)."""
READ_AHEAD_BYTES = 256 * 1024
"""Body bytes buffered before the connection stops reading until the caller takes them."""
USER_AGENT = "tollway"
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_UNSENDABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class NotConnected(Exception):
    """No connection was made, so nothing was sent."""


class ConnectionFailed(Exception):
    """The connection broke, or the answer was not HTTP/1.1."""


class Answer(Protocol):
    status_code: int
    headers: Mapping[str, str]
    """Lower-case names; a repeated header's values joined by ", "."""

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Http(Protocol):
    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, connect_timeout: float
    ) -> Answer:
        """The answer's status and headers; its body is read from `aiter_bytes()`. Close it."""
        ...

    async def aclose(self) -> None: ...


class _Origin(NamedTuple):
    host: str
    port: int
    tls: bool
    head: bytes
    """The request line's target and the Host header, as `<target> HTTP/1.1\\r\\nhost: <host>`."""


class LeanHttp:
    """Upstream HTTP on one event loop: `send()` and an answer to read and close."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int, bool], collections.deque[_Connection]] = {}
        self._origins: dict[str, _Origin | None] = {}
        self._ssl: ssl.SSLContext | None = None
        self._fallback: HttpxHttp | None = None

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, connect_timeout: float
    ) -> Answer:
        origin = self._origins.get(url, _UNKNOWN)
        if origin is _UNKNOWN:
            origin = self._origins[url] = _origin(url)
        if origin is None:
            return await self._httpx().send(method, url, headers, body, connect_timeout)
        request = _request(method, origin, headers, body)
        connection = self._take(origin)
        if connection is not None:
            try:
                return await connection.exchange(request, self)
            except ConnectionFailed:
                if connection.received:
                    raise
                # Closed by the upstream as it was taken, before any answer: not an answer.
        connection = await self._connect(origin, connect_timeout)
        return await connection.exchange(request, self)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        if self._fallback is not None:
            await self._fallback.aclose()

    def _take(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get((origin.host, origin.port, origin.tls))
        while idle:
            connection = idle.pop()
            if connection.reusable():
                return connection
            connection.close()
        return None

    def release(self, origin: _Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault((origin.host, origin.port, origin.tls), collections.deque())
        if len(idle) >= IDLE_PER_ORIGIN:
            connection.close()
            return
        idle.append(connection)

    async def _connect(self, origin: _Origin, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        connection = _Connection(origin)
        tls = self._context() if origin.tls else None
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: connection, origin.host, origin.port, ssl=tls, server_hostname=origin.host if tls else None
                )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError and socket.gaierror are OSErrors
            connection.close()
            raise NotConnected(type(exc).__name__) from None
        return connection

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            import httpx  # its trust settings, so both paths trust the same roots

            self._ssl = httpx.create_ssl_context()
        return self._ssl

    def _httpx(self) -> HttpxHttp:
        if self._fallback is None:
            import httpx

            self._fallback = HttpxHttp(
                httpx.AsyncClient(
                    limits=httpx.Limits(max_connections=100, max_keepalive_connections=IDLE_PER_ORIGIN),
                    follow_redirects=False,
                )
            )
        return self._fallback


_UNKNOWN: Any = object()


def _origin(url: str) -> _Origin | None:
    """How to reach `url` directly, or None when httpx should (a proxy, user information, another
    scheme, a name that is not ASCII: httpx encodes it for DNS)."""
    import urllib.request  # once per upstream URL; it costs ~5 ms of a cold import

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc or not url.isascii():
        return None
    proxies = urllib.request.getproxies_environment()
    if (proxies.get(parts.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass_environment(
        parts.netloc, proxies
    ):
        return None
    tls = parts.scheme == "https"
    # Percent-encoded as httpx would (a space is %20); what is encoded already stays as it is.
    target = quote(parts.path or "/", safe="/%:@!$&'()*+,;=")
    if parts.query:
        target += "?" + quote(parts.query, safe="/?%:@!$&'()*+,;=")
    return _Origin(
        parts.hostname,
        parts.port or (443 if tls else 80),
        tls,
        f"{target} HTTP/1.1\r\nhost: {parts.netloc}".encode("ascii"),
    )


def _request(method: str, origin: _Origin, headers: Mapping[str, str], body: bytes | None) -> bytes:
    lines = [f"{method} ".encode("ascii"), origin.head]
    text = []
    for name, value in headers.items():
        if not _TOKEN.match(name) or _UNSENDABLE.search(value):
            raise ConnectionFailed("a header is not sendable")
        text.append(f"\r\n{name}: {value}")
    if "user-agent" not in headers:
        text.append(f"\r\nuser-agent: {USER_AGENT}")
    if body is not None:
        text.append(f"\r\ncontent-length: {len(body)}")
    text.append("\r\n\r\n")
    try:
        lines.append("".join(text).encode("latin-1"))
    except UnicodeEncodeError:
        raise ConnectionFailed("a header is not sendable") from None
    if body:
        lines.append(body)
    return b"".join(lines)


class _Connection(asyncio.Protocol):
    """One connection: one exchange at a time; the answer's head, then its body as it arrives."""

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle = False
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reset()

    def _reset(self) -> None:
        self.received = 0
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.error: ConnectionFailed | None = None
        self.paused = False
        self._delimited = False

    # --- the caller's side -------------------------------------------------------------------
    async def exchange(self, request: bytes, owner: LeanHttp) -> _Answer:
        assert self.transport is not None
        self._reset()
        self.idle = False
        self._parser = httptools.HttpResponseParser(self)
        self.transport.write(request)
        try:
            while not self.head_done:
                await self.wait()
        except BaseException:
            self.close()  # cancelled (the deadline) or broken: the connection's state is unknown
            raise
        return _Answer(self, owner)

    async def wait(self) -> None:
        if self.error is not None:
            raise self.error
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def reusable(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def finished(self) -> bool:
        """Whether the answer was read to its end and the connection may carry another exchange
        (then it is idle from here on)."""
        self._parser = None
        self.idle = self.complete and self.keep_alive and not self.chunks and self.reusable()
        return self.idle

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()

    # --- asyncio's side ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.idle or self._parser is None:
            self._fail("data while idle")  # nothing may arrive between exchanges
            return
        self.received += len(data)
        if self._after_the_answer():
            return  # more than the answer: never read as part of it, and not reused
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail("answer is not HTTP/1.1")
            return
        if not self.head_done and self.received > MAX_HEAD_BYTES:
            self._fail("answer head too large")

    def eof_received(self) -> bool | None:
        if self.head_done and not self.complete and not self._delimited:
            self.complete = True  # a body that ends with the connection (neither length nor chunks)
            self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.complete:
            self.error = self.error or ConnectionFailed("connection closed before the answer ended")
        self._wake()

    # --- httptools' callbacks ----------------------------------------------------------------
    def _after_the_answer(self) -> bool:
        """Whether the parser is past our answer: bytes the upstream sent beyond it (a second,
        unrequested message) are never part of it, and the connection is not used again."""
        if self.complete:
            self.keep_alive = False
        return self.complete

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._after_the_answer():
            return
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text
        if key in ("content-length", "transfer-encoding"):
            self._delimited = True

    def on_headers_complete(self) -> None:
        if self._after_the_answer():
            return
        assert self._parser is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self.headers = {}  # an interim answer (100 Continue): the real one follows
            self._delimited = False
            return
        self.status = status
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._after_the_answer():
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > READ_AHEAD_BYTES and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._after_the_answer():
            return
        if self.head_done:
            assert self._parser is not None
            self.keep_alive = self._parser.should_keep_alive()  # llhttp knows it only until the next message
            self.complete = True
            self._wake()

    # --- internals ---------------------------------------------------------------------------
    def take(self) -> bytes:
        chunk = b"".join(self.chunks) if len(self.chunks) > 1 else self.chunks[0]
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return chunk

    def _fail(self, why: str) -> None:
        self.error = ConnectionFailed(why)
        self.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Answer:
    def __init__(self, connection: _Connection, owner: LeanHttp) -> None:
        self._connection: _Connection | None = connection
        self._owner = owner
        self.status_code = connection.status
        self.headers = connection.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while connection is not None:
            if connection.chunks:
                yield connection.take()
            elif connection.complete:
                return
            else:
                await connection.wait()

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if connection.finished():
            self._owner.release(connection.origin, connection)
        else:
            connection.close()


class HttpxHttp:
    """The same interface over an `httpx.AsyncClient`: for what `LeanHttp` leaves to httpx, and
    for tests whose upstream is an `httpx.MockTransport`."""

    def __init__(self, client: Any) -> None:
        self.client = client

    async def send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, connect_timeout: float
    ) -> Answer:
        import httpx

        timeout = httpx.Timeout(None, connect=connect_timeout)
        request = self.client.build_request(method, url, content=body, headers=headers, timeout=timeout)
        try:
            response = await self.client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise NotConnected(type(exc).__name__) from None
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as exc:
            raise ConnectionFailed(type(exc).__name__) from None
        return _HttpxAnswer(response)

    async def aclose(self) -> None:
        await self.client.aclose()


class _HttpxAnswer:
    def __init__(self, response: Any) -> None:
        self._response = response
        self.status_code: int = response.status_code
        self.headers = {name.lower(): value for name, value in response.headers.items()}

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        import httpx

        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.TimeoutException:
            raise TimeoutError from None
        except httpx.HTTPError as exc:
            raise ConnectionFailed(type(exc).__name__) from None

    async def aclose(self) -> None:
        await self._response.aclose()
