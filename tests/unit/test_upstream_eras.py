"""Which era the gateway speaks with each upstream, and how long it remembers what it learned.

`protocol: auto` probes with `server/discover`, falls back to `initialize`, and asks a 2026-07-28
upstream whether it also speaks the 2025 era only when a 2025-era caller needs it: once per
instance. `protocol: 2026-07-28` and `protocol: legacy` never send the other era's handshake. A
probe nobody answered (connection refused, timed out) is remembered for `probe_retry_seconds`.

The upstreams are in-memory stand-ins behind `httpx.MockTransport` (see test_upstream_wire.py);
each test counts the requests they received.
"""

from __future__ import annotations

import time

import httpx
import pytest
from tollway import spec as c

from tests.unit.test_upstream_wire import (
    LEGACY,
    MODERN,
    REFUSED,
    TIMED_OUT,
    UNAVAILABLE,
    Answer,
    Gateway,
    McpStandIn,
    error,
    hang,
    refused,
    status,
    text,
    texts,
    tool_names,
)
from tests.unit.wire import assert_http_error

NO_UPSTREAM = "No upstream is available"


def _sent_in(stand_in: McpStandIn, method: str) -> list[httpx.Request]:
    return [request for m, request in stand_in.requests if m == method]


# --- protocol: auto ---------------------------------------------------------------------------------
REFUSING_INITIALIZE: dict[str, Answer] = {
    "method-not-found": error({"code": c.METHOD_NOT_FOUND, "message": "Method not found"}),
    "unsupported-version-400": error(
        {"code": c.UNSUPPORTED_PROTOCOL_VERSION, "message": "Unsupported protocol version"}, status=400
    ),
    "404-page": text(lambda i: "<h1>Not Found</h1>", status=404, content_type="text/html"),
}


@pytest.mark.parametrize("refusal", REFUSING_INITIALIZE.values(), ids=REFUSING_INITIALIZE.keys())
def test_a_2026_only_upstream_serves_2025_era_sessions_through_the_2026_path(
    monkeypatch: pytest.MonkeyPatch, refusal: Answer
) -> None:
    stand_in = McpStandIn(legacy=False).on("initialize", refusal)
    gateway = Gateway(monkeypatch, stand_in)
    session = gateway.open_session()

    listed = gateway.in_session(session, "tools/list")
    called = gateway.in_session(session, "tools/call", {"name": "x__echo", "arguments": {}})

    assert tool_names(listed) == ["x__echo"]
    assert texts(called) == ["echo ran"]
    (call,) = _sent_in(stand_in, "tools/call")
    assert call.headers[c.PROTOCOL_VERSION_HEADER] == MODERN
    assert call.headers[c.METHOD_HEADER] == "tools/call"
    assert call.headers[c.NAME_HEADER] == "echo"
    assert c.SESSION_ID_HEADER not in call.headers


def test_a_2026_only_upstream_is_asked_for_the_2025_era_once_per_instance_not_per_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_in = McpStandIn(legacy=False)
    gateway = Gateway(monkeypatch, stand_in)
    first, second = gateway.open_session(), gateway.open_session()

    for session in (first, second, first):
        assert tool_names(gateway.in_session(session, "tools/list")) == ["x__echo"]
        assert texts(gateway.in_session(session, "tools/call", {"name": "x__echo", "arguments": {}})) == ["echo ran"]

    assert stand_in.count("initialize") == 1
    assert stand_in.count("server/discover") == 1
    assert stand_in.count("tools/call") == 3


REFUSING_DISCOVER: dict[str, Answer] = {
    "method-not-found": error({"code": c.METHOD_NOT_FOUND, "message": "Method not found"}),
    "no-session-400": text(
        lambda i: (
            '{"jsonrpc":"2.0","id":"server-error","error":{"code":-32600,"message":"Bad Request: No valid '
            'session ID provided"}}'
        ),
        status=400,
    ),
    "405-page": text(lambda i: "Method Not Allowed", status=405, content_type="text/plain"),
    "without-2026-07-28": lambda message, request: httpx.Response(
        200, json={"jsonrpc": "2.0", "id": message["id"], "result": {"supportedVersions": ["2025-11-25"]}}
    ),
}


@pytest.mark.parametrize("refusal", REFUSING_DISCOVER.values(), ids=REFUSING_DISCOVER.keys())
def test_a_2025_only_upstream_serves_2026_callers_in_a_session_of_its_era(
    monkeypatch: pytest.MonkeyPatch, refusal: Answer
) -> None:
    stand_in = McpStandIn(modern=False).on("server/discover", refusal)
    gateway = Gateway(monkeypatch, stand_in)

    listed = gateway.tools()
    called = gateway.call()
    again = gateway.call()

    assert tool_names(listed) == ["x__echo"]
    assert texts(called) == texts(again) == ["echo ran"]
    assert stand_in.count("server/discover") == 1
    calls = _sent_in(stand_in, "tools/call")
    assert [r.headers[c.PROTOCOL_VERSION_HEADER] for r in calls] == [LEGACY, LEGACY]
    assert all(r.headers[c.SESSION_ID_HEADER].startswith("x-") for r in calls)
    assert all(c.METHOD_HEADER not in r.headers for r in calls)


def test_a_2025_only_upstream_opens_one_session_for_a_sessionless_caller_after_its_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_in = McpStandIn(modern=False)
    gateway = Gateway(monkeypatch, stand_in)

    for _ in range(3):
        assert texts(gateway.call()) == ["echo ran"]

    # the probe's own session is ended at once; then one session for the caller
    assert stand_in.count("initialize") == 2
    assert stand_in.count("DELETE") == 1


def test_an_upstream_that_speaks_no_era_is_an_invalid_response(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = McpStandIn(modern=False, legacy=False)
    gateway = Gateway(monkeypatch, stand_in)

    response = gateway.call()

    error_ = assert_http_error(
        response, 502, c.INTERNAL_ERROR, message="Upstream 'x' speaks no MCP era the gateway knows", request_id=1
    )
    assert error_["data"] == {"upstream": "x"}


# --- pinned eras ----------------------------------------------------------------------------------
def test_protocol_2026_07_28_never_sends_initialize(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = McpStandIn()  # it would answer initialize
    gateway = Gateway(monkeypatch, stand_in, protocol="2026-07-28")
    session = gateway.open_session()

    assert tool_names(gateway.in_session(session, "tools/list")) == ["x__echo"]
    assert texts(gateway.in_session(session, "tools/call", {"name": "x__echo", "arguments": {}})) == ["echo ran"]
    assert tool_names(gateway.tools()) == ["x__echo"]
    assert texts(gateway.call()) == ["echo ran"]

    assert stand_in.count("initialize") == 0
    assert stand_in.count("server/discover") == 1
    assert all(r.headers[c.PROTOCOL_VERSION_HEADER] == MODERN for _, r in stand_in.requests)


def test_protocol_2026_07_28_with_an_upstream_that_does_not_discover_is_an_invalid_response(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_in = McpStandIn(modern=False)
    gateway = Gateway(monkeypatch, stand_in, protocol="2026-07-28")

    response = gateway.call()

    assert_http_error(
        response, 502, c.INTERNAL_ERROR, message="Upstream 'x' does not answer server/discover", request_id=1
    )
    assert stand_in.count("initialize") == 0


def test_protocol_legacy_never_sends_server_discover(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = McpStandIn()  # it would answer server/discover
    gateway = Gateway(monkeypatch, stand_in, protocol="legacy")
    session = gateway.open_session()

    discovered = gateway.modern("server/discover")
    assert discovered.status_code == 200, discovered.text
    assert tool_names(gateway.tools()) == ["x__echo"]
    assert texts(gateway.call()) == ["echo ran"]
    assert tool_names(gateway.in_session(session, "tools/list")) == ["x__echo"]
    assert texts(gateway.in_session(session, "tools/call", {"name": "x__echo", "arguments": {}})) == ["echo ran"]

    assert stand_in.count("server/discover") == 0
    assert all(r.headers.get(c.PROTOCOL_VERSION_HEADER) != MODERN for _, r in stand_in.requests)


# --- failed probes ----------------------------------------------------------------------------------
RETRY_AFTER = 0.2
"""`probe_retry_seconds` in these tests."""


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (refused(), (502, c.INTERNAL_ERROR, UNAVAILABLE)),
        (hang(), (504, c.REQUEST_TIMEOUT, TIMED_OUT)),
    ],
    ids=["connection-refused", "timed-out"],
)
def test_a_failed_probe_is_remembered_for_probe_retry_seconds_then_tried_again(
    monkeypatch: pytest.MonkeyPatch, failure: Answer, expected: tuple[int, int, str]
) -> None:
    stand_in = McpStandIn().on("server/discover", failure, times=1)
    gateway = Gateway(
        monkeypatch,
        stand_in,
        timeout_seconds=0.3,
        probe_retry_seconds=RETRY_AFTER,
        retries=0,
        circuit={"failure_threshold": 100},
    )
    status_, code, message = expected

    first = gateway.call()
    failed_at = time.monotonic()
    within = [gateway.call(), gateway.tools()]
    probes_within = stand_in.count("server/discover")
    time.sleep(max(0.0, failed_at + RETRY_AFTER + 0.05 - time.monotonic()))
    after = gateway.call()

    assert_http_error(first, status_, code, message=message, request_id=1)
    assert_http_error(within[0], status_, code, message=message, request_id=1)
    assert_http_error(within[1], 503, c.INTERNAL_ERROR, message=NO_UPSTREAM, request_id=1)
    assert probes_within == 1
    assert texts(after) == ["echo ran"]
    assert stand_in.count("server/discover") == 2
    assert stand_in.count("initialize") == 0  # nobody answered: that says nothing about the era


def test_a_failed_probe_answers_at_once_while_it_is_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = McpStandIn().on("server/discover", hang())
    gateway = Gateway(monkeypatch, stand_in, timeout_seconds=0.3, probe_retry_seconds=30, retries=0)
    gateway.call()

    response = gateway.call()

    assert_http_error(response, 504, c.REQUEST_TIMEOUT, message=TIMED_OUT, request_id=1)
    assert stand_in.count("server/discover") == 1  # answered from memory: no second probe to wait for


@pytest.mark.parametrize("code", [401, 403])
def test_a_probe_refused_for_credentials_is_not_remembered_as_a_missing_era(
    monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    stand_in = McpStandIn().on("server/discover", status(code), times=1)
    gateway = Gateway(monkeypatch, stand_in, probe_retry_seconds=30)

    refused_ = gateway.call()
    fixed = gateway.call()

    assert_http_error(refused_, 502, c.INTERNAL_ERROR, message=REFUSED, request_id=1)
    assert texts(fixed) == ["echo ran"]
    assert stand_in.count("server/discover") == 2
    assert stand_in.count("initialize") == 0


def test_an_invalid_probe_answer_under_protocol_auto_falls_back_to_initialize(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_in = McpStandIn().on("server/discover", text(lambda i: "<html>", content_type="text/html"))
    gateway = Gateway(monkeypatch, stand_in)

    assert texts(gateway.call()) == ["echo ran"]

    assert stand_in.count("server/discover") == 1
    assert stand_in.count("initialize") == 2  # the probe's session, then the caller's
