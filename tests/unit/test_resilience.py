"""Resilience per upstream: the circuit breaker, and retries only where repeating does no harm.

Circuit (`failure_threshold: 3, recovery_seconds: 0.3`): three consecutive failures (timeouts,
unavailable, invalid answers) open it; calls then fail at once with a retryable 503 and
`Retry-After`, without reaching the upstream; after `recovery_seconds` one call goes through as a
probe, and its outcome closes the circuit or opens it again. An upstream's own JSON-RPC error and
a refusal of the gateway's credentials are answers, not failures.

Retries (`retries: 2`, jittered backoff): lists; any request that never reached the upstream;
`tools/call` only of tools annotated `idempotentHint: true` or matched by `idempotent_tools` (on
the upstream's own name). Never once a message was relayed, never past the request's budget.

The upstreams are in-memory stand-ins behind `httpx.MockTransport` (see test_upstream_wire.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import anyio
import httpx
import pytest
from tollway import spec as c
from tollway.config import CircuitConfig, UpstreamConfig
from tollway.context import Deadline
from tollway.errors import UpstreamCircuitOpen, UpstreamUnavailable
from tollway.routing import resilience
from tollway.routing import router as router_module
from tollway.routing.resilience import CircuitBreaker
from tollway.routing.upstream import UpstreamClient

from tests.unit.test_upstream_wire import (
    CIRCUIT_OPEN,
    INVALID,
    TIMED_OUT,
    UNAVAILABLE,
    Answer,
    Chunks,
    Gateway,
    McpStandIn,
    dropped,
    error,
    event,
    hang,
    modern_request,
    progress,
    refused,
    result,
    status,
    streamed,
    text,
    texts,
    tool,
    tool_names,
    use_stand_ins,
)
from tests.unit.wire import assert_http_error

RECOVERY = 0.3
CIRCUIT = {"failure_threshold": 3, "recovery_seconds": RECOVERY}
T = 0.3
"""`timeout_seconds` in the circuit tests where a timeout is one of the failures."""
AMPLE = 10.0
"""`timeout_seconds` where no timeout is meant: a loaded machine (parallel test workers, the first
call compiling the argument validator) cannot turn a slow answer into one."""

FAILURES: dict[str, tuple[Answer, int, int, str]] = {
    "unavailable": (status(500), 502, c.INTERNAL_ERROR, UNAVAILABLE),
    "timeout": (hang(), 504, c.REQUEST_TIMEOUT, TIMED_OUT),
    "invalid": (text(lambda i: "<html>oops</html>", content_type="text/html"), 502, c.INTERNAL_ERROR, INVALID),
    "refused-connection": (refused(), 502, c.INTERNAL_ERROR, UNAVAILABLE),
}


def _circuit_gateway(monkeypatch: pytest.MonkeyPatch, *stand_ins: McpStandIn, timeout: float = AMPLE) -> Gateway:
    """`timeout`: T where a timeout is one of the failures, AMPLE otherwise."""
    gateway = Gateway(monkeypatch, *stand_ins, circuit=CIRCUIT, retries=0, timeout_seconds=timeout)
    for stand_in in stand_ins:  # era and catalog known: from here on, only calls reach the upstream
        assert f"{stand_in.name}__echo" in tool_names(gateway.tools())
    return gateway


def _assert_open(response: Any) -> None:
    error_ = assert_http_error(response, 503, c.INTERNAL_ERROR, message=CIRCUIT_OPEN, request_id=1)
    assert error_["data"] == {"upstream": "x", "retryable": True, "retryAfterSeconds": 1}
    assert response.headers["retry-after"] == "1"


def _open_circuit(gateway: Gateway, stand_in: McpStandIn, failure: str) -> None:
    answer, status_, code, message = FAILURES[failure]
    stand_in.on("tools/call", answer, times=3)
    for _ in range(3):
        assert_http_error(gateway.call(), status_, code, message=message, request_id=1)
    assert stand_in.count("tools/call") == 3


# --- the circuit breaker ------------------------------------------------------------------------------
@pytest.mark.parametrize("failure", FAILURES)
def test_three_consecutive_failures_open_the_circuit_and_the_next_call_fails_at_once(
    monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    stand_in = McpStandIn()
    gateway = _circuit_gateway(monkeypatch, stand_in, timeout=T if failure == "timeout" else AMPLE)
    _open_circuit(gateway, stand_in, failure)

    response = gateway.call()

    _assert_open(response)
    assert stand_in.count("tools/call") == 3  # it never reached the upstream: answered at once


def test_two_failures_do_not_open_the_circuit(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = McpStandIn().on("tools/call", status(500), times=2)
    gateway = _circuit_gateway(monkeypatch, stand_in)

    gateway.call()
    gateway.call()

    assert texts(gateway.call()) == ["echo ran"]
    assert stand_in.count("tools/call") == 3


def test_after_recovery_one_call_goes_through_and_its_success_closes_the_circuit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_in = McpStandIn()
    gateway = _circuit_gateway(monkeypatch, stand_in)
    _open_circuit(gateway, stand_in, "unavailable")
    _assert_open(gateway.call())

    time.sleep(RECOVERY + 0.05)

    assert texts(gateway.call()) == ["echo ran"]
    assert texts(gateway.call()) == ["echo ran"]
    assert stand_in.count("tools/call") == 5


def test_after_recovery_a_failed_probe_opens_the_circuit_again_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = McpStandIn()
    gateway = _circuit_gateway(monkeypatch, stand_in)
    _open_circuit(gateway, stand_in, "unavailable")
    stand_in.on("tools/call", status(500), times=1)
    time.sleep(RECOVERY + 0.05)

    probe = gateway.call()
    after = gateway.call()

    assert_http_error(probe, 502, c.INTERNAL_ERROR, message=UNAVAILABLE, request_id=1)
    _assert_open(after)
    assert stand_in.count("tools/call") == 4  # the probe only


def test_after_recovery_exactly_one_call_goes_through_while_the_probe_is_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_in = McpStandIn()
    gateway = _circuit_gateway(monkeypatch, stand_in)
    _open_circuit(gateway, stand_in, "unavailable")

    async def slow_success(message: dict[str, Any], request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.2)
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": message["id"], "result": {"content": []}})

    stand_in.on("tools/call", slow_success)
    time.sleep(RECOVERY + 0.05)
    payload, headers = modern_request("tools/call", {"name": "x__echo", "arguments": {}})

    async def three_at_once() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as caller:
            return list(await asyncio.gather(*(caller.post("/mcp", json=payload, headers=headers) for _ in range(3))))

    responses = asyncio.run(three_at_once())

    assert sorted(r.status_code for r in responses) == [200, 503, 503]
    for response in responses:
        if response.status_code == 503:
            _assert_open(response)
    assert stand_in.count("tools/call") == 4
    assert gateway.call().status_code == 200  # the probe succeeded: closed


TOOL_ERRORS: dict[str, Answer] = {
    "json-rpc-error": error({"code": -32000, "message": "Tool failed"}),
    "json-rpc-error-with-4xx": error({"code": c.INVALID_PARAMS, "message": "Bad region"}, status=400),
    "result-with-isError": result({"content": [{"type": "text", "text": "no such customer"}], "isError": True}),
    "credentials-refused-401": status(401),
    "credentials-refused-403": status(403),
}


@pytest.mark.parametrize("answer", TOOL_ERRORS.values(), ids=TOOL_ERRORS.keys())
def test_an_upstreams_own_error_or_a_credentials_refusal_is_not_a_failure(
    monkeypatch: pytest.MonkeyPatch, answer: Answer
) -> None:
    stand_in = McpStandIn().on("tools/call", answer, times=5)
    gateway = _circuit_gateway(monkeypatch, stand_in)

    for _ in range(5):
        assert gateway.call().status_code != 503

    assert texts(gateway.call()) == ["echo ran"]
    assert stand_in.count("tools/call") == 6


@pytest.mark.parametrize("answer", TOOL_ERRORS.values(), ids=TOOL_ERRORS.keys())
def test_an_answer_between_failures_means_they_are_not_consecutive(
    monkeypatch: pytest.MonkeyPatch, answer: Answer
) -> None:
    stand_in = McpStandIn()
    stand_in.on("tools/call", status(500), times=2).on("tools/call", answer, times=1)
    stand_in.on("tools/call", status(500), times=2)
    gateway = _circuit_gateway(monkeypatch, stand_in)

    for _ in range(5):
        gateway.call()

    assert texts(gateway.call()) == ["echo ran"]
    assert stand_in.count("tools/call") == 6


def test_an_open_circuit_leaves_other_upstreams_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = McpStandIn("x"), McpStandIn("y")
    gateway = _circuit_gateway(monkeypatch, x, y)
    _open_circuit(gateway, x, "unavailable")

    _assert_open(gateway.call("x__echo"))
    assert texts(gateway.call("y__echo")) == ["echo ran"]
    assert tool_names(gateway.tools()) == ["y__echo"]
    assert y.count("tools/call") == 1


def test_a_probe_of_the_era_that_succeeds_after_recovery_closes_the_circuit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The circuit opened on era probes nobody answered; the upstream is back. The first call
    after `recovery_seconds` probes the era (server/discover), then lists, then calls: all succeed."""
    stand_in = McpStandIn().on("server/discover", hang(), times=3)
    gateway = Gateway(monkeypatch, stand_in, circuit=CIRCUIT, retries=0, timeout_seconds=T, probe_retry_seconds=0)
    for _ in range(3):
        assert_http_error(gateway.call(), 504, c.REQUEST_TIMEOUT, message=TIMED_OUT, request_id=1)
    _assert_open(gateway.call())
    assert stand_in.count("server/discover") == 3
    time.sleep(RECOVERY + 0.05)

    response = gateway.call()

    assert texts(response) == ["echo ran"]
    assert stand_in.seen[3:] == ["server/discover", "tools/list", "tools/call"]


def test_a_successful_request_through_the_wire_client_is_recorded_as_healthy(monkeypatch: pytest.MonkeyPatch) -> None:
    """`UpstreamClient.request` (discover, initialize) returns at the response, before the
    exchange it iterates has ended: its success must still count as one."""
    stand_in = McpStandIn().on("tools/call", status(500), times=2)
    use_stand_ins(monkeypatch, stand_in)
    client = UpstreamClient(UpstreamConfig(name="x", url=stand_in.url, circuit=CIRCUIT))

    async def run() -> None:
        for _ in range(2):
            with pytest.raises(UpstreamUnavailable):
                await client.request(_call_message(), deadline=_deadline())
        await client.discover(_deadline())
        await anyio.sleep(0.05)  # let an abandoned exchange be closed, if it was

    asyncio.run(run())

    assert client.breaker._failures == 0


def _call_message() -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": "tw-call", "method": "tools/call", "params": {"name": "echo", "arguments": {}}}


def _deadline(seconds: float = 5.0) -> Deadline:
    return Deadline(time.monotonic() + seconds)


def test_the_breaker_lets_one_probe_by_after_recovery_and_counts_only_consecutive_failures() -> None:
    breaker = CircuitBreaker("x", CircuitConfig(failure_threshold=3, recovery_seconds=0.05))
    for _ in range(2):
        breaker.check()
        breaker.record(False)
    breaker.record(True)
    for _ in range(2):
        breaker.record(False)
    assert not breaker.open
    breaker.record(False)
    assert breaker.open
    with pytest.raises(UpstreamCircuitOpen):
        breaker.check()

    time.sleep(0.06)
    breaker.check()  # the probe
    with pytest.raises(UpstreamCircuitOpen):
        breaker.check()  # anyone else while it is in flight
    breaker.record(None)  # the probe's caller went away: another may probe
    breaker.check()
    breaker.record(True)
    assert not breaker.open
    breaker.check()


def test_backoff_is_jittered_exponential_from_100_ms() -> None:
    for attempt in range(4):
        pauses = [resilience.backoff(attempt) for _ in range(200)]
        assert all(0 <= p <= 0.1 * 2**attempt for p in pauses)
        assert max(pauses) > 0.05 * 2**attempt  # it spreads over the whole range
        assert len(set(pauses)) > 100


# --- retries --------------------------------------------------------------------------------------------
NO_CIRCUIT = {"failure_threshold": 1000, "recovery_seconds": 1}


def _retry_gateway(monkeypatch: pytest.MonkeyPatch, stand_in: McpStandIn, **settings: Any) -> Gateway:
    monkeypatch.setattr(router_module, "backoff", lambda attempt: 0.01)
    settings = {"retries": 2, "circuit": NO_CIRCUIT, "timeout_seconds": 2, **settings}
    return Gateway(monkeypatch, stand_in, **settings)


def _warm(gateway: Gateway, stand_in: McpStandIn) -> None:
    """Era known before the call (its catalog is fetched by the call's own lookup)."""
    assert tool_names(gateway.tools())
    stand_in.seen.clear()


LIST_FAULTS: dict[str, Answer] = {
    "5xx": status(503),
    "dropped-connection": dropped(),
    "stream-cut": streamed(
        lambda m: Chunks([b'{"jsonrpc":"2.0","id":'], then=httpx.ReadError("reset")), content_type="application/json"
    ),
    "connection-refused": refused(),
}


@pytest.mark.parametrize("fault", LIST_FAULTS.values(), ids=LIST_FAULTS.keys())
def test_a_list_that_meets_a_fault_is_retried_and_succeeds(monkeypatch: pytest.MonkeyPatch, fault: Answer) -> None:
    stand_in = McpStandIn().on("tools/list", fault, times=2)
    gateway = _retry_gateway(monkeypatch, stand_in)

    response = gateway.tools()

    assert tool_names(response) == ["x__echo"]
    assert stand_in.count("tools/list") == 3


def test_a_list_is_tried_at_most_retries_plus_one_times(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = McpStandIn().on("tools/list", status(503))
    gateway = _retry_gateway(monkeypatch, stand_in)

    response = gateway.tools()

    assert_http_error(response, 503, c.INTERNAL_ERROR, message="No upstream is available", request_id=1)
    assert stand_in.count("tools/list") == 3


def test_retries_0_means_one_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = McpStandIn().on("tools/list", status(503), times=1)
    gateway = _retry_gateway(monkeypatch, stand_in, retries=0)

    assert gateway.tools().status_code == 503
    assert stand_in.count("tools/list") == 1


CALL_FAULTS: dict[str, Answer] = {
    "5xx": status(502),
    "dropped-connection": dropped(),
}


@pytest.mark.parametrize("fault", CALL_FAULTS.values(), ids=CALL_FAULTS.keys())
def test_a_tool_call_that_may_have_reached_the_upstream_is_not_retried(
    monkeypatch: pytest.MonkeyPatch, fault: Answer
) -> None:
    stand_in = McpStandIn().on("tools/call", fault, times=1)
    gateway = _retry_gateway(monkeypatch, stand_in)
    _warm(gateway, stand_in)

    response = gateway.call()

    error_ = assert_http_error(response, 502, c.INTERNAL_ERROR, message=UNAVAILABLE, request_id=1)
    assert error_["data"] == {"upstream": "x", "retryable": True}
    assert stand_in.count("tools/call") == 1


@pytest.mark.parametrize("fault", CALL_FAULTS.values(), ids=CALL_FAULTS.keys())
def test_a_call_of_a_tool_annotated_idempotent_is_retried(monkeypatch: pytest.MonkeyPatch, fault: Answer) -> None:
    stand_in = McpStandIn(tools=[tool("lookup", annotations={"idempotentHint": True})]).on("tools/call", fault, times=2)
    gateway = _retry_gateway(monkeypatch, stand_in)
    _warm(gateway, stand_in)

    assert texts(gateway.call("x__lookup")) == ["lookup ran"]
    assert stand_in.count("tools/call") == 3


def test_each_attempt_of_a_sessions_call_carries_its_own_id_upstream(monkeypatch: pytest.MonkeyPatch) -> None:
    """A retried call may still be running upstream: the next attempt must not reuse its id. A
    2025 session's ids are derived from the client's (so a cancellation can name them)."""
    stand_in = McpStandIn(tools=[tool("lookup", annotations={"idempotentHint": True})]).on(
        "tools/call", CALL_FAULTS["5xx"], times=2
    )
    gateway = _retry_gateway(monkeypatch, stand_in)
    session = gateway.open_session()
    assert tool_names(gateway.in_session(session, "tools/list"))
    stand_in.requests.clear()

    answer = gateway.in_session(session, "tools/call", {"name": "x__lookup", "arguments": {}})

    ids = [json.loads(request.content)["id"] for method, request in stand_in.requests if method == "tools/call"]
    assert texts(answer) == ["lookup ran"]
    assert len(ids) == 3 and len(set(ids)) == 3
    assert ids[1:] == [f"{ids[0]}.1", f"{ids[0]}.2"]


@pytest.mark.parametrize("hint", [False, "true", None], ids=["false", "string-true", "null"])
def test_only_an_idempotent_hint_that_is_true_makes_a_call_retryable(
    monkeypatch: pytest.MonkeyPatch, hint: Any
) -> None:
    stand_in = McpStandIn(tools=[tool("lookup", annotations={"idempotentHint": hint})]).on(
        "tools/call", status(502), times=1
    )
    gateway = _retry_gateway(monkeypatch, stand_in)
    _warm(gateway, stand_in)

    assert gateway.call("x__lookup").status_code == 502
    assert stand_in.count("tools/call") == 1


@pytest.mark.parametrize(
    ("patterns", "retried"),
    [
        (["get_*"], True),
        (["get_report"], True),
        (["*"], True),
        (["x__get_*"], False),  # the public name: not what the globs match
        (["list_*", "other"], False),
        ([], False),
    ],
)
def test_idempotent_tools_globs_match_the_upstreams_own_tool_name(
    monkeypatch: pytest.MonkeyPatch, patterns: list[str], retried: bool
) -> None:
    stand_in = McpStandIn(tools=[tool("get_report")]).on("tools/call", status(503), times=1)
    gateway = _retry_gateway(monkeypatch, stand_in, idempotent_tools=patterns)
    _warm(gateway, stand_in)

    response = gateway.call("x__get_report")

    assert stand_in.count("tools/call") == (2 if retried else 1)
    assert response.status_code == (200 if retried else 502)


def test_a_call_whose_connection_was_refused_is_retried_for_any_tool(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = McpStandIn(tools=[tool("transfer_funds", annotations={"destructiveHint": True})]).on(
        "tools/call", refused(), times=2
    )
    gateway = _retry_gateway(monkeypatch, stand_in)
    _warm(gateway, stand_in)

    assert texts(gateway.call("x__transfer_funds")) == ["transfer_funds ran"]
    assert stand_in.count("tools/call") == 3


def test_a_call_refused_more_often_than_retries_allow_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = McpStandIn().on("tools/call", refused())
    gateway = _retry_gateway(monkeypatch, stand_in)
    _warm(gateway, stand_in)

    response = gateway.call()

    assert_http_error(response, 502, c.INTERNAL_ERROR, message=UNAVAILABLE, request_id=1)
    assert stand_in.count("tools/call") == 3


@pytest.mark.parametrize("accept", [c.CONTENT_TYPE_JSON, "application/json, text/event-stream"], ids=["json", "sse"])
def test_nothing_is_retried_once_a_message_was_relayed(monkeypatch: pytest.MonkeyPatch, accept: str) -> None:
    stand_in = McpStandIn(tools=[tool("lookup", annotations={"idempotentHint": True})]).on(
        "tools/call", streamed(lambda m: Chunks([event(progress())], then=httpx.ReadError("reset"))), times=1
    )
    gateway = _retry_gateway(monkeypatch, stand_in)
    _warm(gateway, stand_in)

    response = gateway.call("x__lookup", accept=accept)

    assert stand_in.count("tools/call") == 1
    if accept == c.CONTENT_TYPE_JSON:
        assert_http_error(response, 502, c.INTERNAL_ERROR, message=UNAVAILABLE, request_id=1)
    else:
        messages = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        assert '"notifications/progress"' in messages[0]
        assert UNAVAILABLE in messages[-1] and '"id":1' in messages[-1]


def test_a_list_that_timed_out_is_not_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = McpStandIn().on("tools/list", hang())
    gateway = _retry_gateway(monkeypatch, stand_in, timeout_seconds=0.3)

    response = gateway.tools()

    assert response.status_code == 503
    assert stand_in.count("tools/list") == 1


def test_no_retry_waits_past_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in = McpStandIn(tools=[tool("lookup", annotations={"idempotentHint": True})]).on("tools/call", status(503))
    gateway = _retry_gateway(monkeypatch, stand_in, timeout_seconds=1.0, retries=5)
    monkeypatch.setattr(router_module, "backoff", lambda attempt: 10.0)
    _warm(gateway, stand_in)

    started = time.monotonic()
    response = gateway.call("x__lookup")
    elapsed = time.monotonic() - started

    assert_http_error(response, 502, c.INTERNAL_ERROR, message=UNAVAILABLE, request_id=1)
    assert stand_in.count("tools/call") == 1
    assert elapsed < 0.5


def test_retries_stop_at_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    budget = 0.5

    async def late_503(message: dict[str, Any], request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.1)
        return httpx.Response(503)

    stand_in = McpStandIn(tools=[tool("lookup", annotations={"idempotentHint": True})]).on("tools/call", late_503)
    gateway = _retry_gateway(monkeypatch, stand_in, timeout_seconds=budget, retries=5)
    monkeypatch.setattr(router_module, "backoff", lambda attempt: 0.05)
    _warm(gateway, stand_in)

    response = gateway.call("x__lookup")

    assert response.status_code in (502, 504), response.text
    assert 2 <= stand_in.count("tools/call") <= 4  # 0.15 s an attempt: a fifth would be past the budget


def test_a_refused_call_is_retried_within_the_budget_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """An upstream that refuses connections until the budget is spent: the retries end with it."""
    stand_in = McpStandIn().on("tools/call", refused())
    gateway = _retry_gateway(monkeypatch, stand_in, timeout_seconds=0.3, retries=5)
    monkeypatch.setattr(router_module, "backoff", lambda attempt: 0.2)
    _warm(gateway, stand_in)

    started = time.monotonic()
    response = gateway.call()

    assert_http_error(response, 502, c.INTERNAL_ERROR, message=UNAVAILABLE, request_id=1)
    assert stand_in.count("tools/call") == 2  # at 0 s and 0.2 s; a third would start after the budget
    assert time.monotonic() - started < 0.3 * 1.6
