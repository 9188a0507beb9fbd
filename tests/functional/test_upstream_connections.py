"""The gateway's HTTP/1.1 to upstreams (tollway.routing.wire.LeanHttp) against real sockets: a
scripted server on 127.0.0.1 that counts connections, keeps every request it read, and answers
as each test says. What a caller of `send()` sees: kept-alive connections reused, streams read
as they arrive, broken and garbage answers refused, headers that cannot be sent never sent, a
proxy honoured through httpx, TLS with the same trust as httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from tollway.routing.wire import ConnectionFailed, LeanHttp, NotConnected, _origin

JSON = {"content-type": "application/json"}
BOUND = 5.0
"""Every wait in these tests ends within this many seconds."""

Script = Callable[["Served", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


class Served:
    """What the scripted server saw: connections accepted, requests read (head + body)."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.ended = asyncio.Event()
        self.release = asyncio.Event()
        self.url = ""


async def read_request(served: Served, reader: asyncio.StreamReader) -> bytes | None:
    """One request (head and a content-length body), or None at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    request = head + (await reader.readexactly(length) if length else b"")
    served.requests.append(request)
    return request


def answer(body: bytes, status: str = "200 OK", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or JSON).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def keep_answering(served: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await read_request(served, reader) is not None:
        writer.write(answer(b'{"ok":true}'))
        await writer.drain()


@contextlib.asynccontextmanager
async def scripted(script: Script, tls: ssl.SSLContext | None = None) -> AsyncIterator[Served]:
    served = Served()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.connections += 1
        try:
            await asyncio.wait_for(script(served, reader, writer), BOUND)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            served.ended.set()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    served.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/mcp"
    try:
        yield served
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), BOUND)


async def body_of(http: LeanHttp, url: str, body: bytes | None = b"{}", **headers: str) -> tuple[int, bytes]:
    reply = await asyncio.wait_for(http.send("POST", url, {**JSON, **headers}, body, BOUND), BOUND)
    try:
        return reply.status_code, b"".join([chunk async for chunk in reply.aiter_bytes()])
    finally:
        await reply.aclose()


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), 4 * BOUND))


# --- connections ------------------------------------------------------------------------------
def test_calls_to_one_upstream_share_one_kept_alive_connection_and_send_exactly_what_was_given() -> None:
    async def scenario() -> Served:
        http = LeanHttp()
        async with scripted(keep_answering) as served:
            for n in range(3):
                assert await body_of(http, served.url, b'{"n":%d}' % n, **{"mcp-method": "tools/call"}) == (
                    200,
                    b'{"ok":true}',
                )
            await http.aclose()
        return served

    served = run(scenario)
    assert served.connections == 1
    assert len(served.requests) == 3
    head, _, body = served.requests[2].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /mcp HTTP/1.1"
    assert {b"content-type: application/json", b"mcp-method: tools/call", b"content-length: 7"} <= set(lines)
    assert any(line.startswith(b"host: 127.0.0.1:") for line in lines)
    assert body == b'{"n":2}'


def test_an_event_stream_is_read_as_it_arrives_not_when_it_ends() -> None:
    async def stream(served: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(served, reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        first = b'data: {"n":1}\n\n'
        writer.write(b"%x\r\n%s\r\n" % (len(first), first))
        await writer.drain()
        await served.release.wait()  # the rest only once the caller holds the first event
        last = b'data: {"n":2}\n\n'
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(last), last))
        await writer.drain()
        await read_request(served, reader)

    async def scenario() -> list[bytes]:
        http = LeanHttp()
        async with scripted(stream) as served:
            reply = await http.send("POST", served.url, JSON, b"{}", BOUND)
            chunks = reply.aiter_bytes()
            received = [await asyncio.wait_for(anext(chunks), BOUND)]
            served.release.set()
            received += [chunk async for chunk in chunks]
            await reply.aclose()
            await http.aclose()
        return received

    received = run(scenario)
    assert received[0] == b'data: {"n":1}\n\n'
    assert b"".join(received[1:]) == b'data: {"n":2}\n\n'


def test_a_connection_the_upstream_closed_while_idle_is_not_used_again() -> None:
    async def one_answer_then_close(served: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(served, reader)
        writer.write(answer(b'{"ok":true}'))
        await writer.drain()

    async def scenario() -> Served:
        http = LeanHttp()
        async with scripted(one_answer_then_close) as served:
            assert (await body_of(http, served.url))[0] == 200
            await asyncio.wait_for(served.ended.wait(), BOUND)
            await asyncio.sleep(0.05)  # the close reaches the client's loop
            assert (await body_of(http, served.url))[0] == 200
            await http.aclose()
        return served

    served = run(scenario)
    assert served.connections == 2
    assert len(served.requests) == 2


def test_a_request_the_upstream_drops_on_a_reused_connection_is_sent_once_more_on_a_new_one() -> None:
    async def drop_the_second(served: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(served, reader)
        if served.connections == 1:
            writer.write(answer(b'{"first":true}'))
            await writer.drain()
            await read_request(served, reader)  # read, then closed unanswered
            return
        writer.write(answer(b'{"again":true}'))
        await writer.drain()
        await read_request(served, reader)

    async def scenario() -> tuple[Served, bytes]:
        http = LeanHttp()
        async with scripted(drop_the_second) as served:
            await body_of(http, served.url)
            _, second = await body_of(http, served.url)
            await http.aclose()
        return served, second

    served, second = run(scenario)
    assert second == b'{"again":true}'
    assert served.connections == 2
    assert len(served.requests) == 3


def test_a_request_dropped_on_a_new_connection_is_a_failed_connection() -> None:
    async def drop(served: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(served, reader)

    async def scenario() -> Served:
        http = LeanHttp()
        async with scripted(drop) as served:
            with pytest.raises(ConnectionFailed):
                await body_of(http, served.url)
        return served

    assert run(scenario).connections == 1


def test_an_answer_that_is_not_http_is_a_failed_connection() -> None:
    async def garbage(served: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(served, reader)
        writer.write(b"hello\r\n\r\n")
        await writer.drain()
        await read_request(served, reader)

    async def scenario() -> None:
        async with scripted(garbage) as served:
            with pytest.raises(ConnectionFailed):
                await body_of(LeanHttp(), served.url)

    run(scenario)


def test_nobody_listening_is_not_connected() -> None:
    async def scenario() -> None:
        async with scripted(keep_answering) as served:
            url = served.url
        with pytest.raises(NotConnected):
            await body_of(LeanHttp(), url)

    run(scenario)


@pytest.mark.parametrize("value", ["x\r\nevil: 1", "x\nevil: 1", "nul\x00"])
def test_a_header_that_would_split_the_request_is_never_sent(value: str) -> None:
    async def scenario() -> Served:
        http = LeanHttp()
        async with scripted(keep_answering) as served:
            with pytest.raises(ConnectionFailed):
                await body_of(http, served.url, **{"mcp-session-id": value})
            with pytest.raises(ConnectionFailed):
                await body_of(http, served.url, **{"bad name": "v"})
        return served

    served = run(scenario)
    assert served.requests == []


def test_an_answer_left_unread_closes_its_connection() -> None:
    async def big(served: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(served, reader) is not None:
            writer.write(answer(b"x" * 100_000))
            await writer.drain()

    async def scenario() -> Served:
        http = LeanHttp()
        async with scripted(big) as served:
            reply = await http.send("POST", served.url, JSON, b"{}", BOUND)
            await reply.aclose()  # not read: the rest of it would be the next answer's start
            status, body = await body_of(http, served.url)
            assert (status, len(body)) == (200, 100_000)
            await http.aclose()
        return served

    assert run(scenario).connections == 2


def test_bytes_an_upstream_sends_beyond_its_answer_are_not_part_of_it() -> None:
    async def answer_twice(served: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(served, reader) is not None:
            writer.write(answer(b'{"a":1}') + answer(b"bad"))  # one asked for, one not: in one write
            await writer.drain()

    async def scenario() -> tuple[tuple[int, bytes], dict[str, str], Served]:
        http = LeanHttp()
        async with scripted(answer_twice) as served:
            reply = await http.send("POST", served.url, JSON, b"{}", BOUND)
            body = b"".join([chunk async for chunk in reply.aiter_bytes()])
            headers = dict(reply.headers)
            await reply.aclose()
            await body_of(http, served.url)
            await http.aclose()
        return (reply.status_code, body), headers, served

    (status, body), headers, served = run(scenario)
    assert (status, body) == (200, b'{"a":1}')
    assert headers["content-length"] == "7"
    assert served.connections == 2  # the connection that carried more was not used again


def test_an_upstream_url_is_sent_percent_encoded() -> None:
    direct = _origin("http://upstream.example/mcp/a b?x=1 2&y=%41")
    assert direct is not None
    assert direct.head == b"/mcp/a%20b?x=1%202&y=%41 HTTP/1.1\r\nhost: upstream.example"


def test_an_answer_that_ends_with_its_connection_is_read_whole() -> None:
    async def until_close(served: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(served, reader)
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{"whole":')
        await writer.drain()
        writer.write(b"true}")
        await writer.drain()

    async def scenario() -> tuple[int, bytes]:
        async with scripted(until_close) as served:
            return await body_of(LeanHttp(), served.url)

    assert run(scenario) == (200, b'{"whole":true}')


def test_a_large_answer_arrives_intact() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: more than is read ahead before the caller takes it

    async def large(served: Served, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(served, reader)
        writer.write(answer(payload, headers={"content-type": "application/octet-stream"}))
        await writer.drain()
        await read_request(served, reader)

    async def scenario() -> tuple[int, bytes]:
        async with scripted(large) as served:
            return await body_of(LeanHttp(), served.url)

    status, body = run(scenario)
    assert status == 200
    assert body == payload


def test_closing_the_client_closes_its_idle_connections() -> None:
    async def scenario() -> None:
        http = LeanHttp()
        async with scripted(keep_answering) as served:
            await body_of(http, served.url)
            await http.aclose()
            await asyncio.wait_for(served.ended.wait(), BOUND)  # the server read the end of it

    run(scenario)


# --- proxies and TLS --------------------------------------------------------------------------
def test_an_upstream_behind_a_proxy_is_reached_through_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> Served:
        async with scripted(keep_answering) as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url.removesuffix("/mcp"))
            http = LeanHttp()
            assert await body_of(http, "http://upstream.invalid/mcp") == (200, b'{"ok":true}')
            await http.aclose()
        return proxy

    proxy = run(scenario)
    assert proxy.requests[0].startswith(b"POST http://upstream.invalid/mcp HTTP/1.1\r\n")


def test_an_upstream_the_proxy_settings_exclude_is_reached_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing there: used, it would fail
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    async def scenario() -> Served:
        http = LeanHttp()
        async with scripted(keep_answering) as served:
            assert (await body_of(http, served.url))[0] == 200
            await http.aclose()
        return served

    assert run(scenario).requests[0].startswith(b"POST /mcp HTTP/1.1\r\n")


def test_what_the_lean_client_leaves_to_httpx() -> None:
    assert _origin("http://user:secret@upstream.example/mcp") is None  # credentials in the URL
    assert _origin("http://bücher.example/mcp") is None  # a name DNS needs encoded
    assert _origin("ftp://upstream.example/mcp") is None
    direct = _origin("https://upstream.example:8443/mcp?x=1")
    assert direct is not None
    assert (direct.host, direct.port, direct.tls) == ("upstream.example", 8443, True)
    assert direct.head == b"/mcp?x=1 HTTP/1.1\r\nhost: upstream.example:8443"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_tls_trusts_what_httpx_trusts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    async def scenario(trusted: bool) -> tuple[int, bytes] | None:
        async with scripted(keep_answering, tls=server_tls) as served:
            http = LeanHttp()
            try:
                return await body_of(http, served.url)
            except NotConnected:
                assert not trusted
                return None
            finally:
                await http.aclose()

    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    assert run(lambda: scenario(trusted=False)) is None  # certifi's roots do not hold it
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    assert run(lambda: scenario(trusted=True)) == (200, b'{"ok":true}')
