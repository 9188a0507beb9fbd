"""An upstream that misbehaves in every way a server can: the caller gets one clear error, in time,
and the gateway keeps serving the healthy upstream next to it.

Each gateway is the app in-process (Starlette's TestClient, in-memory stores) in front of two
real HTTP upstreams on 127.0.0.1: `faulty` (tests/fixtures/faulty_upstream.py, whose tools fail as
their names say) and `rec`, a healthy RecordingUpstream. Every scenario gets a fresh gateway, so
nothing learned (eras, circuit state, catalogs) carries over; the faulty upstream's circuit
threshold is raised and its retries switched off, so the answers and their timing depend only on
the fault.

Callers come in three kinds: a 2026-07-28 client (stateless), and 2025-era session clients that
accept `application/json, text/event-stream` or only `application/json`. A failed call is one
JSON-RPC error object answered as JSON; only to a client that accepts SSE, once the gateway has
already started an event stream, may it be the stream's last event instead. Timing is checked
only as a generous bound: a timed-out request ends within the upstream's budget plus 1.5 s.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.config import parse_config
from tollway.http import create_app
from tollway.store import Stores

from tests.conftest import config_data
from tests.fixtures.faulty_upstream import (
    BEHAVIOURS,
    INVALID_TOOLS,
    LEAKY_ERROR_CODE,
    PII_EMAIL,
    FaultyUpstream,
)
from tests.fixtures.memory_upstream import final_message, is_sse, sse_messages
from tests.fixtures.recording_upstream import Caller, RecordingUpstream
from tests.unit.wire import _LEAKS, assert_error, assert_http_error

TIMEOUT = 0.8
"""`timeout_seconds` of the faulty upstream."""
BOUND = TIMEOUT + 1.5
"""A request that meets a timeout must be over within this many seconds, everything included."""
MAX_RESPONSE_BYTES = 1_000_000
ERAS = ("2026-07-28", "2025-sse", "2025-json")
"""The three kinds of client: stateless; session accepting SSE; session accepting JSON only."""
HEALTHY = {"rec__echo", "rec__whoami"}
FAULTY_TOOLS = {f"faulty__{name}" for name in BEHAVIOURS}
LIFETIME = 1800.0
FAULTY_SETTINGS: dict[str, Any] = {
    "timeout_seconds": TIMEOUT,
    "retries": 0,
    "circuit": {"failure_threshold": 100},
}

TIMED_OUT = "Upstream 'faulty' timed out"
UNAVAILABLE = "Upstream 'faulty' is unavailable"
INVALID = "Upstream 'faulty' returned an invalid response"
TOO_LARGE = "Upstream 'faulty' returned a response larger than the gateway's limit"
INVALID_RESPONSES = (
    "not_json",
    "wrong_content_type",
    "error_string",
    "error_code_string",
    "error_no_message",
    "result_not_object",
    "result_bad_content",
    "nan",
    "wrong_id",
    "cut_stream",
)


# --- clients ---------------------------------------------------------------------------------------
class EraCaller(Caller):
    """A Caller with its own Accept header and client capabilities (anonymous: no token)."""

    def __init__(self, client: TestClient, accept: str, capabilities: dict[str, Any] | None = None) -> None:
        super().__init__(client, None)
        self.accept = accept
        self.capabilities = capabilities or {}

    def headers(self, **extra: str) -> dict[str, str]:
        return {**super().headers(**extra), "accept": self.accept}

    def initialize(self, version: str = "2025-11-25") -> Any:
        params = {"protocolVersion": version, "capabilities": self.capabilities, "clientInfo": _CLIENT_INFO}
        body = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}
        return self.client.post("/mcp", content=json.dumps(body), headers=self.headers())


_CLIENT_INFO = {"name": "fault-tests", "version": "1"}


@dataclass
class Client:
    """One client of one gateway, in one of `ERAS`; a 2025-era client opens its session on first use."""

    caller: EraCaller
    era: str
    session: str | None = field(default=None)

    @property
    def accepts_sse(self) -> bool:
        return c.CONTENT_TYPE_SSE in self.caller.accept

    def send(self, method: str, params: dict[str, Any] | None = None, *, request_id: Any = 1) -> Any:
        if self.era == "2026-07-28":
            return self.caller.modern(method, params, request_id=request_id)
        if self.session is None:
            self.session = self.caller.open_session()
        return self.caller.legacy(method, params, session=self.session, request_id=request_id)

    def timed(self, method: str, params: dict[str, Any] | None = None, *, request_id: Any = 1) -> tuple[Any, float]:
        """The answer, and how long it took (the session is opened first, outside the clock)."""
        if self.era != "2026-07-28" and self.session is None:
            self.session = self.caller.open_session()
        started = time.monotonic()
        response = self.send(method, params, request_id=request_id)
        return response, time.monotonic() - started

    def call(self, tool: str, arguments: dict[str, Any] | None = None, *, request_id: Any = 1) -> Any:
        return self.send("tools/call", {"name": tool, "arguments": arguments or {}}, request_id=request_id)


@dataclass
class Gateway:
    http: TestClient

    def client(self, era: str, *, capabilities: dict[str, Any] | None = None) -> Client:
        accept = "application/json" if era == "2025-json" else f"{c.CONTENT_TYPE_JSON}, {c.CONTENT_TYPE_SSE}"
        return Client(EraCaller(self.http, accept, capabilities), era)


# --- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def faulty() -> Iterator[FaultyUpstream]:
    """The faulty upstream with its defaults: every behaviour as a tool, both eras."""
    with FaultyUpstream().running(lifetime=LIFETIME) as upstream:
        yield upstream


@pytest.fixture
def start_faulty() -> Iterator[Callable[..., FaultyUpstream]]:
    """A faulty upstream of this test's own (`FaultyUpstream(**options)`), stopped after it."""
    with contextlib.ExitStack() as stack:

        def start(**options: Any) -> FaultyUpstream:
            return stack.enter_context(FaultyUpstream(**options).running(lifetime=300))

        yield start


@pytest.fixture
def start_gateway(recorder: RecordingUpstream) -> Iterator[Callable[..., Gateway]]:
    """A fresh gateway in front of `faulty` (at `faulty_url`, with FAULTY_SETTINGS and `settings`)
    and the healthy `rec`."""
    with contextlib.ExitStack() as stack:

        def start(faulty_url: str, *, masking: bool = False, streaming: bool = True, **settings: Any) -> Gateway:
            data = config_data({"faulty": faulty_url, "rec": recorder.url}, masking={"enabled": masking})
            data["upstreams"][0].update({**FAULTY_SETTINGS, **settings})
            data["upstreams"][1]["timeout_seconds"] = 10.0
            app = create_app(parse_config(data), stores=Stores.memory(), streaming=streaming)
            return Gateway(stack.enter_context(TestClient(app, raise_server_exceptions=False)))

        yield start


def assert_fault_answer(
    response: Any, client: Client, *, status: int, code: int, message: str, request_id: Any
) -> dict[str, Any]:
    """One well-formed JSON-RPC error with this status, code and message, as JSON; or, to a client
    that accepts SSE and got a stream the gateway had already started, as its last event."""
    if is_sse(response):
        assert client.accepts_sse, f"an event stream to a client that does not accept one: {response.text[:500]}"
        assert response.status_code == 200, response.status_code
        for leak in _LEAKS:
            assert leak not in response.text, f"{leak!r} leaked into {response.text[:2000]}"
        final = json.dumps(final_message(response))
        json_type = {"content-type": c.CONTENT_TYPE_JSON}
        return assert_error(
            200, json_type, final, expected_status=200, code=code, message=message, request_id=request_id
        )
    return assert_http_error(response, status, code, message=message, request_id=request_id)


def assert_names_faulty(error: dict[str, Any]) -> None:
    assert isinstance(error.get("data"), dict), error
    assert error["data"].get("upstream") == "faulty", error


def tool_names(response: Any) -> set[str]:
    assert response.status_code == 200, response.text[:2000]
    message = final_message(response)
    assert "result" in message, message
    return {tool["name"] for tool in message["result"]["tools"]}


def assert_still_serves_the_healthy_upstream(client: Client) -> None:
    """The same gateway, after the fault: lists the healthy upstream's tools and calls them."""
    assert tool_names(client.send("tools/list", request_id=901)) >= HEALTHY
    response = client.call("rec__echo", {"text": "still here"}, request_id=902)
    assert response.status_code == 200, response.text[:2000]
    answer = final_message(response)
    assert answer.get("id") == 902, answer
    result = answer.get("result")
    assert isinstance(result, dict) and result.get("isError") is not True, answer
    assert "still here" in result["content"][0]["text"]


def assert_within(elapsed: float, bound: float = BOUND) -> None:
    assert elapsed <= bound, f"the request took {elapsed:.1f} s; the budget is {TIMEOUT} s (bound {bound} s)"


# --- a healthy call, for contrast --------------------------------------------------------------
@pytest.mark.parametrize("era", ERAS)
def test_a_well_behaved_tool_of_the_faulty_upstream_answers_normally(
    start_gateway: Callable[..., Gateway], faulty: FaultyUpstream, era: str
) -> None:
    client = start_gateway(faulty.url).client(era)

    response = client.call("faulty__ok", request_id=11)

    assert response.status_code == 200, response.text
    answer = final_message(response)
    assert answer["id"] == 11
    assert answer["result"]["content"][0]["text"] == "ok: done"
    assert tool_names(client.send("tools/list", request_id=12)) == FAULTY_TOOLS | HEALTHY


@pytest.mark.parametrize("era", ERAS)
def test_a_slow_tool_within_its_budget_answers_normally(
    start_gateway: Callable[..., Gateway], faulty: FaultyUpstream, era: str
) -> None:
    client = start_gateway(faulty.url).client(era)

    response = client.call("faulty__slow_ok", {"seconds": 0.3}, request_id=13)

    assert response.status_code == 200, response.text
    assert final_message(response)["result"]["content"][0]["text"] == "slow_ok: done"


# --- timeouts ------------------------------------------------------------------------------------
@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize(
    ("tool", "arguments"),
    [("hang", {}), ("drip", {}), ("slow_ok", {"seconds": 5})],
    ids=["hang", "drip", "slow_ok"],
)
def test_a_tool_that_does_not_answer_in_time_answers_a_timeout_within_its_budget(
    start_gateway: Callable[..., Gateway], faulty: FaultyUpstream, era: str, tool: str, arguments: dict[str, Any]
) -> None:
    """The very first routed request on a fresh gateway: the era probe and the catalog included."""
    client = start_gateway(faulty.url).client(era)
    before = len(faulty.tool_calls(tool))

    response, elapsed = client.timed("tools/call", {"name": f"faulty__{tool}", "arguments": arguments}, request_id=21)

    error = assert_fault_answer(response, client, status=504, code=c.REQUEST_TIMEOUT, message=TIMED_OUT, request_id=21)
    assert_names_faulty(error)
    assert_within(elapsed)
    assert len(faulty.tool_calls(tool)) == before + 1
    assert_still_serves_the_healthy_upstream(client)


@pytest.mark.parametrize("era", ERAS)
def test_a_hung_tool_answers_a_timeout_within_its_budget_on_a_buffered_gateway_too(
    start_gateway: Callable[..., Gateway], faulty: FaultyUpstream, era: str
) -> None:
    """As on Lambda: no streaming, so nothing can be relayed to the client."""
    client = start_gateway(faulty.url, streaming=False).client(era)

    response, elapsed = client.timed("tools/call", {"name": "faulty__hang", "arguments": {}}, request_id=22)

    error = assert_fault_answer(response, client, status=504, code=c.REQUEST_TIMEOUT, message=TIMED_OUT, request_id=22)
    assert_names_faulty(error)
    assert_within(elapsed)
    assert_still_serves_the_healthy_upstream(client)


@pytest.mark.parametrize("era", ERAS)
def test_a_second_hung_call_costs_one_budget_too(
    start_gateway: Callable[..., Gateway], faulty: FaultyUpstream, era: str
) -> None:
    client = start_gateway(faulty.url).client(era)
    client.call("faulty__hang", request_id=23)

    response, elapsed = client.timed("tools/call", {"name": "faulty__hang", "arguments": {}}, request_id=24)

    assert_fault_answer(response, client, status=504, code=c.REQUEST_TIMEOUT, message=TIMED_OUT, request_id=24)
    assert_within(elapsed)


@pytest.mark.parametrize("era", ERAS)
def test_a_list_answers_within_its_budget_with_the_healthy_tools_while_an_upstream_list_hangs(
    start_gateway: Callable[..., Gateway], start_faulty: Callable[..., FaultyUpstream], era: str
) -> None:
    faulty = start_faulty(list_fault="hang")
    client = start_gateway(faulty.url).client(era)

    response, elapsed = client.timed("tools/list", request_id=25)

    assert tool_names(response) == HEALTHY
    assert_within(elapsed)
    response = client.call("rec__echo", {"text": "still here"}, request_id=26)
    assert "still here" in final_message(response)["result"]["content"][0]["text"]


@pytest.mark.parametrize("era", ERAS)
def test_a_list_answers_within_its_budget_while_an_upstream_streams_only_keepalives(
    start_gateway: Callable[..., Gateway], start_faulty: Callable[..., FaultyUpstream], era: str
) -> None:
    faulty = start_faulty(list_fault="drip")
    client = start_gateway(faulty.url).client(era)

    response, elapsed = client.timed("tools/list", request_id=27)

    assert tool_names(response) == HEALTHY
    assert_within(elapsed)


@pytest.mark.parametrize("era", ERAS)
def test_an_upstream_whose_handshake_hangs_costs_one_budget_not_two(
    start_gateway: Callable[..., Gateway], start_faulty: Callable[..., FaultyUpstream], era: str
) -> None:
    """server/discover and initialize both hang: the era probe must not wait for each in turn."""
    faulty = start_faulty(discover_fault="hang", initialize_fault="hang")
    gateway = start_gateway(faulty.url)
    client = gateway.client(era)

    response, elapsed = client.timed("tools/call", {"name": "faulty__ok", "arguments": {}}, request_id=28)

    error = assert_fault_answer(response, client, status=504, code=c.REQUEST_TIMEOUT, message=TIMED_OUT, request_id=28)
    assert_names_faulty(error)
    assert_within(elapsed)
    lister = gateway.client(era)
    response, elapsed = lister.timed("tools/list", request_id=29)
    assert tool_names(response) == HEALTHY
    assert_within(elapsed)


@pytest.mark.parametrize("era", ERAS)
def test_an_upstream_that_ignores_server_discover_costs_one_budget_not_two(
    start_gateway: Callable[..., Gateway], start_faulty: Callable[..., FaultyUpstream], era: str
) -> None:
    """server/discover hangs (initialize would answer): the probe ends with the request's budget."""
    faulty = start_faulty(discover_fault="hang")
    client = start_gateway(faulty.url).client(era)

    response, elapsed = client.timed("tools/call", {"name": "faulty__ok", "arguments": {}}, request_id=30)

    error = assert_fault_answer(response, client, status=504, code=c.REQUEST_TIMEOUT, message=TIMED_OUT, request_id=30)
    assert_names_faulty(error)
    assert_within(elapsed)
    assert_still_serves_the_healthy_upstream(client)


@pytest.mark.parametrize("era", ERAS)
def test_a_call_whose_upstream_list_hangs_answers_a_timeout_within_one_budget(
    start_gateway: Callable[..., Gateway], start_faulty: Callable[..., FaultyUpstream], era: str
) -> None:
    """The gateway looks the tool up in the upstream's list before calling it: that list and the
    call share the request's one budget."""
    faulty = start_faulty(list_fault="hang")
    client = start_gateway(faulty.url).client(era)

    response, elapsed = client.timed("tools/call", {"name": "faulty__ok", "arguments": {}}, request_id=33)

    error = assert_fault_answer(response, client, status=504, code=c.REQUEST_TIMEOUT, message=TIMED_OUT, request_id=33)
    assert_names_faulty(error)
    assert_within(elapsed)
    assert_still_serves_the_healthy_upstream(client)


@pytest.mark.parametrize("era", ERAS)
def test_an_upstream_whose_initialize_hangs_costs_one_budget_at_most(
    start_gateway: Callable[..., Gateway], start_faulty: Callable[..., FaultyUpstream], era: str
) -> None:
    """server/discover answers, initialize hangs: a 2026-07-28 client never needs initialize; a
    2025-era client's call (which opens an upstream session) times out within its budget."""
    faulty = start_faulty(initialize_fault="hang")
    client = start_gateway(faulty.url).client(era)

    response, elapsed = client.timed("tools/call", {"name": "faulty__ok", "arguments": {}}, request_id=34)

    assert_within(elapsed)
    if era == "2026-07-28":
        assert response.status_code == 200, response.text[:2000]
        assert final_message(response)["result"]["content"][0]["text"] == "ok: done"
    else:
        error = assert_fault_answer(
            response, client, status=504, code=c.REQUEST_TIMEOUT, message=TIMED_OUT, request_id=34
        )
        assert_names_faulty(error)
    assert_still_serves_the_healthy_upstream(client)


# --- unavailable -----------------------------------------------------------------------------------
@pytest.mark.parametrize("era", ERAS)
def test_a_tool_that_fails_with_http_500_answers_that_the_upstream_is_unavailable(
    start_gateway: Callable[..., Gateway], faulty: FaultyUpstream, era: str
) -> None:
    client = start_gateway(faulty.url).client(era)
    before = len(faulty.tool_calls("http_500"))

    response = client.call("faulty__http_500", request_id=31)

    error = assert_fault_answer(response, client, status=502, code=c.INTERNAL_ERROR, message=UNAVAILABLE, request_id=31)
    assert_names_faulty(error)
    assert len(faulty.tool_calls("http_500")) == before + 1
    assert_still_serves_the_healthy_upstream(client)


@pytest.mark.parametrize("era", ERAS)
def test_calling_an_upstream_that_refuses_connections_answers_that_it_is_unavailable(
    start_gateway: Callable[..., Gateway], dead_url: str, era: str
) -> None:
    client = start_gateway(dead_url).client(era)

    response, elapsed = client.timed("tools/call", {"name": "faulty__ok", "arguments": {}}, request_id=32)

    error = assert_fault_answer(response, client, status=502, code=c.INTERNAL_ERROR, message=UNAVAILABLE, request_id=32)
    assert_names_faulty(error)
    assert_within(elapsed)
    assert_still_serves_the_healthy_upstream(client)


@pytest.mark.parametrize("era", ERAS)
def test_a_failed_tool_call_is_never_repeated_upstream(
    start_gateway: Callable[..., Gateway], start_faulty: Callable[..., FaultyUpstream], era: str
) -> None:
    """Retries are for lists and requests that never reached the upstream: a tool may have done
    its work before it failed."""
    faulty = start_faulty()
    client = start_gateway(faulty.url, retries=2).client(era)

    response = client.call("faulty__http_500", request_id=35)

    assert_fault_answer(response, client, status=502, code=c.INTERNAL_ERROR, message=UNAVAILABLE, request_id=35)
    assert len(faulty.tool_calls("http_500")) == 1


def test_a_failed_upstream_list_is_retried_and_then_left_out(
    start_gateway: Callable[..., Gateway], start_faulty: Callable[..., FaultyUpstream]
) -> None:
    faulty = start_faulty(list_fault="http_500")
    client = start_gateway(faulty.url, retries=2).client("2026-07-28")

    response, elapsed = client.timed("tools/list", request_id=36)

    assert tool_names(response) == HEALTHY
    assert len(faulty.calls("tools/list")) == 3
    assert_within(elapsed)


@pytest.mark.parametrize("era", ERAS)
def test_after_consecutive_failures_calls_fail_fast_until_the_circuit_recovers(
    start_gateway: Callable[..., Gateway], start_faulty: Callable[..., FaultyUpstream], era: str
) -> None:
    faulty = start_faulty()
    client = start_gateway(faulty.url, circuit={"failure_threshold": 2, "recovery_seconds": 30}).client(era)
    for request_id in (37, 38):
        response = client.call("faulty__http_500", request_id=request_id)
        assert_fault_answer(
            response, client, status=502, code=c.INTERNAL_ERROR, message=UNAVAILABLE, request_id=request_id
        )

    response, elapsed = client.timed("tools/call", {"name": "faulty__ok", "arguments": {}}, request_id=39)

    error = assert_http_error(response, 503, c.INTERNAL_ERROR, contains="'faulty'", request_id=39)
    assert_names_faulty(error)
    assert int(response.headers["retry-after"]) >= 1
    assert not faulty.tool_calls("ok")
    assert elapsed < TIMEOUT
    assert_still_serves_the_healthy_upstream(client)


# --- invalid answers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("tool", INVALID_RESPONSES)
def test_a_tool_whose_answer_is_not_mcp_answers_that_the_upstream_returned_an_invalid_response(
    start_gateway: Callable[..., Gateway], faulty: FaultyUpstream, era: str, tool: str
) -> None:
    client = start_gateway(faulty.url).client(era)
    before = len(faulty.tool_calls(tool))

    response = client.call(f"faulty__{tool}", request_id=41)

    error = assert_fault_answer(response, client, status=502, code=c.INTERNAL_ERROR, message=INVALID, request_id=41)
    assert_names_faulty(error)
    assert len(faulty.tool_calls(tool)) == before + 1
    assert_still_serves_the_healthy_upstream(client)


@pytest.mark.parametrize("era", ERAS)
def test_a_tool_whose_answer_is_too_large_answers_the_gateways_limit(
    start_gateway: Callable[..., Gateway], faulty: FaultyUpstream, era: str
) -> None:
    client = start_gateway(faulty.url, max_response_bytes=MAX_RESPONSE_BYTES).client(era)

    response = client.call("faulty__huge", request_id=51)

    error = assert_fault_answer(response, client, status=502, code=c.INTERNAL_ERROR, message=TOO_LARGE, request_id=51)
    assert error.get("data", {}).get("maxBytes") == MAX_RESPONSE_BYTES, error
    assert len(response.content) < MAX_RESPONSE_BYTES
    assert_still_serves_the_healthy_upstream(client)


# --- an upstream's own error, and what it leaks --------------------------------------------------
@pytest.mark.parametrize("era", ERAS)
def test_an_upstream_error_is_relayed_masked_short_and_without_its_oversized_data(
    start_gateway: Callable[..., Gateway], faulty: FaultyUpstream, era: str
) -> None:
    client = start_gateway(faulty.url, masking=True).client(era)

    response = client.call("faulty__leaky_error", request_id=61)

    assert PII_EMAIL not in response.text
    if era != "2026-07-28":
        assert response.status_code == 200, response.text[:2000]
    answer = final_message(response)
    assert set(answer) == {"jsonrpc", "id", "error"}, answer
    assert answer["id"] == 61
    error = answer["error"]
    assert error["code"] == LEAKY_ERROR_CODE, error
    assert isinstance(error["message"], str) and 0 < len(error["message"]) <= 500, len(error["message"])
    assert "data" not in error, error
    assert_still_serves_the_healthy_upstream(client)


def test_a_server_request_relayed_to_a_session_client_is_masked(
    start_gateway: Callable[..., Gateway], faulty: FaultyUpstream
) -> None:
    """2025 era, SSE-accepting client on a streaming gateway: the upstream's elicitation/create
    reaches the client on the call's event stream, with the email address masked."""
    gateway = start_gateway(faulty.url, masking=True, streaming=True)
    client = gateway.client("2025-sse", capabilities={"elicitation": {}})

    response = client.call("faulty__pii_elicitation", request_id=71)

    assert response.status_code == 200, response.text[:2000]
    assert is_sse(response), response.text[:2000]
    messages = sse_messages(response.text)
    asks = [m for m in messages if m.get("method") == "elicitation/create"]
    assert len(asks) == 1, messages
    assert str(asks[0]["id"]).startswith("tw:"), asks
    assert PII_EMAIL not in response.text
    assert messages[-1]["id"] == 71 and "result" in messages[-1], messages[-1]
    assert_still_serves_the_healthy_upstream(client)


# --- what an upstream lists ----------------------------------------------------------------------------
@pytest.mark.parametrize("invalid", INVALID_TOOLS)
def test_a_list_leaves_out_one_invalid_tool_definition_and_keeps_every_valid_one(
    start_gateway: Callable[..., Gateway], start_faulty: Callable[..., FaultyUpstream], invalid: str
) -> None:
    faulty = start_faulty(invalid_tools=[invalid])
    client = start_gateway(faulty.url).client("2026-07-28")

    assert tool_names(client.send("tools/list", request_id=81)) == FAULTY_TOOLS | HEALTHY


@pytest.mark.parametrize("era", ERAS)
def test_a_list_leaves_out_every_invalid_tool_definition_and_keeps_every_valid_one(
    start_gateway: Callable[..., Gateway], start_faulty: Callable[..., FaultyUpstream], era: str
) -> None:
    faulty = start_faulty(invalid_tools=INVALID_TOOLS)
    client = start_gateway(faulty.url).client(era)

    assert tool_names(client.send("tools/list", request_id=82)) == FAULTY_TOOLS | HEALTHY
    response = client.call("faulty__ok", request_id=83)
    assert final_message(response)["result"]["content"][0]["text"] == "ok: done"


def test_a_list_nested_deeper_than_any_json_parser_reads_leaves_out_that_upstream_only(
    start_gateway: Callable[..., Gateway], start_faulty: Callable[..., FaultyUpstream]
) -> None:
    # 30,000 schemas: past what Python's parser reads (about 1,000 levels on 3.11, 10,000 on
    # 3.13), so the page cannot be read item by item: the upstream is left out, the rest listed.
    faulty = start_faulty(invalid_tools=["schema_deep"], deep_levels=30_000)
    client = start_gateway(faulty.url).client("2026-07-28")

    assert tool_names(client.send("tools/list", request_id=85)) == HEALTHY


@pytest.mark.parametrize("era", ERAS)
def test_calling_a_tool_withheld_for_its_invalid_definition_is_an_unknown_tool(
    start_gateway: Callable[..., Gateway], start_faulty: Callable[..., FaultyUpstream], era: str
) -> None:
    faulty = start_faulty(invalid_tools=["schema_string"])
    client = start_gateway(faulty.url).client(era)

    response = client.call("faulty__schema_string", request_id=84)

    status = 400 if era == "2026-07-28" else 200
    assert_http_error(response, status, c.INVALID_PARAMS, contains="Unknown tool", request_id=84)
    assert not faulty.tool_calls("schema_string")


# --- an upstream that speaks only 2026-07-28 ---------------------------------------------------------
@pytest.mark.parametrize("era", ERAS)
def test_an_upstream_that_speaks_only_2026_07_28_serves_every_kind_of_client(
    start_gateway: Callable[..., Gateway], start_faulty: Callable[..., FaultyUpstream], era: str
) -> None:
    faulty = start_faulty(eras=("2026-07-28",))
    client = start_gateway(faulty.url).client(era)

    assert tool_names(client.send("tools/list", request_id=91)) == FAULTY_TOOLS | HEALTHY
    response = client.call("faulty__ok", request_id=92)

    assert response.status_code == 200, response.text[:2000]
    answer = final_message(response)
    assert answer["id"] == 92, answer
    assert answer["result"]["content"][0]["text"] == "ok: done"
    assert_still_serves_the_healthy_upstream(client)
