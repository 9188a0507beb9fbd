"""The wire to one upstream: every message is checked, every answer bounded in size and in time.

No socket is opened. The upstream is `McpStandIn`, an MCP server in memory that speaks either
era and can be told, per method, to answer anything at all (a malformed error, `NaN`, another
request's id, an HTML page, an event stream that drips comments or never ends, 20 MB...). It sits
behind `httpx.MockTransport`, and the gateway's pooled client
(`tollway.routing.upstream.http_client`) is replaced by one that uses that transport, so the real
wire client (`UpstreamClient`) reads every byte.

Some tests drive `UpstreamClient` directly, to see which error it raises; the others drive the
whole gateway in-process (`create_app` behind Starlette's TestClient, in-memory stores), to see
what a caller gets: one stable JSON-RPC error with the right HTTP status, in time. The helpers
here (`McpStandIn`, `Gateway`, the answers) are shared with test_upstream_eras.py and
test_resilience.py.

Timing is asserted as a bound on behaviour, not as a benchmark: a request that meets a timeout of
T seconds must be over in less than 1.6 T.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import anyio
import httpx
import pytest
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.config import UpstreamConfig, parse_config
from tollway.context import Deadline, Session
from tollway.errors import (
    UpstreamAuthError,
    UpstreamInvalidResponse,
    UpstreamTimeout,
    UpstreamTooLarge,
    UpstreamUnavailable,
)
from tollway.http import create_app
from tollway.routing import upstream as upstream_module
from tollway.routing.upstream import (
    ERROR_DATA_BYTES,
    ERROR_MESSAGE_CHARS,
    STREAM_PAUSED,
    UpstreamClient,
    next_request_id,
)
from tollway.routing.wire import HttpxHttp
from tollway.store import Stores

from tests.unit.wire import assert_http_error

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
RESOURCE = "https://gateway.example.com/mcp"
ACCEPT_BOTH = "application/json, text/event-stream"
INVALID = "Upstream 'x' returned an invalid response"
UNAVAILABLE = "Upstream 'x' is unavailable"
TIMED_OUT = "Upstream 'x' timed out"
TOO_LARGE = "Upstream 'x' returned a response larger than the gateway's limit"
REFUSED = "Upstream 'x' refused the gateway's credentials"
CIRCUIT_OPEN = "Upstream 'x' is temporarily unavailable"
SLACK = 1.6
"""A request that meets a timeout of T seconds is over before SLACK * T."""

Answer = Callable[[dict[str, Any], httpx.Request], "httpx.Response | Awaitable[httpx.Response]"]
"""How the stand-in answers one request: (the JSON-RPC message, the HTTP request) -> a response."""


# --- an upstream in memory ----------------------------------------------------------------------
class McpStandIn:
    """An MCP server of either era behind `httpx.MockTransport`; `on()` changes its answers.

    By default it answers `server/discover` (if `modern`), `initialize` with a session id (if
    `legacy`), `tools/list` with `tools`, `tools/call` with a text block, notifications with 202
    and a session's DELETE with 200. `seen` lists the method of every request it received, in
    order (`DELETE` for a session's end), including requests it answered by failing.
    """

    def __init__(
        self,
        name: str = "x",
        *,
        modern: bool = True,
        legacy: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> None:
        self.name = name
        self.url = f"http://{name}.upstream.test/mcp"
        self.modern = modern
        self.legacy = legacy
        self.tools = tools if tools is not None else [tool("echo")]
        self.seen: list[str] = []
        self.requests: list[tuple[str, httpx.Request]] = []
        self._answers: dict[str, list[list[Any]]] = {}
        self._sessions = itertools.count(1)

    def on(self, method: str, answer: Answer, times: int | None = None) -> McpStandIn:
        """Answer `method` with `answer`: the next `times` requests, or all of them (None)."""
        self._answers.setdefault(method, []).append([answer, times])
        return self

    def count(self, method: str) -> int:
        return self.seen.count(method)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            self.seen.append("DELETE")
            return httpx.Response(200)
        message = json.loads(request.content)
        method = message.get("method", "response")
        self.seen.append(method)
        self.requests.append((method, request))
        for entry in self._answers.get(method, []):
            answer, times = entry
            if times is None or times > 0:
                if times is not None:
                    entry[1] = times - 1
                reply = answer(message, request)
                return await reply if inspect.isawaitable(reply) else reply
        if "id" not in message:
            return httpx.Response(202)
        return self.usual_answer(method, message)

    def usual_answer(self, method: str, message: dict[str, Any]) -> httpx.Response:
        if method == "server/discover" and self.modern:
            return rpc(message, result={"supportedVersions": [MODERN], "capabilities": {"tools": {}}})
        if method == "initialize" and self.legacy:
            result = {"protocolVersion": LEGACY, "capabilities": {"tools": {}}, "serverInfo": {"name": self.name}}
            return rpc(message, result=result, headers={c.SESSION_ID_HEADER: f"{self.name}-{next(self._sessions)}"})
        if method == "tools/list":
            return rpc(message, result={"tools": self.tools})
        if method == "tools/call":
            name = message["params"]["name"]
            return rpc(message, result={"content": [{"type": "text", "text": f"{name} ran"}], "isError": False})
        return rpc(message, error={"code": c.METHOD_NOT_FOUND, "message": "Method not found"})


def tool(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "inputSchema": {"type": "object"}, **extra}


def rpc(
    message: dict[str, Any],
    *,
    result: Any = None,
    error: Any = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A JSON-RPC response to `message`, as application/json."""
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
    body.update({"error": error} if error is not None else {"result": result})
    return httpx.Response(status, json=body, headers=headers)


# --- answers ----------------------------------------------------------------------------------------
def result(value: Any) -> Answer:
    return lambda message, request: rpc(message, result=value)


def error(value: Any, status: int = 200) -> Answer:
    return lambda message, request: rpc(message, error=value, status=status)


def body(make: Callable[[dict[str, Any]], Any], status: int = 200) -> Answer:
    """A JSON body built from the request (`make(message)`), whatever it holds."""
    return lambda message, request: httpx.Response(status, json=make(message))


def text(make: Callable[[str], str], status: int = 200, content_type: str = c.CONTENT_TYPE_JSON) -> Answer:
    """A body written by hand (`make(<the request id as JSON>)`): NaN, broken JSON, HTML..."""
    return lambda message, request: httpx.Response(
        status, text=make(json.dumps(message["id"])), headers={"content-type": content_type}
    )


def status(code: int) -> Answer:
    return lambda message, request: httpx.Response(code, text="", headers={"content-type": "text/plain"})


def refused() -> Answer:
    """Nobody listens: the request never reached the upstream."""

    def answer(message: dict[str, Any], request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    return answer


def dropped() -> Answer:
    """The connection closes after the request was sent, before any answer."""

    def answer(message: dict[str, Any], request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("server disconnected without sending a response", request=request)

    return answer


def hang() -> Answer:
    async def answer(message: dict[str, Any], request: httpx.Request) -> httpx.Response:
        await anyio.sleep(60)
        raise AssertionError("a hung upstream was waited on for a minute")

    return answer


class Chunks(httpx.AsyncByteStream):
    """A response body produced chunk by chunk, with a pause before each; then, optionally, a
    failure (a cut connection). `produced` counts the bytes handed to the client."""

    def __init__(self, chunks: Iterable[bytes], *, pause: float = 0.0, then: Exception | None = None) -> None:
        self.chunks = chunks
        self.pause = pause
        self.then = then
        self.produced = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            if self.pause:
                await anyio.sleep(self.pause)
            self.produced += len(chunk)
            yield chunk
        if self.then is not None:
            raise self.then

    async def aclose(self) -> None:
        self.closed = True


def streamed(
    make: Callable[[dict[str, Any]], Chunks], content_type: str = c.CONTENT_TYPE_SSE, status: int = 200
) -> Answer:
    """A response whose body is the stream `make(message)` builds."""
    return lambda message, request: httpx.Response(status, headers={"content-type": content_type}, stream=make(message))


def event(message: Any) -> bytes:
    return b"event: message\ndata: " + json.dumps(message).encode() + b"\n\n"


def progress(n: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": n}}


def call_result(message: dict[str, Any], words: str = "done") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": message["id"], "result": {"content": [{"type": "text", "text": words}]}}


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def raw_call_result(request_id: str, meta: str) -> str:
    """A tools/call response written by hand, its `_meta` as given (`NaN`, deep nesting...)."""
    return '{"jsonrpc":"2.0","id":' + request_id + ',"result":{"content":[],"_meta":' + meta + "}}"


# --- the gateway in front of stand-ins ----------------------------------------------------------
def use_stand_ins(monkeypatch: pytest.MonkeyPatch, *stand_ins: McpStandIn) -> None:
    """Route the gateway's upstream HTTP client to the stand-ins, by host."""
    by_host = {httpx.URL(s.url).host: s for s in stand_ins}

    async def route(request: httpx.Request) -> httpx.Response:
        return await by_host[request.url.host](request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(route))
    monkeypatch.setattr(upstream_module, "http_client", lambda: HttpxHttp(client))


def gateway_config(*stand_ins: McpStandIn, **settings: Any) -> Any:
    """A gateway.yaml with one upstream per stand-in, each with `settings`; masking off, so what
    the upstream says is what the caller sees."""
    return parse_config(
        {
            "resource": RESOURCE,
            "auth": {"allow_anonymous": True},
            "masking": {"enabled": False},
            "upstreams": [{"name": s.name, "url": s.url, **settings} for s in stand_ins],
        }
    )


def modern_request(
    method: str, params: dict[str, Any] | None = None, *, accept: str = ACCEPT_BOTH
) -> tuple[dict[str, Any], dict[str, str]]:
    """The body and headers of a 2026-07-28 request (id 1) to the gateway."""
    meta = {c.META_PROTOCOL_VERSION: MODERN, c.META_CLIENT_CAPABILITIES: {}}
    payload = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {**(params or {}), "_meta": meta}}
    headers = {"content-type": "application/json", "accept": accept, "mcp-protocol-version": MODERN}
    headers["mcp-method"] = method
    if method == "tools/call":
        headers["mcp-name"] = (params or {})["name"]
    return payload, headers


class Gateway:
    """The whole gateway in-process, its upstreams the stand-ins; `settings` apply to every upstream."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *stand_ins: McpStandIn, **settings: Any) -> None:
        use_stand_ins(monkeypatch, *stand_ins)
        self.stores = Stores.memory()
        self.app = create_app(gateway_config(*stand_ins, **settings), stores=self.stores, streaming=False)
        self.client = TestClient(self.app, raise_server_exceptions=False)
        self._session_ids = itertools.count(1)

    # a 2026-07-28 caller (stateless)
    def modern(self, method: str, params: dict[str, Any] | None = None, *, accept: str = ACCEPT_BOTH) -> Any:
        payload, headers = modern_request(method, params, accept=accept)
        return self.client.post("/mcp", json=payload, headers=headers)

    def call(self, name: str = "x__echo", arguments: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return self.modern("tools/call", {"name": name, "arguments": arguments or {}}, **kwargs)

    def tools(self) -> Any:
        return self.modern("tools/list")

    # a 2025-era caller, in a session
    def open_session(self) -> str:
        """A client session as the gateway's own initialize would store it (without its probe)."""
        session_id = f"s-{next(self._session_ids)}"
        self.stores.sessions.create(Session(session_id, "default", "anonymous", LEGACY, {}, {}, int(time.time()) + 600))
        return session_id

    def in_session(
        self, session_id: str, method: str, params: dict[str, Any] | None = None, *, accept: str = ACCEPT_BOTH
    ) -> Any:
        payload = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        headers = {"content-type": "application/json", "accept": accept, c.SESSION_ID_HEADER: session_id}
        return self.client.post("/mcp", json=payload, headers=headers)


def timed(request: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    response = request()
    return response, time.monotonic() - started


def texts(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [block["text"] for block in response.json()["result"]["content"]]


def tool_names(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [t["name"] for t in response.json()["result"]["tools"]]


# --- the wire client alone ------------------------------------------------------------------------
def exchange(
    monkeypatch: pytest.MonkeyPatch,
    stand_in: McpStandIn,
    method: str = "tools/call",
    *,
    seconds: float = 5.0,
    **settings: Any,
) -> list[dict[str, Any]]:
    """Every message `UpstreamClient.exchange` yields for one 2026-07-28 request, or its error."""
    use_stand_ins(monkeypatch, stand_in)
    client = UpstreamClient(UpstreamConfig(name=stand_in.name, url=stand_in.url, **settings))
    params = {"name": "echo", "arguments": {}} if method == "tools/call" else {}
    message = {"jsonrpc": "2.0", "id": next_request_id(), "method": method, "params": params}

    async def run() -> list[dict[str, Any]]:
        deadline = Deadline(time.monotonic() + seconds)
        return [m async for m in client.exchange(message, deadline=deadline, protocol_version=MODERN, modern=True)]

    return asyncio.run(run())


# --- every message is checked -----------------------------------------------------------------------
INVALID_ANSWERS: dict[str, Answer] = {
    "error-is-a-string": body(lambda m: {"jsonrpc": "2.0", "id": m["id"], "error": "it broke"}),
    "error-code-is-a-string": error({"code": "-32000", "message": "it broke"}),
    "error-code-is-a-float": error({"code": -32000.5, "message": "it broke"}),
    "error-code-is-a-bool": error({"code": True, "message": "it broke"}),
    "error-without-message": error({"code": -32000}),
    "error-message-not-a-string": error({"code": -32000, "message": ["it", "broke"]}),
    "result-is-a-list": result([]),
    "result-is-a-string": result("done"),
    "result-is-null": body(lambda m: {"jsonrpc": "2.0", "id": m["id"], "result": None}),
    "content-not-a-list": result({"content": "done"}),
    "unknown-content-block-type": result({"content": [{"type": "hologram", "data": "x"}]}),
    "text-block-without-text": result({"content": [{"type": "text"}]}),
    "isError-not-a-bool": result({"content": [], "isError": "no"}),
    "NaN": text(lambda i: raw_call_result(i, '{"n":NaN}')),
    "Infinity": text(lambda i: raw_call_result(i, '{"n":Infinity}')),
    "-Infinity": text(lambda i: raw_call_result(i, '{"n":-Infinity}')),
    "NaN-in-an-event": text(
        lambda i: "event: message\ndata: " + raw_call_result(i, '{"n":NaN}') + "\n\n", content_type=c.CONTENT_TYPE_SSE
    ),
    "another-requests-id": body(lambda m: {"jsonrpc": "2.0", "id": "tw-0", "result": {"content": []}}),
    "no-id": body(lambda m: {"jsonrpc": "2.0", "result": {"content": []}}),
    "result-and-error": body(
        lambda m: {"jsonrpc": "2.0", "id": m["id"], "result": {"content": []}, "error": {"code": 1, "message": "x"}}
    ),
    "neither-result-nor-error": body(lambda m: {"jsonrpc": "2.0", "id": m["id"]}),
    "not-json-rpc-2": body(lambda m: {"jsonrpc": "1.0", "id": m["id"], "result": {"content": []}}),
    "a-json-array": body(lambda m: [{"jsonrpc": "2.0", "id": m["id"], "result": {"content": []}}]),
    "nested-deeper-than-100": text(lambda i: raw_call_result(i, '{"deep":' + nested(120) + "}")),
    "nested-deeper-than-the-parser-reaches": text(lambda i: raw_call_result(i, '{"deep":' + nested(100_000) + "}")),
    "malformed-notification-first": streamed(
        lambda m: Chunks(
            [
                event({"jsonrpc": "2.0", "method": "notifications/progress", "params": "50%"}),
                event(call_result(m)),
            ]
        )
    ),
    "stream-ends-without-the-response": streamed(lambda m: Chunks([event(progress())])),
    "empty-stream": streamed(lambda m: Chunks([])),
    "event-data-not-json": streamed(lambda m: Chunks([b"event: message\ndata: {not json\n\n"])),
    "body-not-json": text(lambda i: raw_call_result(i, "{}")[:-2]),  # unbalanced
    "empty-body": text(lambda i: ""),
    "html-page": text(lambda i: "<html><body>Welcome to nginx!</body></html>", content_type="text/html"),
    "json-rpc-as-text-plain": text(lambda i: raw_call_result(i, "{}"), content_type="text/plain"),
    "a-4xx-without-a-json-rpc-error": text(lambda i: '{"detail":"no"}', status=400),
    "a-4xx-error-for-another-id": text(
        lambda i: '{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Bad Request"}}', status=400
    ),
    "a-404-page": text(lambda i: "<h1>Not Found</h1>", status=404, content_type="text/html"),
}


@pytest.mark.parametrize("answer", INVALID_ANSWERS.values(), ids=INVALID_ANSWERS.keys())
def test_an_answer_that_is_not_mcp_is_an_invalid_response(monkeypatch: pytest.MonkeyPatch, answer: Answer) -> None:
    stand_in = McpStandIn().on("tools/call", answer)

    with pytest.raises(UpstreamInvalidResponse) as raised:
        exchange(monkeypatch, stand_in)

    assert raised.value.message == INVALID
    assert raised.value.data == {"upstream": "x"}


@pytest.mark.parametrize("answer", INVALID_ANSWERS.values(), ids=INVALID_ANSWERS.keys())
def test_a_caller_gets_a_stable_502_for_an_answer_that_is_not_mcp(
    monkeypatch: pytest.MonkeyPatch, answer: Answer
) -> None:
    stand_in = McpStandIn().on("tools/call", answer)
    gateway = Gateway(monkeypatch, stand_in, retries=0)

    response = gateway.call(accept=c.CONTENT_TYPE_JSON)

    error = assert_http_error(response, 502, c.INTERNAL_ERROR, message=INVALID, request_id=1)
    assert error["data"] == {"upstream": "x"}
    assert stand_in.count("tools/call") == 1


def test_nesting_within_100_levels_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = McpStandIn().on(
        "tools/call",
        text(lambda i: raw_call_result(i, '{"deep":' + nested(90) + "}")),
    )

    (reply,) = exchange(monkeypatch, stand_in)

    assert reply["result"]["content"] == []


def test_notifications_and_server_requests_on_a_stream_are_checked_and_passed_on_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ask = {"jsonrpc": "2.0", "id": 7, "method": "elicitation/create", "params": {"message": "Sure?"}}
    stand_in = McpStandIn().on(
        "tools/call",
        streamed(lambda m: Chunks([b": priming\n\n", event(progress(1)), event(ask), event(call_result(m))])),
    )

    messages = exchange(monkeypatch, stand_in)

    assert [m.get("method", "response") for m in messages] == [
        "notifications/progress",
        "elicitation/create",
        "response",
    ]
    assert messages[-1]["result"]["content"] == [{"type": "text", "text": "done"}]


def resumable_upstream(resumes: list[dict[str, str]], *, resumable: bool = True) -> Callable[..., Any]:
    """A 2025-era upstream that closes a call's event stream after a progress event (event ids
    ev-1, ev-2, `retry: 10`), and answers a GET with `Last-Event-ID` with the rest: the response
    (SEP-1699 polling). Each GET's headers go to `resumes`. Not `resumable`: GET answers 405."""
    sent: dict[str, Any] = {}

    async def route(request: httpx.Request) -> httpx.Response:
        sse = {"content-type": "text/event-stream"}
        if request.method == "POST":
            sent.update(json.loads(request.content))
            priming = b"id: ev-1\nretry: 10\ndata: \n\n"
            return httpx.Response(200, headers=sse, content=priming + b"id: ev-2\n" + event(progress()))
        resumes.append(dict(request.headers))
        if not resumable:
            return httpx.Response(405)
        return httpx.Response(200, headers=sse, content=b"id: ev-3\n" + event(call_result(sent, "resumed")))

    return route


def legacy_exchange(monkeypatch: pytest.MonkeyPatch, route: Callable[..., Any]) -> list[dict[str, Any]]:
    """Every message `UpstreamClient.exchange` yields for one tools/call in 2025-era session `s-1`."""
    client = httpx.AsyncClient(transport=httpx.MockTransport(route))
    monkeypatch.setattr(upstream_module, "http_client", lambda: HttpxHttp(client))
    upstream = UpstreamClient(UpstreamConfig(name="x", url="http://x.upstream.test/mcp"))
    message = {"jsonrpc": "2.0", "id": "tw-1", "method": "tools/call", "params": {"name": "echo", "arguments": {}}}

    async def run() -> list[dict[str, Any]]:
        deadline = Deadline(time.monotonic() + 5)
        return [m async for m in upstream.exchange(message, deadline=deadline, session="s-1", protocol_version=LEGACY)]

    return asyncio.run(run())


def test_a_stream_the_upstream_closes_before_answering_is_resumed_from_its_last_event_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resumes: list[dict[str, str]] = []

    messages = legacy_exchange(monkeypatch, resumable_upstream(resumes))

    # Where the upstream paused its stream, the marker says so (a resumable caller's pauses too).
    assert [m.get("method", "response") for m in messages] == ["notifications/progress", STREAM_PAUSED, "response"]
    assert messages[-1]["result"]["content"] == [{"type": "text", "text": "resumed"}]
    assert len(resumes) == 1
    assert resumes[0]["last-event-id"] == "ev-2"
    assert resumes[0][c.SESSION_ID_HEADER] == "s-1"
    assert resumes[0][c.PROTOCOL_VERSION_HEADER] == LEGACY


def test_a_closed_stream_the_upstream_cannot_resume_is_an_invalid_response(monkeypatch: pytest.MonkeyPatch) -> None:
    resumes: list[dict[str, str]] = []

    with pytest.raises(UpstreamInvalidResponse):
        legacy_exchange(monkeypatch, resumable_upstream(resumes, resumable=False))
    assert len(resumes) == 1


def test_a_server_request_with_an_invalid_id_is_an_invalid_response(monkeypatch: pytest.MonkeyPatch) -> None:
    ask = {"jsonrpc": "2.0", "id": True, "method": "elicitation/create", "params": {}}
    stand_in = McpStandIn().on("tools/call", streamed(lambda m: Chunks([event(ask), event(call_result(m))])))

    with pytest.raises(UpstreamInvalidResponse):
        exchange(monkeypatch, stand_in)


def test_nothing_after_our_response_on_a_stream_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    streams: list[Chunks] = []

    def make(message: dict[str, Any]) -> Chunks:
        streams.append(Chunks(itertools.chain([event(call_result(message))], itertools.repeat(event(progress())))))
        return streams[-1]

    messages = exchange(monkeypatch, McpStandIn().on("tools/call", streamed(make)))

    assert [m.get("method", "response") for m in messages] == ["response"]
    assert streams[0].closed
    assert streams[0].produced < 1024


def test_a_stream_that_ends_right_after_our_response_is_read_to_its_end_so_its_connection_is_kept() -> None:
    """httpx returns a connection to its pool only when the body was read to its end: a stream
    closed unread after the response would cost every 2025-era call a new TCP connection."""
    streams: list[Chunks] = []

    class Ending(Chunks):
        exhausted = False

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in super().__aiter__():
                yield chunk
            self.exhausted = True

    def make(message: dict[str, Any]) -> Chunks:
        streams.append(Ending([event(call_result(message)), b": the end\n\n"]))
        return streams[-1]

    with pytest.MonkeyPatch.context() as monkeypatch:
        messages = exchange(monkeypatch, McpStandIn().on("tools/call", streamed(make)))

    assert [m.get("method", "response") for m in messages] == ["response"]
    assert streams[0].exhausted and streams[0].closed


def test_garbage_after_our_response_on_a_stream_is_not_ours_and_changes_nothing() -> None:
    def make(message: dict[str, Any]) -> Chunks:
        return Chunks([event(call_result(message)), b"data: 00\n\n"])

    with pytest.MonkeyPatch.context() as monkeypatch:
        messages = exchange(monkeypatch, McpStandIn().on("tools/call", streamed(make)))

    assert [m.get("method", "response") for m in messages] == ["response"]
    assert "result" in messages[0]


# --- an upstream's own errors ---------------------------------------------------------------------
def test_an_upstream_error_keeps_its_own_code_message_and_small_data(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {"field": "region", "allowed": ["EMEA", "APAC"]}
    stand_in = McpStandIn().on("tools/call", error({"code": -32042, "message": "Region not served", "data": data}))
    gateway = Gateway(monkeypatch, stand_in)

    response = gateway.call()

    error_ = assert_http_error(response, 200, -32042, message="Region not served", request_id=1)
    assert error_["data"] == data


def test_an_upstream_error_message_is_cut_to_500_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    trace = "Traceback (most recent call last): " + "x" * 5000
    stand_in = McpStandIn().on("tools/call", error({"code": -32000, "message": trace}))

    (reply,) = exchange(monkeypatch, stand_in)

    message = reply["error"]["message"]
    assert ERROR_MESSAGE_CHARS == 500
    assert len(message) == 500
    assert message[:499] == trace[:499]
    assert reply["error"]["code"] == -32000


def test_an_upstream_error_message_of_exactly_500_characters_is_kept_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = McpStandIn().on("tools/call", error({"code": -32000, "message": "y" * 500}))

    (reply,) = exchange(monkeypatch, stand_in)

    assert reply["error"]["message"] == "y" * 500


@pytest.mark.parametrize(("size", "kept"), [(ERROR_DATA_BYTES, True), (ERROR_DATA_BYTES + 1, False)])
def test_an_upstream_error_data_is_dropped_when_its_json_exceeds_2048_bytes(
    monkeypatch: pytest.MonkeyPatch, size: int, kept: bool
) -> None:
    data = "d" * (size - 2)  # the JSON string adds its two quotes
    assert len(json.dumps(data)) == size
    stand_in = McpStandIn().on("tools/call", error({"code": -32000, "message": "failed", "data": data}))

    (reply,) = exchange(monkeypatch, stand_in)

    assert ("data" in reply["error"]) is kept
    assert reply["error"]["code"] == -32000 and reply["error"]["message"] == "failed"


def test_a_large_error_data_is_dropped_on_the_way_to_the_caller_but_the_error_is_relayed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_in = McpStandIn().on(
        "tools/call", error({"code": -32000, "message": "failed", "data": {"dump": "z" * 100_000}})
    )
    gateway = Gateway(monkeypatch, stand_in)

    response = gateway.call()

    error_ = assert_http_error(response, 200, -32000, message="failed", request_id=1)
    assert "data" not in error_


def test_a_4xx_carrying_a_json_rpc_error_for_our_request_is_relayed_as_that_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_in = McpStandIn().on(
        "tools/call", error({"code": c.INVALID_PARAMS, "message": "Invalid arguments: region is required"}, status=400)
    )
    gateway = Gateway(monkeypatch, stand_in)

    response = gateway.call()

    assert_http_error(response, 400, c.INVALID_PARAMS, message="Invalid arguments: region is required", request_id=1)


@pytest.mark.parametrize("code", [500, 502, 503, 504])
@pytest.mark.parametrize("content", ["empty", "html", "json-without-error"])
def test_a_5xx_without_a_json_rpc_error_is_a_retryable_unavailable_upstream(
    monkeypatch: pytest.MonkeyPatch, code: int, content: str
) -> None:
    answer = {
        "empty": status(code),
        "html": text(lambda i: "<h1>Bad Gateway</h1>", status=code, content_type="text/html"),
        "json-without-error": text(lambda i: '{"message":"Internal Server Error"}', status=code),
    }[content]

    with pytest.raises(UpstreamUnavailable) as raised:
        exchange(monkeypatch, McpStandIn().on("tools/call", answer))

    assert raised.value.message == UNAVAILABLE
    assert raised.value.data == {"upstream": "x", "retryable": True}


def test_a_caller_gets_a_retryable_502_for_an_upstream_5xx(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = McpStandIn().on("tools/call", status(503))
    gateway = Gateway(monkeypatch, stand_in)

    response = gateway.call()

    error_ = assert_http_error(response, 502, c.INTERNAL_ERROR, message=UNAVAILABLE, request_id=1)
    assert error_["data"] == {"upstream": "x", "retryable": True}


@pytest.mark.parametrize("code", [401, 403])
def test_an_upstream_that_refuses_the_gateways_credentials_says_so(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    with pytest.raises(UpstreamAuthError):
        exchange(monkeypatch, McpStandIn().on("tools/call", status(code)))
    gateway = Gateway(monkeypatch, McpStandIn().on("tools/call", status(code)))

    response = gateway.call()

    error_ = assert_http_error(response, 502, c.INTERNAL_ERROR, message=REFUSED, request_id=1)
    assert error_["data"] == {"upstream": "x"}


@pytest.mark.parametrize(
    "answer",
    [
        refused(),
        dropped(),
        streamed(lambda m: Chunks([event(progress())], then=httpx.ReadError("connection reset"))),
    ],
    ids=["connection-refused", "dropped-before-the-answer", "stream-cut-before-the-response"],
)
def test_a_connection_that_fails_is_an_unavailable_upstream(monkeypatch: pytest.MonkeyPatch, answer: Answer) -> None:
    with pytest.raises(UpstreamUnavailable) as raised:
        exchange(monkeypatch, McpStandIn().on("tools/call", answer))

    assert raised.value.message == UNAVAILABLE
    assert raised.value.data == {"upstream": "x", "retryable": True}


def test_a_refused_connection_is_known_never_to_have_reached_the_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UpstreamUnavailable) as refused_:
        exchange(monkeypatch, McpStandIn().on("tools/call", refused()))
    with pytest.raises(UpstreamUnavailable) as dropped_:
        exchange(monkeypatch, McpStandIn().on("tools/call", dropped()))

    assert refused_.value.sent is False
    assert dropped_.value.sent is True


# --- max_response_bytes --------------------------------------------------------------------------
LIMIT = 1024 * 1024
CHUNK = 64 * 1024
TWENTY_MB = 20 * 1024 * 1024


def _twenty_mb(streams: list[Chunks], opening: bytes = b"") -> Callable[[dict[str, Any]], Chunks]:
    def make(message: dict[str, Any]) -> Chunks:
        parts = itertools.chain([opening] if opening else [], itertools.repeat(b"a" * CHUNK, TWENTY_MB // CHUNK))
        streams.append(Chunks(parts))
        return streams[-1]

    return make


@pytest.mark.parametrize("content_type", [c.CONTENT_TYPE_JSON, c.CONTENT_TYPE_SSE, "text/html"])
def test_a_20_mb_body_is_refused_after_reading_no_more_than_the_limit(
    monkeypatch: pytest.MonkeyPatch, content_type: str
) -> None:
    streams: list[Chunks] = []
    opening = b'event: message\ndata: {"jsonrpc":"2.0","result":"' if content_type == c.CONTENT_TYPE_SSE else b""
    stand_in = McpStandIn().on("tools/call", streamed(_twenty_mb(streams, opening), content_type=content_type))

    with pytest.raises(UpstreamTooLarge) as raised:
        exchange(monkeypatch, stand_in, max_response_bytes=LIMIT)

    assert raised.value.message == TOO_LARGE
    assert raised.value.data == {"upstream": "x", "maxBytes": LIMIT}
    assert LIMIT < streams[0].produced <= LIMIT + 2 * CHUNK
    assert streams[0].closed


def test_an_event_stream_of_small_valid_events_is_refused_past_the_limit_as_a_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    streams: list[Chunks] = []

    def make(message: dict[str, Any]) -> Chunks:
        streams.append(Chunks(itertools.repeat(event(progress()), TWENTY_MB // 100)))
        return streams[-1]

    with pytest.raises(UpstreamTooLarge):
        exchange(monkeypatch, McpStandIn().on("tools/call", streamed(make)), max_response_bytes=LIMIT)

    assert LIMIT < streams[0].produced <= LIMIT + 1024


def test_a_caller_gets_a_502_naming_the_limit_for_a_response_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    streams: list[Chunks] = []
    stand_in = McpStandIn().on("tools/call", streamed(_twenty_mb(streams), content_type=c.CONTENT_TYPE_JSON))
    gateway = Gateway(monkeypatch, stand_in, max_response_bytes=LIMIT)

    response = gateway.call()

    error_ = assert_http_error(response, 502, c.INTERNAL_ERROR, message=TOO_LARGE, request_id=1)
    assert error_["data"] == {"upstream": "x", "maxBytes": LIMIT}
    assert streams[0].produced <= LIMIT + 2 * CHUNK
    assert stand_in.count("tools/call") == 1  # not retried: the same answer would come back


def test_an_answer_just_within_the_limit_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    words = "w" * 4000
    stand_in = McpStandIn().on("tools/call", body(lambda m: call_result(m, words)))
    size = len(json.dumps(call_result({"id": "tw-1"}, words)).encode())

    (reply,) = exchange(monkeypatch, stand_in, max_response_bytes=size + 200)

    assert reply["result"]["content"][0]["text"] == words


# --- deadlines --------------------------------------------------------------------------------------
T = 0.5
"""`timeout_seconds` of the upstream in the timing tests."""


def _drip(streams: list[Chunks] | None = None, pause: float = 0.05) -> Answer:
    """An event stream that only ever sends keepalive comments."""

    def make(message: dict[str, Any]) -> Chunks:
        stream = Chunks(itertools.repeat(b": keepalive\n\n"), pause=pause)
        if streams is not None:
            streams.append(stream)
        return stream

    return streamed(make)


@pytest.mark.parametrize(
    "answer",
    [
        hang(),
        _drip(),
        streamed(lambda m: Chunks(itertools.repeat(b""), pause=0.05), content_type=c.CONTENT_TYPE_JSON),
        streamed(lambda m: Chunks([event(progress())] + [b": keepalive\n\n"] * 10_000, pause=0.05)),
    ],
    ids=["hang", "drip-comments", "json-body-that-never-ends", "progress-then-drip"],
)
def test_the_wire_client_gives_up_at_the_deadline(monkeypatch: pytest.MonkeyPatch, answer: Answer) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as raised:
        exchange(monkeypatch, McpStandIn().on("tools/call", answer), seconds=T)
    elapsed = time.monotonic() - started

    assert raised.value.message == TIMED_OUT
    assert T * 0.9 <= elapsed < T * SLACK


@pytest.mark.parametrize("answer", [hang(), _drip()], ids=["hang", "drip-comments"])
def test_a_caller_gets_a_504_at_the_upstreams_timeout(monkeypatch: pytest.MonkeyPatch, answer: Answer) -> None:
    stand_in = McpStandIn().on("tools/call", answer)
    gateway = Gateway(monkeypatch, stand_in, timeout_seconds=T)
    assert tool_names(gateway.tools()) == ["x__echo"]  # era and catalog known: only the call is timed

    response, elapsed = timed(gateway.call)

    error_ = assert_http_error(response, 504, c.REQUEST_TIMEOUT, message=TIMED_OUT, request_id=1)
    assert error_["data"] == {"upstream": "x", "retryable": True}
    assert T * 0.9 <= elapsed < T * SLACK


def test_a_drip_is_cut_off_although_it_keeps_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    streams: list[Chunks] = []
    stand_in = McpStandIn().on("tools/call", _drip(streams, pause=0.02))

    with pytest.raises(UpstreamTimeout):
        exchange(monkeypatch, stand_in, seconds=T)

    assert streams[0].produced > 10 * len(b": keepalive\n\n")  # it was sending all along
    assert streams[0].closed


@pytest.mark.parametrize("era", ["2026-07-28", "2025-session"])
def test_a_fresh_gateways_first_request_to_a_hung_upstream_costs_one_timeout(
    monkeypatch: pytest.MonkeyPatch, era: str
) -> None:
    stand_in = McpStandIn()
    for method in ("server/discover", "initialize", "tools/list", "tools/call"):
        stand_in.on(method, hang())
    gateway = Gateway(monkeypatch, stand_in, timeout_seconds=T)
    session = gateway.open_session() if era == "2025-session" else None

    response, elapsed = timed(lambda: _first_call(gateway, session))

    assert_http_error(response, 504, c.REQUEST_TIMEOUT, message=TIMED_OUT, request_id=1)
    assert elapsed < T * SLACK
    assert stand_in.seen == ["server/discover"]


def _first_call(gateway: Gateway, session: str | None) -> Any:
    if session is None:
        return gateway.call()
    return gateway.in_session(session, "tools/call", {"name": "x__echo", "arguments": {}})


def _slow_steps(stand_in: McpStandIn, delay: float) -> McpStandIn:
    """Every request is answered as usual, `delay` seconds late (notifications at once)."""
    default = stand_in.usual_answer

    def late(method: str) -> Answer:
        async def answer(message: dict[str, Any], request: httpx.Request) -> httpx.Response:
            await anyio.sleep(delay)
            return default(method, message)

        return answer

    for method in ("server/discover", "initialize", "tools/list", "tools/call"):
        stand_in.on(method, late(method))
    return stand_in


@pytest.mark.parametrize("era", ["2026-07-28", "2025-session"])
def test_a_fresh_gateways_first_call_shares_one_budget_between_probe_session_catalog_and_call(
    monkeypatch: pytest.MonkeyPatch, era: str
) -> None:
    """Each step alone is well within the budget (0.45 T); all of them together are not. The
    README: "A request to an upstream may take `timeout_seconds`, everything included: the era
    probe, opening a 2025-era session, retries and the call"."""
    stand_in = _slow_steps(McpStandIn(legacy=era == "2025-session"), delay=0.45 * T)
    gateway = Gateway(monkeypatch, stand_in, timeout_seconds=T)
    session = gateway.open_session() if era == "2025-session" else None

    response, elapsed = timed(lambda: _first_call(gateway, session))

    assert elapsed < T * SLACK, f"{elapsed:.2f}s for a budget of {T}s: {stand_in.seen}"
    assert_http_error(response, 504, c.REQUEST_TIMEOUT, message=TIMED_OUT, request_id=1)


def test_a_2025_clients_initialize_costs_at_most_one_timeout_and_still_opens_its_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_in = McpStandIn().on("server/discover", hang())
    gateway = Gateway(monkeypatch, stand_in, timeout_seconds=T)
    payload = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }

    response, elapsed = timed(lambda: gateway.client.post("/mcp", json=payload, headers={"accept": ACCEPT_BOTH}))

    assert response.status_code == 200, response.text
    assert response.headers[c.SESSION_ID_HEADER]
    assert elapsed < T * SLACK


class _LambdaContext:
    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def _on_lambda(app: Any, remaining_ms: int) -> Any:
    """The app as Mangum runs it: the invocation's context on the ASGI scope."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "aws.context": _LambdaContext(remaining_ms)}
        await app(scope, receive, send)

    return wrapped


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh-gateway", "era-known"])
def test_a_lambda_invocations_remaining_time_bounds_the_request(monkeypatch: pytest.MonkeyPatch, fresh: bool) -> None:
    stand_in = McpStandIn()
    gateway = Gateway(monkeypatch, stand_in, timeout_seconds=25)
    if not fresh:
        assert tool_names(gateway.tools()) == ["x__echo"]
    for method in ("server/discover", "tools/list", "tools/call"):
        stand_in.on(method, hang())
    lambda_client = TestClient(_on_lambda(gateway.app, remaining_ms=1500), raise_server_exceptions=False)
    payload, headers = modern_request("tools/call", {"name": "x__echo", "arguments": {}})

    response, elapsed = timed(lambda: lambda_client.post("/mcp", json=payload, headers=headers))

    assert_http_error(response, 504, c.REQUEST_TIMEOUT, message=TIMED_OUT, request_id=1)
    assert 0.4 <= elapsed < 1.0  # 1.5 s left, less the 1 s margin
