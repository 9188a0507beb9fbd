"""Whatever is thrown at the gateway, in either MCP era, every answer is one well-formed JSON-RPC message.

Hypothesis throws malformed input at the gateway from both sides: from the client (bodies that are
not JSON or not UTF-8, NaN and Infinity, lone UTF-16 surrogates, nesting 500 to 5,000 deep, JSON
that is not one JSON-RPC request, params of the wrong shape, unknown methods and tools, cursors the
gateway never issued, random routing and content headers) and from a scripted upstream (bytes that
are not JSON, NaN, wrong ids, results and errors of every shape, event streams with garbage lines,
HTTP failure statuses). The properties it checks, for every answer:

1. never a 500, nor any 5xx but 502, 503 or 504, and those only for a fault of the scripted upstream;
2. JSON (`application/json`), or an event stream whose events are JSON, ending in exactly one
   well-formed JSON-RPC response: `{"jsonrpc", "id", "result": {...}}` or `{"jsonrpc", "id" (or null),
   "error": {"code": int, "message": non-empty str[, "data"]}}`, no other keys, no Python exception
   text or library names; 202 with an empty body only for notifications and client responses;
3. malformed client input against a healthy upstream is a 400 with -32700 (not JSON), -32600 (not
   one JSON-RPC request) or -32602 (bad params of a known method), never -32603; an unknown method is
   -32601 (200 in the 2025 era, 404 in 2026-07-28), an unknown tool -32602 "Unknown tool: <name>"
   (200 in the 2025 era, 400 in 2026-07-28); a wrong routing or content header earns its own
   refusal (400, 404 for a session, 406, 415);
4. an upstream answer that is not a JSON-RPC response to the call is a 502, -32603 "Upstream 'script'
   returned an invalid response" (an HTTP failure status: a 502, -32603 naming the upstream); a
   well-formed upstream error is relayed with its own code and a message of at most 500 characters;
   a valid MCP CallToolResult (as the schema has it) is relayed as the result;
5. after each test's examples the gateway still lists its tools and calls `rec__echo`.

The gateway runs in-process (Starlette's TestClient, in-memory stores, no streaming) in front of two
real HTTP upstreams on 127.0.0.1: `rec`, a healthy RecordingUpstream, and `script`, whose answer to
`tools/call` is whatever the example sets. The last two tests send a smaller set of the same input
through the Lambda handler (Mangum, API Gateway v2 events, DynamoDB in moto).

Not thrown, as no answer is clearly right: null for an optional member (`params._meta`, `arguments`,
`cursor`), which may mean "absent"; a well-formed cursor state naming a real upstream (the gateway
cannot tell it from one it issued); non-ASCII method names in 2026-07-28, where the method travels
in a header; integral floats as ids (`7.0`). A failing example prints the case; `print_blob` gives
the `@reproduce_failure` line to replay it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import Phase, example, given, note, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from tollway.config import GatewayConfig, UpstreamConfig, parse_config
from tollway.http import create_app
from tollway.store import Stores

from tests.fixtures.recording_upstream import Caller, RecordingUpstream, serve_in_thread
from tests.functional.lambda_harness import LambdaGateway, load_event
from tests.unit.wire import _LEAKS

# --- the wire (written out here, not imported: these tests hold the gateway to the protocol) ------
LEGACY = "2025-11-25"
MODERN = "2026-07-28"
ERAS = (LEGACY, MODERN)
ACCEPT_BOTH = "application/json, text/event-stream"
JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream"

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
RESOURCE_NOT_FOUND = -32002
HEADER_MISMATCH = -32020
MISSING_CAPABILITY = -32021
UNSUPPORTED_VERSION = -32022
CLIENT_CODES = frozenset(
    {
        PARSE_ERROR,
        INVALID_REQUEST,
        METHOD_NOT_FOUND,
        INVALID_PARAMS,
        RESOURCE_NOT_FOUND,
        HEADER_MISMATCH,
        MISSING_CAPABILITY,
        UNSUPPORTED_VERSION,
    }
)
"""Every code that says "the client's mistake"; -32603 (internal error) is never one of them."""
MODERN_STATUS = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    MISSING_CAPABILITY: 400,
    UNSUPPORTED_VERSION: 400,
    METHOD_NOT_FOUND: 404,
}
"""2026-07-28: the HTTP status of a JSON-RPC error code (any other code: 200). The 2025 era: 200."""

ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "property-tests", "version": "1"},
}
NAME_BEARING = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
LIST_METHODS = ("tools/list", "prompts/list", "resources/list", "resources/templates/list")
SHARED_METHODS = frozenset({*LIST_METHODS, "tools/call", "prompts/get", "resources/read", "completion/complete"})
KNOWN_METHODS = {
    LEGACY: SHARED_METHODS | {"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"},
    MODERN: SHARED_METHODS | {"server/discover"},
}
EXPOSED_TOOLS = frozenset({"rec__echo", "rec__whoami", "script__act"})
UPSTREAMS = frozenset({"rec", "script"})

INVALID_ANSWER = "Upstream 'script' returned an invalid response"
UPSTREAM_FAULT = "Upstream 'script' "
"""How the message of a 502 for an upstream's HTTP failure starts (the rest depends on the status:
unavailable, refused the gateway's credentials, an invalid response...)."""
ERROR_MESSAGE_LIMIT = 500
LIFETIME = 900.0
CIRCUIT_THRESHOLDS = (1_000_000, 1000)
"""Tried in turn: the config may bound the threshold (1000 today)."""
HEAL_EVERY = 200
"""Malformed upstream answers in a row after which one good call is made, so the circuit breaker
(at most 1000 consecutive failures) never opens during a test."""
NO_ID: Any = type("NoId", (), {"__repr__": lambda self: "NO_ID"})()
"""The request carried no id the gateway could echo."""


def examples(count: int) -> settings:
    """`count` examples, no deadline, no example database; no `explain` phase (it reruns failures)."""
    phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
    return settings(max_examples=count, deadline=None, database=None, print_blob=True, phases=phases)


# --- reading an answer: properties 1 and 2 ------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.headers.get('content-type')!r}, {_short(self.body)})"


class NotJson(ValueError):
    """Not a JSON text as RFC 8259 has it."""


def _no_constant(name: str) -> Any:
    raise NotJson(f"{name} is not JSON")


def strict_json(raw: bytes) -> Any:
    """RFC 8259: UTF-8, no NaN or Infinity, no lone surrogate. A RecursionError passes through."""
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotJson(str(exc)) from None
    if any(_has_lone_surrogate(s) for s in _strings_and_keys(value)):
        raise NotJson("lone surrogate")
    return value


def is_strict_json(raw: bytes) -> bool:
    try:
        strict_json(raw)
    except (NotJson, RecursionError):
        return False
    return True


def _strings_and_keys(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            yield from node.keys()
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _has_lone_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def same_id(answered: Any, sent: Any) -> bool:
    return type(answered) is type(sent) and answered == sent


def sse_payloads(text: str) -> list[str]:
    payloads = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")]
        if data and "\n".join(data).strip():
            payloads.append("\n".join(data))
    return payloads


def read_answer(reply: Reply, *, request_id: Any = NO_ID, upstream: bytes = b"") -> dict[str, Any] | None:
    """Properties 1 and 2 for one answer: its final JSON-RPC response, or None for a 202.

    `request_id`: the id of the request, when it had one the gateway could read; a result must
    carry it, an error it or null. `upstream`: the upstream's own answer, whose strings the
    gateway relays as they are (no leak of the gateway's own if the upstream said them)."""
    relayed = _json_strings(upstream)
    assert reply.status < 500 or reply.status in (502, 503, 504), f"HTTP {reply.status}: {reply!r}"
    if reply.status == 202:
        assert reply.body == b"", f"202 with a body: {reply!r}"
        return None
    try:
        text = reply.body.decode("utf-8")
    except UnicodeDecodeError:
        raise AssertionError(f"the answer is not UTF-8: {reply!r}") from None
    try:
        if reply.content_type == JSON_TYPE:
            messages = [strict_json(reply.body)]
        elif reply.content_type == SSE_TYPE:
            assert reply.status == 200, f"an event stream with HTTP {reply.status}: {reply!r}"
            messages = [strict_json(payload.encode()) for payload in sse_payloads(text)]
            assert messages, f"an event stream without a message: {reply!r}"
        else:
            raise AssertionError(f"content type {reply.headers.get('content-type')!r}: {reply!r}")
    except NotJson as exc:
        raise AssertionError(f"the answer is not JSON ({exc}): {reply!r}") from None
    for message in messages:
        # The id is the caller's own, echoed as JSON-RPC requires (it may be any word at all).
        content = {k: v for k, v in message.items() if k != "id"} if isinstance(message, dict) else message
        said = "\n".join(text for text in _strings(content) if text not in relayed)
        for leak in _LEAKS:
            assert leak not in said, f"{leak!r} leaked into {reply!r}"
    for message in messages[:-1]:
        _assert_server_message(message, reply)
    final = messages[-1]
    _assert_response(final, reply)
    if "result" in final:
        assert request_id is not NO_ID, f"a result for a body that is not one valid request: {reply!r}"
        assert same_id(final["id"], request_id), f"id of {reply!r}, sent {request_id!r}"
    else:
        assert final["id"] is None or (request_id is not NO_ID and same_id(final["id"], request_id)), (
            f"id of {reply!r}, sent {request_id!r}"
        )
    return final


def _json_strings(body: bytes) -> set[str]:
    """Every string in a body that is JSON, or in the JSON payloads of an event stream."""
    text = body.decode("utf-8", "replace")
    found: set[str] = set()
    for payload in (text, *sse_payloads(text)):
        with contextlib.suppress(ValueError, RecursionError):
            found.update(_strings(json.loads(payload)))
    return found


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _assert_response(message: Any, reply: Reply) -> None:
    assert isinstance(message, dict) and message.get("jsonrpc") == "2.0", f"not JSON-RPC: {reply!r}"
    if "result" in message:
        assert set(message) == {"jsonrpc", "id", "result"}, f"keys of {reply!r}"
        assert isinstance(message["result"], dict), f"a result that is not an object: {reply!r}"
        assert _valid_id(message["id"]), f"id of {reply!r}"
        return
    assert set(message) == {"jsonrpc", "id", "error"}, f"keys of {reply!r}"
    assert message["id"] is None or _valid_id(message["id"]), f"id of {reply!r}"
    error = message["error"]
    assert isinstance(error, dict) and set(error) <= {"code", "message", "data"}, f"error of {reply!r}"
    assert isinstance(error.get("code"), int) and not isinstance(error["code"], bool), f"code of {reply!r}"
    assert isinstance(error.get("message"), str) and error["message"], f"message of {reply!r}"


def _assert_server_message(message: Any, reply: Reply) -> None:
    """An event before the response: a notification or a server request, nothing else."""
    assert isinstance(message, dict) and message.get("jsonrpc") == "2.0", f"an event of {reply!r}"
    assert isinstance(message.get("method"), str) and "result" not in message and "error" not in message, reply
    assert isinstance(message.get("params", {}), dict), f"params of an event of {reply!r}"
    assert "id" not in message or _valid_id(message["id"]), f"id of an event of {reply!r}"


# --- what a client case expects: property 3 -------------------------------------------------------
@dataclass(frozen=True)
class Expect:
    codes: frozenset[int] = frozenset()
    statuses: frozenset[int] = frozenset()
    message: str | None = None
    exact_id: bool = False
    """The error carries the request's id (the gateway could read it)."""
    results: bool = False
    accepted: bool = False


def client_error(statuses: int | set[int], *codes: int, message: str | None = None, exact_id: bool = False) -> Expect:
    status_set = {statuses} if isinstance(statuses, int) else statuses
    return Expect(frozenset(codes), frozenset(status_set), message, exact_id)


PARSE = client_error(400, PARSE_ERROR)
NOT_ONE_REQUEST = client_error(400, INVALID_REQUEST)
TOO_DEEP = client_error(400, PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS)
"""Nesting past what the gateway reads: the contract leaves the code to the gateway (today -32600)."""
BAD_PARAMS = client_error(400, INVALID_PARAMS, exact_id=True)
RESULT = Expect(results=True)
ANY_CLIENT_ANSWER = Expect(CLIENT_CODES, frozenset({200, 400, 404, 406, 415}), results=True, accepted=True)
HEADER_FAULTS = frozenset(
    {
        (400, INVALID_REQUEST),
        (400, INVALID_PARAMS),
        (400, HEADER_MISMATCH),
        (400, UNSUPPORTED_VERSION),
        (404, INVALID_REQUEST),
        (406, INVALID_REQUEST),
        (415, INVALID_REQUEST),
    }
)
"""(status, code) of every refusal a routing or content header may earn."""


def era_status(era: str, code: int) -> int:
    return MODERN_STATUS.get(code, 200) if era == MODERN else 200


@dataclass(frozen=True)
class Case:
    """One POST of a client: its era, raw body and what it must be answered."""

    era: str
    body: bytes
    expect: Expect
    request_id: Any = NO_ID
    method: str | None = None
    """Sent as mcp-method (2026-07-28)."""
    name: str | None = None
    """Sent as mcp-name (2026-07-28), encoded as the spec says for values that are not plain ASCII."""
    headers: tuple[tuple[str, str | bytes | None], ...] = ()
    """Replacements of the era's headers; None removes one."""
    note: str = ""

    def __repr__(self) -> str:
        extra = f", headers={dict(self.headers)!r}" if self.headers else ""
        return f"Case({self.era}, {self.note!r}, {_short(self.body)}, id={self.request_id!r}{extra})"


def assert_expected(reply: Reply, case: Case) -> dict[str, Any] | None:
    final = read_answer(reply, request_id=case.request_id)
    expect = case.expect
    assert reply.status < 500, f"HTTP {reply.status} for the client's input {case!r}: {reply!r}"
    if final is None:
        assert expect.accepted, f"202 for {case!r}"
        return None
    if "result" in final:
        assert expect.results, f"a result for {case!r}: {reply!r}"
        assert reply.status == 200, reply
        return final
    error = final["error"]
    assert expect.codes, f"an error for {case!r}: {reply!r}"
    assert error["code"] in expect.codes, f"code {error['code']} for {case!r}: {reply!r}"
    assert reply.status in expect.statuses, f"HTTP {reply.status} for {case!r}: {reply!r}"
    if expect.message is not None:
        assert error["message"] == expect.message, f"message for {case!r}: {reply!r}"
    if expect.exact_id:
        assert same_id(final["id"], case.request_id), f"id for {case!r}: {reply!r}"
    return final


def _short(raw: bytes, limit: int = 300) -> str:
    return repr(raw) if len(raw) <= limit else f"{raw[:limit]!r}... ({len(raw)} bytes)"


# --- the scripted upstream ------------------------------------------------------------------------
def _other_case(rid: Any) -> str:
    text = str(rid)
    return text.swapcase() if text.swapcase() != text else f"{text}X"


def _other_type(rid: Any) -> Any:
    return str(rid) if isinstance(rid, int) else int(re.sub(r"\D", "", str(rid)) or 0)


_ID_TOKENS: dict[bytes, Callable[[Any], Any]] = {
    b"@@ID@@": lambda rid: rid,
    b"@@ID-CASE@@": _other_case,
    b"@@ID-SPACE@@": lambda rid: f"{rid} ",
    b"@@ID-TYPE@@": _other_type,
    b"@@ID-LIST@@": lambda rid: [rid],
    b"@@ID-OBJECT@@": lambda rid: {"id": rid},
}
"""Placeholders in a scripted body for the id of the gateway's request (`@@ID@@`), or for an id
close to it but never equal, whatever the gateway's ids look like."""


@dataclass(frozen=True)
class Scripted:
    """The scripted upstream's next answer to tools/call, and what the gateway must make of it.

    `expect`: "invalid" (502 invalid response), "fault" (502 naming the upstream), "error"
    (relayed with `code`), "result" (relayed: `result`), "either" ("result" or "invalid")."""

    body: bytes
    status: int = 200
    content_type: str | None = JSON_TYPE
    expect: str = "invalid"
    code: int | None = None
    result: Any = None
    note: str = ""

    def render(self, request_id: Any) -> bytes:
        body = self.body
        for token, derive in _ID_TOKENS.items():
            body = body.replace(token, json.dumps(derive(request_id)).encode())
        return body

    def __repr__(self) -> str:
        return (
            f"Scripted({self.note!r}, HTTP {self.status}, {self.content_type!r}, {_short(self.body)}, "
            f"expect={self.expect}{'' if self.code is None else f' {self.code}'})"
        )


GOOD_RESULT = {"content": [{"type": "text", "text": "scripted"}], "isError": False}


def rpc(member: str, value_text: str, id_token: str | None = "@@ID@@") -> bytes:
    """A JSON-RPC response text; `id_token` None leaves the id out."""
    head = '{"jsonrpc":"2.0",' + (f'"id":{id_token},' if id_token is not None else "")
    return f'{head}"{member}":{value_text}}}'.encode()


GOOD = Scripted(rpc("result", json.dumps(GOOD_RESULT)), expect="result", result=GOOD_RESULT, note="good")


class ScriptedUpstream:
    """An MCP server (both eras, JSON answers) with one tool, `act`, whose answer to tools/call is
    `answer`, set by the example; `server/discover`, `initialize`, `tools/list` and `ping` answer
    normally, notifications and client responses 202."""

    def __init__(self) -> None:
        self.answer: Scripted = GOOD
        self.url = ""
        self.app = Starlette(routes=[Route("/mcp", self._handle, methods=["GET", "POST", "DELETE"])])

    @contextlib.contextmanager
    def running(self) -> Iterator[ScriptedUpstream]:
        with serve_in_thread(self.app, lifetime=LIFETIME) as base:
            self.url = f"{base}/mcp"
            yield self

    async def _handle(self, request: Request) -> Response:
        if request.method == "DELETE":
            return Response(status_code=204)
        if request.method != "POST":
            return Response(status_code=405)
        try:
            message = json.loads(await request.body())
        except ValueError:
            return Response(status_code=400)
        if not isinstance(message, dict) or "method" not in message or "id" not in message:
            return Response(status_code=202)
        method, request_id = message["method"], message["id"]
        if method == "tools/call":
            answer = self.answer
            headers = {"content-type": answer.content_type} if answer.content_type is not None else None
            return Response(answer.render(request_id), status_code=answer.status, headers=headers)
        info = {"name": "scripted", "version": "1"}
        headers = {}
        if method == "server/discover":
            result: dict[str, Any] = {"supportedVersions": [MODERN], "capabilities": {"tools": {}}}
        elif method == "initialize":
            result = {"protocolVersion": LEGACY, "capabilities": {"tools": {}}, "serverInfo": info}
            headers["mcp-session-id"] = uuid.uuid4().hex
        elif method == "tools/list":
            result = {"tools": [{"name": "act", "description": "scripted", "inputSchema": {"type": "object"}}]}
        elif method == "ping":
            result = {}
        else:
            error = {"code": METHOD_NOT_FOUND, "message": "Method not found"}
            return JSONResponse({"jsonrpc": "2.0", "id": request_id, "error": error})
        return JSONResponse({"jsonrpc": "2.0", "id": request_id, "result": result}, headers=headers)


# --- the gateway ----------------------------------------------------------------------------------
def gateway_config(rec_url: str, script_url: str) -> GatewayConfig:
    """`rec` and `script`, anonymous callers, masking on; `script`'s circuit breaker as patient as
    the config allows (when the config knows `circuit`)."""
    last: Exception | None = None
    for threshold in CIRCUIT_THRESHOLDS:
        script: dict[str, Any] = {"name": "script", "url": script_url, "timeout_seconds": 5}
        if "circuit" in UpstreamConfig.model_fields:
            script["circuit"] = {"failure_threshold": threshold}
        data = {
            "resource": "https://gw.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": [{"name": "rec", "url": rec_url, "timeout_seconds": 5}, script],
            "masking": {"enabled": True},
        }
        try:
            return parse_config(data)
        except Exception as exc:  # a threshold above the config's bound: try the next one
            last = exc
    raise AssertionError(f"no usable gateway config: {last}")


_PLAIN_HEADER = re.compile(r"[\x20-\x7e]*")
_SENTINEL = re.compile(r"=\?base64\?.*\?=")


def header_value(value: str) -> str:
    """A routing header value: as is when plain ASCII, else `=?base64?<UTF-8 in base64>?=`."""
    if _PLAIN_HEADER.fullmatch(value) and value == value.strip() and not _SENTINEL.fullmatch(value):
        return value
    return f"=?base64?{base64.b64encode(value.encode()).decode()}?="


Post = Callable[[bytes, Mapping[str, str | bytes]], Reply]


@dataclass
class Gateway:
    """A client of one gateway (in-process or Lambda) that sends raw POSTs in either era."""

    post: Post
    session: str
    script: ScriptedUpstream
    scripted_calls: int = field(default=0)
    """Scripted calls since the last good one (see HEAL_EVERY)."""

    def headers(self, era: str, method: str | None = None, name: str | None = None) -> dict[str, str | bytes]:
        headers: dict[str, str | bytes] = {"content-type": JSON_TYPE, "accept": ACCEPT_BOTH}
        if era == LEGACY:
            headers.update({"mcp-session-id": self.session, "mcp-protocol-version": LEGACY})
            return headers
        headers["mcp-protocol-version"] = MODERN
        if method is not None:
            headers["mcp-method"] = method
        if name is not None:
            headers["mcp-name"] = header_value(name)
        return headers

    def send(self, case: Case) -> Reply:
        headers = self.headers(case.era, case.method, case.name)
        for key, value in case.headers:
            if value is None:
                headers.pop(key, None)
            else:
                headers[key] = value
        return self.post(case.body, headers)

    def request(self, era: str, method: str, params: dict[str, Any] | None = None, request_id: Any = 1) -> Reply:
        body = request_body(era, method, params, request_id)
        return self.post(dumps(body).encode(), self.headers(era, method, _name_of(method, params or {})))

    def call_script(self, era: str, answer: Scripted, request_id: Any) -> Reply:
        """script__act answered with `answer`; every HEAL_EVERY calls, one good call besides."""
        self.script.answer = answer
        try:
            reply = self.request(era, "tools/call", {"name": "script__act", "arguments": {}}, request_id)
        finally:
            self.script.answer = GOOD
        self.scripted_calls += 1
        if self.scripted_calls >= HEAL_EVERY:
            self.scripted_calls = 0
            healed = read_answer(
                self.request(era, "tools/call", {"name": "script__act", "arguments": {}}, 0), request_id=0
            )
            assert healed is not None and "result" in healed, f"the scripted upstream's good answer: {healed}"
        return reply


def _name_of(method: str, params: dict[str, Any]) -> str | None:
    key = NAME_BEARING.get(method)
    value = params.get(key) if key else None
    return value if isinstance(value, str) else None


def assert_still_serves(gateway: Gateway) -> None:
    """Property 5: both eras still list every tool and call rec__echo and script__act."""
    gateway.script.answer = GOOD
    for era in ERAS:
        listed = read_answer(gateway.request(era, "tools/list", {}, 101), request_id=101)
        assert listed is not None and "result" in listed, f"{era} tools/list afterwards: {listed}"
        assert {tool["name"] for tool in listed["result"]["tools"]} >= EXPOSED_TOOLS, listed
        params = {"name": "rec__echo", "arguments": {"probe": "still here"}}
        echoed = read_answer(gateway.request(era, "tools/call", params, 102), request_id=102)
        assert echoed is not None and "result" in echoed, f"{era} rec__echo afterwards: {echoed}"
        assert echoed["result"]["content"][0]["text"] == '{"probe": "still here"}', echoed
        acted = read_answer(gateway.request(era, "tools/call", {"name": "script__act"}, 103), request_id=103)
        assert acted is not None and "result" in acted, f"{era} script__act afterwards: {acted}"
        assert acted["result"]["content"][0]["text"] == "scripted", acted


def then_still_serving(run_examples: Callable[[], None], gateway: Gateway) -> None:
    """Run a property's examples, then check property 5 once (even when an example failed)."""
    try:
        run_examples()
    finally:
        assert_still_serves(gateway)


@pytest.fixture(scope="module")
def script() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream().running() as upstream:
        yield upstream


@pytest.fixture
def gateway(recorder: RecordingUpstream, script: ScriptedUpstream) -> Iterator[Gateway]:
    """A fresh in-process gateway (nothing learned carries over between tests), its 2025 session open."""
    script.answer = GOOD
    app = create_app(gateway_config(recorder.url, script.url), stores=Stores.memory(), streaming=False)
    with TestClient(app, raise_server_exceptions=False) as client:

        def post(body: bytes, headers: Mapping[str, str | bytes]) -> Reply:
            response = client.post("/mcp", content=body, headers=dict(headers))
            return Reply(response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content)

        yield Gateway(post, Caller(client, None).open_session(), script)


@pytest.fixture(scope="module")
def lambda_gateway(
    start_gateway: Callable[[GatewayConfig], LambdaGateway], recorder: RecordingUpstream, script: ScriptedUpstream
) -> Gateway:
    handler = start_gateway(gateway_config(recorder.url, script.url))

    def post(body: bytes, headers: Mapping[str, str | bytes]) -> Reply:
        event = load_event("tools_list_legacy")
        for key in ("accept", "content-type", "content-length", "mcp-session-id", "mcp-protocol-version"):
            event["headers"].pop(key, None)
        for key, value in headers.items():
            event["headers"][key.lower()] = value.decode("latin-1") if isinstance(value, bytes) else value
        event["headers"]["content-length"] = str(len(body))
        try:
            event["body"], event["isBase64Encoded"] = body.decode("utf-8"), False
        except UnicodeDecodeError:
            event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
        answer = handler.invoke(event)
        return Reply(answer.status, answer.headers, answer.body.encode("utf-8"))

    return Gateway(post, handler.initialize(), script)


# --- JSON values --------------------------------------------------------------------------------
MCP_KEYS = (
    "content",
    "type",
    "text",
    "isError",
    "structuredContent",
    "_meta",
    "data",
    "mimeType",
    "uri",
    "name",
    "resource",
    "blob",
    "annotations",
    "audience",
    "priority",
    "code",
    "message",
    "jsonrpc",
    "id",
    "method",
    "params",
    "result",
    "error",
)
MCP_WORDS = (
    "text",
    "image",
    "audio",
    "resource",
    "resource_link",
    "2.0",
    "user",
    "assistant",
    "tools/call",
    "rec__echo",
    "complete",
    "",
)
TEXT = st.text(max_size=12)
KEYS = st.one_of(TEXT, st.sampled_from(MCP_KEYS))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
    st.sampled_from(MCP_WORDS),
)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4), max_leaves=12
)
OBJECTS = st.dictionaries(KEYS, JSON_VALUES, max_size=4)
NOT_OBJECTS = JSON_VALUES.filter(lambda v: not isinstance(v, dict) and v is not None)
"""Not an object, and not null either (null is taken as "absent" by the MCP SDKs)."""
NOT_STRINGS = JSON_VALUES.filter(lambda v: not isinstance(v, str))
REQUEST_IDS = st.one_of(st.integers(-(2**80), 2**80), st.text(max_size=16))
BAD_IDS = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
    st.lists(SCALARS, max_size=3),
    st.dictionaries(TEXT, SCALARS, max_size=3),
)
DEPTHS = st.integers(500, 5000)


def deep_text(levels: int, kind: str) -> str:
    """JSON nested `levels` deep, built as text (json.dumps would recurse)."""
    if kind == "array":
        return "[" * levels + "]" * levels
    return '{"d":' * levels + "0" + "}" * levels


DEEP_VALUES = st.builds(deep_text, DEPTHS, st.sampled_from(["array", "object"]))


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def b64(raw: str | bytes) -> str:
    return base64.urlsafe_b64encode(raw.encode() if isinstance(raw, str) else raw).decode()


def _paths(value: Any) -> list[tuple[Any, ...]]:
    """Every path into a JSON value, the root `()` first."""
    paths: list[tuple[Any, ...]] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), value)]
    while stack:
        path, node = stack.pop()
        paths.append(path)
        if isinstance(node, dict):
            stack.extend(((*path, key), child) for key, child in node.items())
        elif isinstance(node, list):
            stack.extend(((*path, index), child) for index, child in enumerate(node))
    return sorted(paths, key=len)


def _mutate(value: Any, path: tuple[Any, ...], op: str, new: Any, key: str) -> Any:
    root = json.loads(json.dumps(value))
    if not path:
        return new
    parent = root
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if op == "delete":
        del parent[last]
    elif op == "insert" and isinstance(parent[last], dict):
        parent[last][key] = new
    elif op == "insert" and isinstance(parent[last], list):
        parent[last].append(new)
    else:
        parent[last] = new
    return root


@st.composite
def mutations(draw: st.DrawFn, bases: st.SearchStrategy[Any]) -> tuple[Any, Any]:
    """(base, the base with one value replaced, removed or added anywhere)."""
    base = draw(bases)
    path = draw(st.sampled_from(_paths(base)))
    op = draw(st.sampled_from(("replace", "delete", "insert")))
    return base, _mutate(base, path, op, draw(JSON_VALUES), draw(KEYS))


# --- client requests ------------------------------------------------------------------------------
MARK = "@@MARK@@"
"""Stands in the JSON text for what json.dumps cannot write (a raw token, a lone surrogate, bad bytes)."""


def request_body(era: str, method: Any, params: Any = None, request_id: Any = 7) -> dict[str, Any]:
    """A request; in 2026-07-28 its params carry the `_meta` envelope unless they set `_meta`."""
    params = {} if params is None else params
    if era == MODERN and isinstance(params, dict) and "_meta" not in params:
        params = {**params, "_meta": dict(ENVELOPE)}
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def case_of(
    era: str,
    body: dict[str, Any] | Any,
    expect: Expect,
    *,
    note: str,
    raw: str | bytes | None = None,
    request_id: Any = NO_ID,
    method: str | None = None,
    name: str | None = None,
) -> Case:
    """A Case of `body` (or of its `raw` text); mcp-method and mcp-name come from the body unless given."""
    data = dumps(body).encode() if raw is None else raw if isinstance(raw, bytes) else raw.encode()
    if isinstance(body, dict):
        if method is None and isinstance(body.get("method"), str):
            method = body["method"]
        params = body.get("params")
        if name is None and isinstance(method, str) and isinstance(params, dict):
            name = _name_of(method, params)
    return Case(era, data, expect, request_id, method, name, note=note)


ECHO = {"name": "rec__echo", "arguments": {"text": "hello"}}
PLACES = ("method", "tool name", "argument value", "argument key", "meta value", "id", "jsonrpc", "cursor")


def marked_request(era: str, place: str) -> dict[str, Any]:
    """A request whose one string at `place` holds MARK."""
    if place == "cursor":
        return request_body(era, "tools/list", {"cursor": f"c{MARK}"})
    method = f"tools/call{MARK}" if place == "method" else "tools/call"
    params: dict[str, Any] = {
        "name": f"rec__echo{MARK}" if place == "tool name" else "rec__echo",
        "arguments": {"text": f"a{MARK}b"}
        if place == "argument value"
        else {f"k{MARK}": "v"}
        if place == "argument key"
        else {"text": "hello"},
    }
    if place == "meta value":
        params["_meta"] = {**(ENVELOPE if era == MODERN else {}), "progressToken": f"p{MARK}"}
    body = request_body(era, method, params, f"id{MARK}" if place == "id" else 7)
    if place == "jsonrpc":
        body["jsonrpc"] = f"2.0{MARK}"
    return body


def valued_request(era: str, place: str) -> dict[str, Any]:
    """A request whose one value at `place` is the string MARK (to be replaced by a raw token)."""
    arguments: dict[str, Any] = {"text": "hello"}
    params: dict[str, Any] = {"name": "rec__echo", "arguments": arguments}
    body = request_body(era, "tools/call", params)
    if place == "argument value":
        arguments["n"] = MARK
    elif place == "id":
        body["id"] = MARK
    elif place == "meta value":
        body["params"]["_meta"] = {**(ENVELOPE if era == MODERN else {}), "progressToken": MARK}
    elif place == "params member":
        body["params"]["extra"] = MARK
    elif place == "top-level member":
        body["extra"] = MARK
    return body


VALUE_PLACES = ("argument value", "id", "meta value", "params member", "top-level member")


def with_raw_value(body: dict[str, Any], raw: str) -> str:
    text = dumps(body)
    assert text.count(f'"{MARK}"') == 1
    return text.replace(f'"{MARK}"', raw)


# -- not JSON
LONE_SURROGATES = st.one_of(
    st.integers(0xD800, 0xDBFF).map(lambda n: f"\\u{n:04x}"),
    st.integers(0xDC00, 0xDFFF).map(lambda n: f"\\u{n:04X}"),
    st.tuples(st.integers(0xDC00, 0xDFFF), st.integers(0xD800, 0xDBFF)).map(lambda p: f"\\u{p[0]:04x}\\u{p[1]:04x}"),
)
"""Escapes of a surrogate with no partner: a high one alone, a low one alone, a low one before a high one."""
INVALID_UTF8 = st.one_of(
    st.sampled_from(
        [
            b"\xff",
            b"\xfe",
            b"\x80",
            b"\xc0\xaf",
            b"\xc3\x28",
            b"\xe2\x82",
            b"\xed\xa0\x80",
            b"\xed\xbf\xbf",
            b"\xf4\x90\x80\x80",
            b"\xf8\x88\x80\x80\x80",
        ]
    ),
    st.binary(min_size=1, max_size=6),
)
"""Bytes that are not UTF-8 where they land (the UTF-8 encoding of a surrogate among them)."""
BOM = b"\xef\xbb\xbf"


def _not_json_cases(era: str) -> st.SearchStrategy[Case]:
    echo = request_body(era, "tools/call", ECHO)
    echo_text = dumps(echo)
    headers = {"method": "tools/call", "name": "rec__echo"}

    def parse_error(raw: bytes, note: str) -> Case:
        return Case(era, raw, PARSE, note=note, **headers)

    return st.one_of(
        st.binary(max_size=64)
        .filter(lambda raw: not raw.startswith(BOM) and not is_strict_json(raw))
        .map(lambda raw: parse_error(raw, "random bytes")),
        st.text(max_size=40)
        .map(str.encode)
        .filter(lambda raw: not raw.startswith(BOM) and not is_strict_json(raw))
        .map(lambda raw: parse_error(raw, "random text")),
        st.integers(0, len(echo_text) - 1).map(lambda n: parse_error(echo_text[:n].encode(), "truncated")),
        st.text(min_size=1, max_size=12)
        .filter(lambda tail: tail.strip() != "")
        .map(lambda tail: parse_error((echo_text + tail).encode(), "trailing garbage")),
        st.sampled_from(
            [
                echo_text + echo_text,
                echo_text.replace('"', "'"),
                echo_text.replace("{", "{/* c */", 1),
                echo_text.replace(",", ",,", 1),
                echo_text[:-1] + ",}",
                echo_text.replace(":", "=", 1),
            ]
        ).map(lambda text: parse_error(text.encode(), "JSON-like")),
        st.tuples(st.sampled_from(PLACES), LONE_SURROGATES).map(
            lambda p: parse_error(dumps(marked_request(era, p[0])).replace(MARK, p[1]).encode(), f"surrogate in {p[0]}")
        ),
        st.tuples(st.sampled_from(PLACES), INVALID_UTF8)
        .map(
            lambda p: (p[0], dumps(marked_request(era, p[0])).encode().replace(MARK.encode(), p[1])),
        )
        .filter(lambda p: not _is_utf8(p[1]))
        .map(lambda p: parse_error(p[1], f"invalid UTF-8 in {p[0]}")),
        st.tuples(st.sampled_from(VALUE_PLACES), st.sampled_from(["NaN", "Infinity", "-Infinity"])).map(
            lambda p: parse_error(with_raw_value(valued_request(era, p[0]), p[1]).encode(), f"{p[1]} in {p[0]}")
        ),
        st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]).map(
            lambda encoding: parse_error(echo_text.encode(encoding), f"the request in {encoding}")
        ),
    )


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- JSON, but not one JSON-RPC request
def _not_one_request_cases(era: str) -> st.SearchStrategy[Case]:
    def valid(request_id: Any = 7) -> dict[str, Any]:
        return request_body(era, "tools/call", ECHO, request_id)

    def invalid(body: Any, note: str, request_id: Any = NO_ID) -> Case:
        return case_of(era, body, NOT_ONE_REQUEST, note=note, request_id=request_id, method="tools/call")

    def changed(request_id: Any, **members: Any) -> dict[str, Any]:
        body = valid(request_id)
        for key, value in members.items():
            if value is NO_ID:
                body.pop(key)
            else:
                body[key] = value
        return body

    cases = [
        JSON_VALUES.filter(lambda v: not isinstance(v, dict)).map(lambda v: invalid(v, "not an object")),
        st.lists(REQUEST_IDS.map(valid), max_size=3).map(lambda batch: invalid(batch, "a batch")),
        st.tuples(REQUEST_IDS, st.one_of(st.just(NO_ID), JSON_VALUES.filter(lambda v: v != "2.0"))).map(
            lambda p: invalid(changed(p[0], jsonrpc=p[1]), "jsonrpc is not 2.0", p[0])
        ),
        BAD_IDS.map(lambda bad: invalid(changed(7, id=bad), "an id of the wrong type")),
        st.tuples(REQUEST_IDS, st.one_of(NOT_STRINGS, st.just(""))).map(
            lambda p: invalid(changed(p[0], method=p[1]), "a method that is not a non-empty string", p[0])
        ),
        st.tuples(REQUEST_IDS, st.one_of(NOT_OBJECTS, st.none())).map(
            lambda p: invalid(changed(p[0], params=p[1]), "params that are not an object", p[0])
        ),
        st.tuples(
            REQUEST_IDS,
            st.dictionaries(TEXT.filter(lambda k: k not in ("jsonrpc", "id", "method", "result", "error")), SCALARS),
        ).map(lambda p: invalid({"jsonrpc": "2.0", "id": p[0], **p[1]}, "no method, result or error", p[0])),
        REQUEST_IDS.map(
            lambda rid: invalid(
                {"jsonrpc": "2.0", "id": rid, "result": {}, "error": {"code": 1, "message": "x"}},
                "both result and error",
                rid,
            )
        ),
        st.sampled_from(["result", "error"]).map(
            lambda member: invalid(
                {"jsonrpc": "2.0", member: {} if member == "result" else {"code": 1, "message": "x"}},
                "a response without an id",
            )
        ),
        st.tuples(st.sampled_from(VALUE_PLACES), DEEP_VALUES).map(
            lambda p: Case(
                era,
                with_raw_value(valued_request(era, p[0]), p[1]).encode(),
                TOO_DEEP,
                NO_ID if p[0] == "id" else 7,
                "tools/call",
                "rec__echo",
                note=f"nested {p[1].count('[') + p[1].count('{')} deep in {p[0]}",
            )
        ),
        DEEP_VALUES.map(lambda deep: Case(era, deep.encode(), TOO_DEEP, note="a body nested deep")),
    ]
    if era == MODERN:
        cases.append(
            REQUEST_IDS.map(lambda rid: invalid({"jsonrpc": "2.0", "id": rid, "result": {}}, "a response", rid))
        )
    return st.one_of(cases)


# -- params of the wrong shape
def bad_params(era: str, method: str, params: Any, note: str, request_id: Any) -> Case:
    return case_of(era, request_body(era, method, params, request_id), BAD_PARAMS, note=note, request_id=request_id)


def _meta_cases(era: str) -> st.SearchStrategy[Case]:
    methods = ["tools/list", "tools/call", "prompts/list", "resources/list"]
    methods += ["ping"] if era == LEGACY else ["server/discover"]
    meta_not_object = st.tuples(st.sampled_from(methods), NOT_OBJECTS, REQUEST_IDS).map(
        lambda p: bad_params(era, p[0], {**_params_for(p[0]), "_meta": p[1]}, "params._meta is not an object", p[2])
    )
    if era == LEGACY:
        return meta_not_object
    envelope_keys = list(ENVELOPE)[:2]
    incomplete = st.tuples(st.sampled_from(methods), st.sampled_from(envelope_keys), REQUEST_IDS).map(
        lambda p: bad_params(
            era,
            p[0],
            {**_params_for(p[0]), "_meta": {k: v for k, v in ENVELOPE.items() if k != p[1]}},
            f"the envelope without {p[1]}",
            p[2],
        )
    )
    return st.one_of(meta_not_object, incomplete)


def _params_for(method: str) -> dict[str, Any]:
    return {"name": "rec__echo", "arguments": {}} if method == "tools/call" else {}


def _name_not_string_cases(era: str) -> st.SearchStrategy[Case]:
    names = st.one_of(NOT_STRINGS, st.just(""), st.just(NO_ID))
    return st.tuples(names, OBJECTS, REQUEST_IDS).map(
        lambda p: bad_params(
            era,
            "tools/call",
            {**({} if p[0] is NO_ID else {"name": p[0]}), "arguments": p[1]},
            "tools/call name is missing or not a non-empty string",
            p[2],
        )
    )


def _arguments_not_object_cases(era: str) -> st.SearchStrategy[Case]:
    tools = st.sampled_from(sorted(EXPOSED_TOOLS))
    return st.tuples(tools, NOT_OBJECTS, REQUEST_IDS).map(
        lambda p: bad_params(
            era, "tools/call", {"name": p[0], "arguments": p[1]}, "tools/call arguments not an object", p[2]
        )
    )


def _resource_and_prompt_cases(era: str) -> st.SearchStrategy[Case]:
    not_a_name = st.one_of(NOT_STRINGS, st.just(""))
    uri_methods = ["resources/read"] + (["resources/subscribe", "resources/unsubscribe"] if era == LEGACY else [])
    return st.one_of(
        st.tuples(st.sampled_from(uri_methods), not_a_name, REQUEST_IDS).map(
            lambda p: bad_params(era, p[0], {"uri": p[1]}, f"{p[0]} uri is not a non-empty string", p[2])
        ),
        st.tuples(st.sampled_from(uri_methods), REQUEST_IDS).map(
            lambda p: bad_params(era, p[0], {}, f"{p[0]} without a uri", p[1])
        ),
        st.tuples(not_a_name, REQUEST_IDS).map(
            lambda p: bad_params(era, "prompts/get", {"name": p[0]}, "prompts/get name is not a string", p[1])
        ),
        st.tuples(
            st.one_of(
                NOT_OBJECTS,
                st.dictionaries(TEXT, NOT_STRINGS.filter(lambda v: v is not None), min_size=1, max_size=3),
            ),
            REQUEST_IDS,
        ).map(
            lambda p: bad_params(
                era,
                "prompts/get",
                {"name": "rec__greet", "arguments": p[0]},
                "prompts/get arguments not an object of strings",
                p[1],
            )
        ),
    )


GOOD_REF = {"type": "ref/prompt", "name": "rec__greet"}
GOOD_ARGUMENT = {"name": "city", "value": "Par"}


def _completion_cases(era: str) -> st.SearchStrategy[Case]:
    not_a_string = st.one_of(NOT_STRINGS, st.just(NO_ID))
    bad_refs = st.one_of(
        st.just(NO_ID),
        NOT_OBJECTS,
        st.one_of(st.just(NO_ID), JSON_VALUES.filter(lambda v: v not in ("ref/prompt", "ref/resource"))).map(
            lambda kind: {"name": "rec__greet", **({} if kind is NO_ID else {"type": kind})}
        ),
        st.tuples(st.sampled_from(["ref/prompt", "ref/resource"]), st.one_of(not_a_string, st.just(""))).map(
            lambda p: {"type": p[0], **({} if p[1] is NO_ID else {("name" if p[0] == "ref/prompt" else "uri"): p[1]})}
        ),
    )
    bad_arguments = st.one_of(
        st.just(NO_ID),
        NOT_OBJECTS,
        st.tuples(not_a_string, st.text(max_size=5)).map(
            lambda p: {"value": p[1], **({} if p[0] is NO_ID else {"name": p[0]})}
        ),
        st.tuples(st.text(max_size=5), not_a_string).map(
            lambda p: {"name": p[0], **({} if p[1] is NO_ID else {"value": p[1]})}
        ),
    )

    def params(ref: Any, argument: Any) -> dict[str, Any]:
        return {
            **({} if ref is NO_ID else {"ref": ref}),
            **({} if argument is NO_ID else {"argument": argument}),
        }

    return st.one_of(
        st.tuples(bad_refs, REQUEST_IDS).map(
            lambda p: bad_params(era, "completion/complete", params(p[0], GOOD_ARGUMENT), "a bad ref", p[1])
        ),
        st.tuples(bad_arguments, REQUEST_IDS).map(
            lambda p: bad_params(era, "completion/complete", params(GOOD_REF, p[0]), "a bad argument", p[1])
        ),
    )


def _set_level_cases() -> st.SearchStrategy[Case]:
    levels = st.one_of(
        st.just(NO_ID),
        JSON_VALUES.filter(lambda v: v not in LOG_LEVELS),
        st.sampled_from([level.upper() for level in LOG_LEVELS] + ["warn", "fatal", "trace", " info", "info "]),
    )
    return st.tuples(levels, REQUEST_IDS).map(
        lambda p: bad_params(
            LEGACY, "logging/setLevel", {} if p[0] is NO_ID else {"level": p[0]}, "a level not one of the 8", p[1]
        )
    )


def _looks_issued(cursor: Any) -> bool:
    """Whether a cursor decodes to a state the gateway could have issued ({upstream: its cursor})."""
    if not isinstance(cursor, str):
        return False
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except Exception:
        return False
    return (
        isinstance(state, dict)
        and bool(state)
        and all(name in UPSTREAMS and isinstance(value, str) for name, value in state.items())
    )


BAD_CURSORS = st.one_of(
    NOT_STRINGS.filter(lambda v: v is not None),
    st.just(""),
    st.text(min_size=1, max_size=40),
    st.binary(max_size=64).map(b64),
    JSON_VALUES.map(lambda v: b64(dumps(v))),
    DEEP_VALUES.map(b64),
    DEPTHS.map(lambda n: b64('{"rec":' * n + '"x"' + "}" * n)),
    st.integers(8193, 20_000).map(lambda n: "A" * n),
).filter(lambda cursor: not _looks_issued(cursor))
"""Cursors the gateway cannot have issued (a well-formed `{"rec": "..."}` state it could not tell)."""


def _cursor_cases(era: str) -> st.SearchStrategy[Case]:
    return st.tuples(st.sampled_from(LIST_METHODS), BAD_CURSORS, REQUEST_IDS).map(
        lambda p: bad_params(era, p[0], {"cursor": p[1]}, f"a {p[0]} cursor the gateway did not issue", p[2])
    )


# -- unknown methods and tools
HEADER_SAFE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30)


def _unknown_method_cases(era: str) -> st.SearchStrategy[Case]:
    # 2026-07-28 carries the method in a header: plain ASCII there; the 2025 era takes any string.
    base = st.text(min_size=1, max_size=30) if era == LEGACY else HEADER_SAFE
    prefixes = st.sampled_from(["tools/", "notifications/", "resources/", "prompts/", "rpc.", "$/", "tools/call/"])
    other_era = ["server/discover"] if era == LEGACY else ["ping", "logging/setLevel", "initialize"]
    other_era += [] if era == LEGACY else ["resources/subscribe", "resources/unsubscribe"]
    methods = st.one_of(
        base, st.builds(lambda p, m: p + m, prefixes, base), st.sampled_from([*other_era, "TOOLS/LIST", "tools/List"])
    ).filter(lambda m: m not in KNOWN_METHODS[era])
    params = st.dictionaries(TEXT.filter(lambda k: k not in ("_meta", "inputResponses", "requestState")), SCALARS)
    return st.tuples(methods, params, REQUEST_IDS).map(
        lambda p: case_of(
            era,
            request_body(era, p[0], p[1], p[2]),
            client_error(era_status(era, METHOD_NOT_FOUND), METHOD_NOT_FOUND, exact_id=True),
            note="an unknown method",
            request_id=p[2],
        )
    )


TOOL_NAMES = st.one_of(
    st.text(min_size=1, max_size=30),
    st.builds(
        lambda prefix, rest: prefix + rest,
        st.sampled_from(["rec__", "script__", "rec", "script", "__", "#", "rec__echo", "script__act", "rec#", "REC__"]),
        st.text(max_size=12),
    ),
    st.sampled_from(
        [
            "rec__echo#1",
            "rec____echo",
            "REC__echo",
            "rec__ECHO",
            "rec__echo ",
            " rec__echo",
            "rec__echo\x00",
            "réc__echo",
            "rec__écho",
            "script__act__",
            "rec__whoami/..",
            "rec",
            "echo",
            "__echo",
            "rec__",
            "act",
            "=?base64?cmVjX19lY2hv?=",
        ]
    ),
).filter(lambda name: name not in EXPOSED_TOOLS)


def _unknown_tool_cases(era: str) -> st.SearchStrategy[Case]:
    return st.tuples(TOOL_NAMES, OBJECTS, REQUEST_IDS).map(
        lambda p: case_of(
            era,
            request_body(era, "tools/call", {"name": p[0], "arguments": p[1]}, p[2]),
            client_error(
                era_status(era, INVALID_PARAMS),
                INVALID_PARAMS,
                message=f"Unknown tool: {p[0]}",
                exact_id=True,
            ),
            note="an unknown tool",
            request_id=p[2],
        )
    )


# -- well-formed calls
ARGUMENTS = st.dictionaries(
    KEYS,
    st.recursive(
        SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3), max_leaves=25
    ),
    max_size=5,
)


def _valid_call_cases(era: str) -> st.SearchStrategy[Case]:
    return st.one_of(
        st.tuples(ARGUMENTS, REQUEST_IDS).map(
            lambda p: case_of(
                era,
                request_body(era, "tools/call", {"name": "rec__echo", "arguments": p[0]}, p[1]),
                RESULT,
                note="rec__echo with any arguments",
                request_id=p[1],
            )
        ),
        REQUEST_IDS.map(
            lambda rid: case_of(
                era, request_body(era, "tools/list", {}, rid), RESULT, note="tools/list", request_id=rid
            )
        ),
    )


# -- headers
INTERESTING_HEADERS: dict[str, list[str]] = {
    "mcp-protocol-version": [LEGACY, MODERN, "2025-03-26", "2025-06-18", "2024-11-05", "2026-07-29", "", "latest"],
    "mcp-method": ["tools/call", "tools/list", "TOOLS/CALL", "", "tools/call ", "=?base64?dG9vbHMvY2FsbA==?="],
    "mcp-name": ["rec__echo", "rec__whoami", "=?base64?cmVjX19lY2hv?=", "=?base64?!!!?=", "", "REC__ECHO"],
    "mcp-session-id": ["", "x", "s" * 200, " ", "0" * 43],
    "accept": [
        JSON_TYPE,
        SSE_TYPE,
        "*/*",
        "application/*",
        "text/*",
        "",
        "application/json;q=0",
        "APPLICATION/JSON",
        ACCEPT_BOTH,
    ],
    "content-type": [
        JSON_TYPE,
        "application/json; charset=utf-8",
        "text/plain",
        "",
        "application/json-rpc",
        "APPLICATION/JSON",
        "multipart/form-data",
    ],
}
ASCII_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
LATIN1_HEADER_BYTES = st.binary(max_size=24).filter(lambda raw: not any(b in raw for b in b"\r\n\x00"))


def _header_cases(era: str, *, raw_bytes: bool = True) -> st.SearchStrategy[Case]:
    def values(name: str) -> st.SearchStrategy[str | bytes | None]:
        choices: list[st.SearchStrategy[Any]] = [
            st.none(),
            st.sampled_from(INTERESTING_HEADERS[name]),
            ASCII_HEADER_TEXT,
        ]
        if raw_bytes:
            choices.append(LATIN1_HEADER_BYTES)
        return st.one_of(choices)

    changes = st.fixed_dictionaries({}, optional={name: values(name) for name in INTERESTING_HEADERS})
    body = request_body(era, "tools/call", {"name": "rec__echo", "arguments": {"x": 1}}, 7)
    expect = Expect(frozenset(c for _, c in HEADER_FAULTS), frozenset(s for s, _ in HEADER_FAULTS), results=True)
    return changes.map(
        lambda headers: Case(
            era, dumps(body).encode(), expect, 7, "tools/call", "rec__echo", tuple(headers.items()), "headers"
        )
    )


def assert_header_answer(reply: Reply, case: Case) -> None:
    final = assert_expected(reply, case)
    if final is not None and "error" in final:
        pair = (reply.status, final["error"]["code"])
        assert pair in HEADER_FAULTS, f"HTTP {pair[0]} with code {pair[1]} for {case!r}: {reply!r}"


# -- anything at all
def _valid_bases(era: str) -> st.SearchStrategy[dict[str, Any]]:
    shared: list[tuple[str, dict[str, Any]]] = [
        ("tools/call", ECHO),
        ("tools/list", {}),
        ("prompts/list", {}),
        ("prompts/get", {"name": "rec__greet", "arguments": {"who": "x"}}),
        ("resources/read", {"uri": "rec://doc/1"}),
        ("completion/complete", {"ref": GOOD_REF, "argument": GOOD_ARGUMENT}),
    ]
    own = [("ping", {}), ("logging/setLevel", {"level": "info"})] if era == LEGACY else [("server/discover", {})]
    return st.sampled_from(shared + own).map(lambda p: request_body(era, p[0], p[1], 7))


def _anything_cases(era: str) -> st.SearchStrategy[Case]:
    def any_answer(case: Case) -> Case:
        return Case(
            case.era, case.body, ANY_CLIENT_ANSWER, case.request_id, case.method, case.name, case.headers, case.note
        )

    def mutated(pair: tuple[Any, Any]) -> Case:
        base, body = pair
        request_id = body.get("id", NO_ID) if isinstance(body, dict) else NO_ID
        request_id = request_id if _valid_id(request_id) else NO_ID
        case = case_of(era, base, ANY_CLIENT_ANSWER, note="a mutated request", request_id=request_id)
        return Case(era, dumps(body).encode(), ANY_CLIENT_ANSWER, request_id, case.method, case.name, note=case.note)

    return st.one_of(
        _not_json_cases(era).map(any_answer),
        _not_one_request_cases(era).map(any_answer),
        _meta_cases(era).map(any_answer),
        _unknown_tool_cases(era).map(any_answer),
        _header_cases(era).map(any_answer),
        mutations(_valid_bases(era)).map(mutated),
        OBJECTS.map(lambda body: Case(era, dumps(body).encode(), ANY_CLIENT_ANSWER, note="a random object")),
    )


def for_both_eras(cases: Callable[[str], st.SearchStrategy[Case]]) -> st.SearchStrategy[Case]:
    return st.sampled_from(ERAS).flatmap(cases)


# --- upstream answers ---------------------------------------------------------------------------
NOT_RPC_RESPONSES = st.one_of(
    JSON_VALUES.map(lambda v: Scripted(dumps(v).encode(), note="random JSON")),
    st.one_of(st.just(NO_ID), JSON_VALUES.filter(lambda v: v != "2.0")).map(
        lambda version: Scripted(
            (
                '{"id":@@ID@@,'
                + ("" if version is NO_ID else f'"jsonrpc":{dumps(version)},')
                + f'"result":{dumps(GOOD_RESULT)}}}'
            ).encode(),
            note="jsonrpc is not 2.0",
        )
    ),
    st.just(Scripted(b'{"jsonrpc":"2.0","id":@@ID@@}', note="neither result nor error")),
    st.just(
        Scripted(
            b'{"jsonrpc":"2.0","id":@@ID@@,"result":{"content":[]},"error":{"code":1,"message":"x"}}',
            note="both result and error",
        )
    ),
    NOT_STRINGS.map(
        lambda method: Scripted(
            f'{{"jsonrpc":"2.0","id":@@ID@@,"method":{dumps(method)},"result":{{"content":[]}}}}'.encode(),
            note="a method that is not a string",
        )
    ),
    st.just(Scripted(b'{"jsonrpc":"2.0","method":"notifications/progress","params":{}}', note="only a notification")),
)
WRONG_IDS = st.one_of(
    JSON_VALUES.map(dumps),
    st.sampled_from(["@@ID-CASE@@", "@@ID-SPACE@@", "@@ID-TYPE@@", "@@ID-LIST@@", "@@ID-OBJECT@@"]),
).map(lambda token: Scripted(rpc("result", dumps(GOOD_RESULT), token), note=f"id {token}"))
NAN_ANSWERS = st.tuples(
    st.sampled_from(["NaN", "Infinity", "-Infinity"]),
    st.sampled_from(["result member", "text", "id", "isError", "structuredContent", "error code"]),
).map(
    lambda p: Scripted(
        {
            "result member": rpc("result", f'{{"content":[],"n":{p[0]}}}'),
            "text": rpc("result", f'{{"content":[{{"type":"text","text":{p[0]}}}]}}'),
            "id": rpc("result", dumps(GOOD_RESULT), p[0]),
            "isError": rpc("result", f'{{"content":[],"isError":{p[0]}}}'),
            "structuredContent": rpc("result", f'{{"content":[],"structuredContent":{{"v":[1,{p[0]}]}}}}'),
            "error code": rpc("error", f'{{"code":{p[0]},"message":"x"}}'),
        }[p[1]],
        note=f"{p[0]} in {p[1]}",
    )
)
DEEP_ANSWERS = st.tuples(DEEP_VALUES, st.sampled_from(["structuredContent", "extra member", "result", "content"])).map(
    lambda p: Scripted(
        {
            "structuredContent": rpc("result", f'{{"content":[],"structuredContent":{{"d":{p[0]}}}}}'),
            "extra member": rpc("result", f'{{"content":[],"x":{p[0]}}}'),
            "result": rpc("result", p[0]),
            "content": rpc("result", f'{{"content":[{{"type":"text","text":"x","d":{p[0]}}}]}}'),
        }[p[1]],
        note=f"nested deep in {p[1]}",
    )
)
BAD_CONTENT_TYPES = [
    "text/html",
    "text/plain",
    "application/octet-stream",
    None,
    "application/jsonx",
    "application/json-seq",
    "application/problem+json",
    "text/json",
    SSE_TYPE,
]
GOOD_CONTENT_TYPES = ["application/json; charset=utf-8", "Application/JSON", "application/json;charset=UTF-8"]
CONTENT_TYPE_ANSWERS = st.sampled_from(BAD_CONTENT_TYPES + GOOD_CONTENT_TYPES).map(
    lambda ct: Scripted(
        GOOD.body,
        content_type=ct,
        expect="result" if ct in GOOD_CONTENT_TYPES else "invalid",
        result=GOOD_RESULT,
        note=f"content type {ct}",
    )
)
MALFORMED_ANSWERS = st.one_of(
    st.binary(max_size=120).map(lambda raw: Scripted(raw, note="random bytes")),
    st.text(max_size=60).map(lambda text: Scripted(text.encode(), note="random text")),
    NAN_ANSWERS,
    WRONG_IDS,
    st.just(Scripted(rpc("result", dumps(GOOD_RESULT), None), note="no id")),
    NOT_RPC_RESPONSES,
    DEEP_ANSWERS,
    CONTENT_TYPE_ANSWERS,
)

FAILURE_STATUSES = [201, 202, 204, 301, 302, 400, 401, 403, 404, 405, 409, 418, 429, 500, 501, 502, 503, 504]
STATUS_ANSWERS = st.tuples(
    st.sampled_from(FAILURE_STATUSES),
    st.one_of(
        st.just(b""),
        st.just(b"<html>oops</html>"),
        st.binary(max_size=40),
        st.just(GOOD.body),
        st.just(b'{"error":"invalid_token"}'),
    ),
    st.sampled_from([JSON_TYPE, "text/plain", "text/html", None]),
).map(
    lambda p: Scripted(
        b"" if p[0] == 204 else p[1], status=p[0], content_type=p[2], expect="fault", note=f"HTTP {p[0]}"
    )
)

HUGE_TEXT = st.builds(
    lambda s, n: (s * (n // len(s) + 1))[:n], st.text(min_size=1, max_size=8), st.integers(501, 100_000)
)
WELL_FORMED_ERRORS = st.fixed_dictionaries(
    {"code": st.integers(-(2**70), 2**70), "message": st.one_of(st.text(max_size=40), HUGE_TEXT)},
    optional={"data": JSON_VALUES},
)
ERROR_VALUES = st.one_of(
    WELL_FORMED_ERRORS,
    mutations(WELL_FORMED_ERRORS).map(lambda pair: pair[1]),
    JSON_VALUES,
    st.sampled_from(
        [
            "boom",
            {"code": "-32000", "message": "x"},
            {"code": -32000.5, "message": "x"},
            {"code": -32000.0, "message": "x"},
            {"code": True, "message": "x"},
            {"code": -32000},
            {"message": "x"},
            {"code": -32000, "message": None},
            {"code": -32000, "message": ["x"]},
        ]
    ),
)


def well_formed_error(error: Any) -> bool:
    code = error.get("code") if isinstance(error, dict) else None
    return isinstance(code, int) and not isinstance(code, bool) and isinstance(error.get("message"), str)


def error_answer(error: Any, status: int) -> Scripted:
    if well_formed_error(error):
        expect, code = "error", error["code"]
    else:
        expect, code = ("invalid" if status == 200 else "fault"), None
    return Scripted(rpc("error", dumps(error)), status=status, expect=expect, code=code, note="an error")


ERROR_ANSWERS = st.tuples(ERROR_VALUES, st.sampled_from([200, 200, 200, 400, 422, 500, 503])).map(
    lambda p: error_answer(*p)
)


# -- results
URIS = st.one_of(st.sampled_from(["https://example.com/doc", "script://doc/1", "urn:x:1", "mem://a b", ""]), TEXT)
BASE64 = st.binary(max_size=12).map(lambda raw: base64.b64encode(raw).decode())
ANNOTATIONS = st.fixed_dictionaries(
    {},
    optional={
        "audience": st.lists(st.sampled_from(["user", "assistant"]), max_size=2),
        "priority": st.floats(0, 1),
        "lastModified": st.text(max_size=10),
    },
)
META = st.dictionaries(TEXT, SCALARS, max_size=3)


def _block(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(fields, optional={"annotations": ANNOTATIONS, "_meta": META})


VALID_BLOCKS = st.one_of(
    _block({"type": st.just("text"), "text": st.text(max_size=40)}),
    _block({"type": st.sampled_from(["image", "audio"]), "data": BASE64, "mimeType": st.sampled_from(["image/png"])}),
    _block({"type": st.just("resource_link"), "uri": URIS, "name": st.text(max_size=10)}),
    _block(
        {
            "type": st.just("resource"),
            "resource": st.one_of(
                st.fixed_dictionaries({"uri": URIS, "text": st.text(max_size=20)}),
                st.fixed_dictionaries({"uri": URIS, "blob": BASE64}),
            ),
        }
    ),
)
VALID_RESULTS = st.fixed_dictionaries(
    {"content": st.lists(VALID_BLOCKS, max_size=4)},
    optional={"isError": st.booleans(), "structuredContent": OBJECTS, "_meta": META},
)
BLOCK_MEMBERS = {
    "text": ("text",),
    "image": ("data", "mimeType"),
    "audio": ("data", "mimeType"),
    "resource_link": ("uri", "name", "title", "description", "mimeType", "size"),
    "resource": ("resource",),
}


@st.composite
def swapped_members(draw: st.DrawFn) -> dict[str, Any]:
    """A valid result with one member the schema gives a type (of the result, a content block or an
    embedded resource) set to any JSON value."""
    result = json.loads(json.dumps(draw(VALID_RESULTS)))
    targets: list[tuple[tuple[Any, ...], str]] = [
        ((), key) for key in ("content", "isError", "structuredContent", "_meta")
    ]
    for index, block in enumerate(result["content"]):
        keys = (*BLOCK_MEMBERS[block["type"]], "type", "annotations", "_meta")
        targets += [(("content", index), key) for key in keys]
        if block["type"] == "resource":
            keys = ("uri", "text", "blob", "mimeType", "_meta")
            targets += [(("content", index, "resource"), key) for key in keys]
    where, key = draw(st.sampled_from(targets))
    node = result
    for part in where:
        node = node[part]
    node[key] = draw(JSON_VALUES)
    return result


RESULT_VALUES = st.one_of(
    VALID_RESULTS, swapped_members(), mutations(VALID_RESULTS).map(lambda pair: pair[1]), JSON_VALUES
)

Verdict = bool | None
"""True: valid MCP; False: invalid; None: the schema and the SDKs read it differently (either answer)."""


def _all(verdicts: list[Verdict]) -> Verdict:
    if any(v is False for v in verdicts):
        return False
    return None if any(v is None for v in verdicts) else True


def _member(item: dict[str, Any], key: str, test: Callable[[Any], Verdict], *, null: Verdict = None) -> Verdict:
    """An optional member: absent is fine, null is `null`, anything else as `test` says."""
    if key not in item:
        return True
    return null if item[key] is None else test(item[key])


def _required(item: dict[str, Any], key: str, kind: type) -> Verdict:
    return isinstance(item.get(key), kind)


def _is_object(value: Any) -> Verdict:
    return isinstance(value, dict)


def _is_string(value: Any) -> Verdict:
    return isinstance(value, str)


def _is_number(value: Any) -> Verdict:
    return isinstance(value, int | float) and not isinstance(value, bool)


def annotations_verdict(value: Any) -> Verdict:
    if not isinstance(value, dict):
        return False
    return _all(
        [
            _member(value, "audience", lambda a: isinstance(a, list) and all(r in ("user", "assistant") for r in a)),
            _member(value, "priority", lambda p: _is_number(p) and 0 <= p <= 1),
            _member(value, "lastModified", _is_string),
        ]
    )


def contents_verdict(value: Any) -> Verdict:
    if not isinstance(value, dict) or not isinstance(value.get("uri"), str):
        return False
    if "text" in value and "blob" in value:
        return None
    body = _required(value, "text", str) if "text" in value else _required(value, "blob", str)
    return _all([body, _member(value, "mimeType", _is_string), _member(value, "_meta", _is_object)])


def block_verdict(block: Any) -> Verdict:
    if not isinstance(block, dict):
        return False
    kind = block.get("type")
    common = [_member(block, "annotations", annotations_verdict), _member(block, "_meta", _is_object)]
    if kind == "text":
        own = [_required(block, "text", str)]
    elif kind in ("image", "audio"):
        own = [_required(block, "data", str), _required(block, "mimeType", str)]
    elif kind == "resource_link":
        own = [
            _required(block, "uri", str),
            _required(block, "name", str),
            *(_member(block, key, _is_string) for key in ("title", "description", "mimeType")),
            _member(block, "size", _is_number),
            None if "icons" in block else True,
        ]
    elif kind == "resource":
        own = [contents_verdict(block.get("resource"))]
    else:
        return False
    return _all(own + common)


def call_tool_result_verdict(result: Any, era: str) -> Verdict:
    """Whether `result` is a CallToolResult as the MCP schema has it (`era` decides `resultType`)."""
    if not isinstance(result, dict):
        return False
    if era == MODERN and (
        result.get("resultType", "complete") != "complete" or "inputRequests" in result or "requestState" in result
    ):
        return None  # input_required and its kin: not modelled here
    content = result.get("content")
    if not isinstance(content, list):
        return False
    return _all(
        [
            *(block_verdict(block) for block in content),
            _member(result, "isError", lambda v: isinstance(v, bool), null=False),
            _member(result, "structuredContent", _is_object),
            _member(result, "_meta", _is_object),
        ]
    )


# -- event streams
NOTIFICATIONS = [
    {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "p", "progress": 1}},
    {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "working"}},
]
LINE_TEXT = st.text(st.characters(exclude_characters="\r\n", exclude_categories=("Cs",)), max_size=20)


@dataclass(frozen=True)
class Event:
    kind: str
    """ignored, notification, bad (not a JSON-RPC message), or response."""
    text: str


EVENTS = st.one_of(
    LINE_TEXT.map(lambda t: Event("ignored", f": {t}")),
    st.sampled_from(
        ["event: message", "id: 7", "retry: 10", "retry: soon", "foo: bar", "garbage", "id:", "event:"]
    ).map(lambda line: Event("ignored", line)),
    st.just(Event("ignored", "id: 0\ndata:")),
    st.sampled_from(NOTIFICATIONS).map(lambda n: Event("notification", f"data: {dumps(n)}")),
    LINE_TEXT.filter(lambda t: t.strip() != "" and not is_strict_json(t.strip().encode())).map(
        lambda t: Event("bad", f"data: {t}")
    ),
    JSON_VALUES.filter(lambda v: not (isinstance(v, dict) and v.get("jsonrpc") == "2.0")).map(
        lambda v: Event("bad", f"data: {dumps(v)}")
    ),
    st.just(Event("bad", 'data: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":NaN}}')),
    st.just(Event("bad", f"data: {rpc('result', dumps(GOOD_RESULT), '@@ID-CASE@@').decode()}")),
    st.just(Event("response", f"data: {rpc('result', dumps(GOOD_RESULT)).decode()}")),
    st.just(
        Event(
            "response",
            "\n".join(
                f"data: {line}"
                for line in json.dumps({"jsonrpc": "2.0", "id": "@@ID@@", "result": GOOD_RESULT}, indent=1)
                .replace('"@@ID@@"', "@@ID@@")
                .split("\n")
            ),
        )
    ),
)


def stream_answer(events: list[Event], newline: str, terminated: bool, content_type: str) -> Scripted:
    """An event stream; the gateway must relay the response if nothing bad comes before it (and
    the event is complete: one cut off by the end of the stream is never dispatched), else 502."""
    expect = "invalid"
    for index, event in enumerate(events):
        complete = terminated or index < len(events) - 1
        if event.kind == "bad" or (event.kind == "response" and not complete):
            break
        if event.kind == "response":
            expect = "result"
            break
    text = "".join(event.text + "\n\n" for event in events)
    if not terminated and events:
        text = text[:-2]
    body = text.replace("\n", newline).encode()
    return Scripted(body, content_type=content_type, expect=expect, result=GOOD_RESULT, note="an event stream")


STREAM_ANSWERS = st.builds(
    stream_answer,
    st.lists(EVENTS, max_size=6),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
    st.sampled_from([SSE_TYPE, "text/event-stream; charset=utf-8"]),
)


# -- what the gateway made of it
def assert_upstream_outcome(reply: Reply, answer: Scripted, era: str, request_id: Any) -> None:
    final = read_answer(reply, request_id=request_id, upstream=answer.render(request_id))
    assert final is not None, f"202 for a tools/call, upstream answered {answer!r}"
    assert same_id(final["id"], request_id), f"id of {reply!r}, sent {request_id!r}"
    error = final.get("error")
    if answer.expect == "result" or (answer.expect == "either" and error is None):
        assert error is None, f"refused {answer!r}: {reply!r}"
        assert reply.status == 200, reply
        _assert_relayed(final["result"], answer.result, reply)
    elif answer.expect in ("invalid", "either"):
        assert error is not None, f"relayed {answer!r}: {reply!r}"
        assert reply.status == (200 if reply.content_type == SSE_TYPE else 502), f"{answer!r}: {reply!r}"
        assert (error["code"], error["message"]) == (INTERNAL_ERROR, INVALID_ANSWER), f"{answer!r}: {reply!r}"
    elif answer.expect == "fault":
        assert error is not None, f"relayed {answer!r}: {reply!r}"
        assert reply.status == 502, f"{answer!r}: {reply!r}"
        assert error["code"] == INTERNAL_ERROR and error["message"].startswith(UPSTREAM_FAULT), f"{answer!r}: {reply!r}"
    else:
        assert error is not None, f"no error relayed for {answer!r}: {reply!r}"
        assert error["code"] == answer.code, f"code of {answer!r}: {reply!r}"
        assert len(error["message"]) <= ERROR_MESSAGE_LIMIT, f"a message of {len(error['message'])} characters"
        assert reply.status == era_status(era, error["code"]), f"{answer!r}: {reply!r}"


def _assert_relayed(result: dict[str, Any], sent: Any, reply: Reply) -> None:
    if isinstance(sent, dict) and isinstance(sent.get("content"), list):
        relayed = result.get("content")
        assert isinstance(relayed, list), reply
        assert [b.get("type") for b in relayed] == [b.get("type") for b in sent["content"]], reply
        assert bool(result.get("isError", False)) == bool(sent.get("isError", False)), reply


def _scripted_example(gateway: Gateway) -> Callable[[str, Scripted, Any], None]:
    def check(era: str, answer: Scripted, request_id: Any) -> None:
        note(f"{era}, id {request_id!r}, upstream answers {answer!r}")
        assert_upstream_outcome(gateway.call_script(era, answer, request_id), answer, era, request_id)

    return check


ERA = st.sampled_from(ERAS)


# --- the properties: client input ---------------------------------------------------------------
def test_a_body_that_is_not_json_is_a_400_parse_error_with_a_null_id(gateway: Gateway) -> None:
    @given(case=for_both_eras(_not_json_cases))
    @examples(120)
    def each(case: Case) -> None:
        note(repr(case))
        assert_expected(gateway.send(case), case)

    then_still_serving(each, gateway)


def test_json_that_is_not_one_json_rpc_request_is_a_400_invalid_request(gateway: Gateway) -> None:
    @given(case=for_both_eras(_not_one_request_cases))
    @examples(120)
    def each(case: Case) -> None:
        note(repr(case))
        assert_expected(gateway.send(case), case)

    then_still_serving(each, gateway)


def test_params_meta_that_is_not_an_object_or_an_incomplete_envelope_is_a_400_invalid_params(
    gateway: Gateway,
) -> None:
    @given(case=for_both_eras(_meta_cases))
    @examples(60)
    def each(case: Case) -> None:
        note(repr(case))
        assert_expected(gateway.send(case), case)

    then_still_serving(each, gateway)


def test_a_tool_call_whose_name_is_not_a_non_empty_string_is_a_400_invalid_params(gateway: Gateway) -> None:
    @given(case=for_both_eras(_name_not_string_cases))
    @examples(60)
    def each(case: Case) -> None:
        note(repr(case))
        assert_expected(gateway.send(case), case)

    then_still_serving(each, gateway)


def test_a_tool_call_whose_arguments_are_not_an_object_is_a_400_invalid_params(gateway: Gateway) -> None:
    @given(case=for_both_eras(_arguments_not_object_cases))
    @examples(60)
    def each(case: Case) -> None:
        note(repr(case))
        assert_expected(gateway.send(case), case)

    then_still_serving(each, gateway)


def test_a_resource_or_prompt_request_with_params_of_the_wrong_shape_is_a_400_invalid_params(
    gateway: Gateway,
) -> None:
    @given(case=for_both_eras(_resource_and_prompt_cases))
    @examples(80)
    def each(case: Case) -> None:
        note(repr(case))
        assert_expected(gateway.send(case), case)

    then_still_serving(each, gateway)


def test_a_completion_request_with_a_bad_ref_or_argument_is_a_400_invalid_params(gateway: Gateway) -> None:
    @given(case=for_both_eras(_completion_cases))
    @examples(80)
    def each(case: Case) -> None:
        note(repr(case))
        assert_expected(gateway.send(case), case)

    then_still_serving(each, gateway)


def test_set_level_with_anything_but_the_eight_levels_is_a_400_invalid_params(gateway: Gateway) -> None:
    @given(case=_set_level_cases())
    @examples(60)
    def each(case: Case) -> None:
        note(repr(case))
        assert_expected(gateway.send(case), case)

    then_still_serving(each, gateway)


def test_a_list_cursor_the_gateway_did_not_issue_is_a_400_invalid_params(gateway: Gateway) -> None:
    @given(case=for_both_eras(_cursor_cases))
    @examples(80)
    def each(case: Case) -> None:
        note(repr(case))
        assert_expected(gateway.send(case), case)

    then_still_serving(each, gateway)


def test_an_unknown_method_is_method_not_found_200_in_the_2025_era_and_404_in_2026(gateway: Gateway) -> None:
    @given(case=for_both_eras(_unknown_method_cases))
    @examples(80)
    def each(case: Case) -> None:
        note(repr(case))
        assert_expected(gateway.send(case), case)

    then_still_serving(each, gateway)


def test_an_unknown_tool_is_unknown_tool_invalid_params_200_in_the_2025_era_and_400_in_2026(
    gateway: Gateway,
) -> None:
    @given(case=for_both_eras(_unknown_tool_cases))
    @examples(100)
    def each(case: Case) -> None:
        note(repr(case))
        assert_expected(gateway.send(case), case)

    then_still_serving(each, gateway)


def test_a_well_formed_call_with_any_id_and_any_arguments_gets_its_result_under_that_id(gateway: Gateway) -> None:
    @given(case=for_both_eras(_valid_call_cases))
    @examples(80)
    def each(case: Case) -> None:
        note(repr(case))
        final = assert_expected(gateway.send(case), case)
        assert final is not None and "result" in final, f"{case!r}: {final}"
        result = final["result"]
        if "content" in result:
            assert result.get("isError") is False and result["content"][0]["type"] == "text", final
        else:
            assert {tool["name"] for tool in result["tools"]} >= EXPOSED_TOOLS, final

    then_still_serving(each, gateway)


def test_random_routing_and_content_headers_are_answered_as_the_clients_mistake(gateway: Gateway) -> None:
    @given(case=for_both_eras(_header_cases))
    @examples(120)
    def each(case: Case) -> None:
        note(repr(case))
        assert_header_answer(gateway.send(case), case)

    then_still_serving(each, gateway)


def test_any_client_input_at_all_gets_one_well_formed_answer_and_never_a_5xx_or_internal_error(
    gateway: Gateway,
) -> None:
    @given(case=for_both_eras(_anything_cases))
    @examples(150)
    def each(case: Case) -> None:
        note(repr(case))
        assert_expected(gateway.send(case), case)

    then_still_serving(each, gateway)


# --- the properties: upstream answers -------------------------------------------------------------
def test_an_upstream_answer_that_is_not_a_json_rpc_response_to_the_call_is_a_502_invalid_response(
    gateway: Gateway,
) -> None:
    check = _scripted_example(gateway)

    @given(era=ERA, answer=MALFORMED_ANSWERS, request_id=REQUEST_IDS)
    @examples(150)
    def each(era: str, answer: Scripted, request_id: Any) -> None:
        check(era, answer, request_id)

    then_still_serving(each, gateway)


def test_an_upstream_http_failure_status_is_a_502_naming_the_upstream(gateway: Gateway) -> None:
    check = _scripted_example(gateway)

    @given(era=ERA, answer=STATUS_ANSWERS, request_id=REQUEST_IDS)
    @examples(80)
    def each(era: str, answer: Scripted, request_id: Any) -> None:
        check(era, answer, request_id)

    then_still_serving(each, gateway)


def test_an_upstream_error_is_relayed_when_well_formed_and_a_502_invalid_response_otherwise(
    gateway: Gateway,
) -> None:
    check = _scripted_example(gateway)

    @given(era=ERA, answer=ERROR_ANSWERS, request_id=REQUEST_IDS)
    @examples(120)
    def each(era: str, answer: Scripted, request_id: Any) -> None:
        check(era, answer, request_id)

    then_still_serving(each, gateway)


def test_an_upstream_result_is_relayed_only_when_it_is_a_valid_call_tool_result(gateway: Gateway) -> None:
    check = _scripted_example(gateway)

    @given(era=ERA, result=RESULT_VALUES, request_id=REQUEST_IDS)
    # The upstream's own words are relayed, even one the gateway itself must never say.
    @example(era=LEGACY, result={"content": [{"type": "text", "text": "botocore"}]}, request_id=0)
    @examples(150)
    def each(era: str, result: Any, request_id: Any) -> None:
        verdict = call_tool_result_verdict(result, era)
        expect = {True: "result", False: "invalid", None: "either"}[verdict]
        note = f"a result ({'valid' if verdict else 'invalid' if verdict is False else 'read either way'})"
        check(era, Scripted(rpc("result", dumps(result)), expect=expect, result=result, note=note), request_id)

    then_still_serving(each, gateway)


def test_an_upstream_event_stream_is_relayed_up_to_its_response_and_garbage_before_it_is_a_502(
    gateway: Gateway,
) -> None:
    check = _scripted_example(gateway)

    @given(era=ERA, answer=STREAM_ANSWERS, request_id=REQUEST_IDS)
    @examples(120)
    def each(era: str, answer: Scripted, request_id: Any) -> None:
        check(era, answer, request_id)

    then_still_serving(each, gateway)


# --- the same through the Lambda handler ----------------------------------------------------------
def _lambda_client_cases(era: str) -> st.SearchStrategy[Case]:
    return st.one_of(
        _not_json_cases(era),
        _not_one_request_cases(era),
        _meta_cases(era),
        _arguments_not_object_cases(era),
        _cursor_cases(era),
        _unknown_tool_cases(era),
        _header_cases(era, raw_bytes=False),
    )


def _anchor(era: str, raw: bytes, expect: Expect, note: str, request_id: Any = NO_ID) -> Case:
    return Case(era, raw, expect, request_id, "tools/call", "rec__echo", note=note)


def _echo_text(era: str) -> str:
    return dumps(request_body(era, "tools/call", ECHO))


LAMBDA_ANCHORS = (
    _anchor(LEGACY, _echo_text(LEGACY).encode("utf-16"), PARSE, "the request in utf-16"),
    _anchor(
        MODERN,
        dumps(marked_request(MODERN, "id")).encode().replace(MARK.encode(), b"\xed\xa0\x80"),
        PARSE,
        "a UTF-8-encoded surrogate in the id",
    ),
    _anchor(
        LEGACY,
        dumps(marked_request(LEGACY, "tool name")).replace(MARK, "\\ud800").encode(),
        PARSE,
        "a lone surrogate escape in the tool name",
    ),
    _anchor(MODERN, with_raw_value(valued_request(MODERN, "argument value"), "NaN").encode(), PARSE, "NaN"),
    _anchor(MODERN, deep_text(3000, "array").encode(), TOO_DEEP, "nested 3000 deep"),
    _anchor(LEGACY, dumps([request_body(LEGACY, "tools/call", ECHO)]).encode(), NOT_ONE_REQUEST, "a batch"),
)
"""Shapes the Lambda path always gets, whatever else Hypothesis draws for it."""


def with_examples(*cases: Case) -> Callable[[Callable[[Case], None]], Callable[[Case], None]]:
    """Hypothesis's `@example(case=...)` for each of `cases`: they run first, every time."""

    def apply(test: Callable[[Case], None]) -> Callable[[Case], None]:
        for case in reversed(cases):
            test = example(case=case)(test)
        return test

    return apply


def test_through_lambda_malformed_client_input_gets_the_same_well_formed_answers(lambda_gateway: Gateway) -> None:
    @given(case=for_both_eras(_lambda_client_cases))
    @examples(60)
    @with_examples(*LAMBDA_ANCHORS)
    def each(case: Case) -> None:
        note(repr(case))
        if case.note == "headers":
            assert_header_answer(lambda_gateway.send(case), case)
        else:
            assert_expected(lambda_gateway.send(case), case)

    then_still_serving(each, lambda_gateway)


def test_through_lambda_malformed_upstream_answers_are_a_502_and_errors_are_relayed(lambda_gateway: Gateway) -> None:
    check = _scripted_example(lambda_gateway)

    @given(era=ERA, answer=st.one_of(MALFORMED_ANSWERS, ERROR_ANSWERS, STATUS_ANSWERS), request_id=REQUEST_IDS)
    @examples(40)
    def each(era: str, answer: Scripted, request_id: Any) -> None:
        check(era, answer, request_id)

    then_still_serving(each, lambda_gateway)
