"""What a single request cannot do to the gateway: crash it, exhaust it, slip past its guards, or stall it.

- a client that hangs up while its body is read leaves no error log and no traceback;
- arguments nested 90 deep, and a tool result whose text is JSON nested 900 deep under field
  rules, are answered without a RecursionError, and the field rule still hides its field;
- the definition gate's verdict cache stays within its bound however many definitions it sees;
- the loopback allow-list of `tollway dev` accepts `[::1]` and refuses other hosts and origins,
  and its `[` is a bracket, never a character class;
- the IP detector masks addresses only, and digits outside ASCII neither match nor crash it;
- the blocking store calls of a whole request (sessions, pins, ledger) run off the
  event loop while other requests are in flight, and inline when the request is alone.

The gateway runs in-process in front of real MCP servers on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.blocking import serving
from tollway.config import DefinitionPolicy, GatewayConfig, parse_config
from tollway.http import create_app
from tollway.masking.fields import TOO_DEEP_TO_RULE
from tollway.masking.redact import Redactor
from tollway.policy import definitions
from tollway.policy.definitions import DefinitionGate
from tollway.store import Stores
from tollway.store.pins import MemoryPinStore
from tollway.store.sessions import MemorySessionStore
from tollway.telemetry import logger

from tests.fixtures.recording_upstream import LEGACY, MODERN, Caller, RecordingUpstream
from tests.unit.wire import assert_http_error

ACCEPT_BOTH = "application/json, text/event-stream"
DEEP_RESULT_LEVELS = 900


class DeepUpstream(RecordingUpstream):
    """A recording MCP server with a third tool, `deep`, whose result text is a JSON document
    nested `DEEP_RESULT_LEVELS` deep next to a field `a`."""

    tools = ("echo", "whoami", "deep")

    def _answer(
        self, method: str, params: dict[str, Any], headers: dict[str, str]
    ) -> tuple[dict[str, Any] | None, dict[str, str]]:
        if method == "tools/call" and params.get("name") == "deep":
            levels = DEEP_RESULT_LEVELS - 1  # the outer object is one level
            text = '{"a": "account-7731", "b": ' + "[" * levels + "]" * levels + "}"
            return {"content": [{"type": "text", "text": text}], "isError": False}, {}
        return super()._answer(method, params, headers)


@pytest.fixture(scope="module")
def upstream() -> Iterator[DeepUpstream]:
    with DeepUpstream().running() as running:
        yield running  # type: ignore[misc]


def _config(url: str, **sections: Any) -> GatewayConfig:
    return parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": [{"name": "rec", "url": url}],
            **sections,
        }
    )


class Logs:
    """Every line the Powertools logger writes (JSON on stdout), with stderr, from `start()` on.
    The handler's stream is pointed at capsys's stdout in the test itself: capsys swaps its
    stream between a fixture's setup and the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        self.monkeypatch = monkeypatch
        self.capsys = capsys

    def start(self) -> None:
        self.monkeypatch.setattr(logger.registered_handler, "stream", sys.stdout)
        self.capsys.readouterr()

    def lines(self) -> list[str]:
        out, err = self.capsys.readouterr()
        return [line for line in (out + err).splitlines() if line.strip()]


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Logs:
    return Logs(monkeypatch, capsys)


# --- a client that hangs up -----------------------------------------------------------------------
def _scope(headers: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/mcp",
        "raw_path": b"/mcp",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_a_client_that_disconnects_while_its_body_is_read_leaves_no_error_and_no_traceback(
    upstream: DeepUpstream, logs: Logs, era: str
) -> None:
    logs.start()
    app = create_app(_config(upstream.url), store=MemorySessionStore(), streaming=False)
    headers = {"host": "127.0.0.1:8080", "content-type": "application/json", "accept": ACCEPT_BOTH}
    headers["content-length"] = "4096"
    if era == "modern":
        headers.update({"mcp-protocol-version": MODERN, "mcp-method": "tools/list"})
    else:
        headers.update({"mcp-protocol-version": LEGACY, "mcp-session-id": "sess-1"})
    messages = iter(
        [
            {"type": "http.request", "body": b'{"jsonrpc": "2.0", "id": 1, "method": "tools/li', "more_body": True},
        ]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages, {"type": "http.disconnect"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(_scope(headers), receive, send))  # must not raise

    lines = logs.lines()
    assert lines, "nothing was logged: the capture would prove nothing"
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert [r for r in records if r.get("level") in ("ERROR", "CRITICAL")] == []
    assert not any("Traceback" in line or "exception" in line for line in lines), "\n".join(lines)
    assert "client disconnected" in [r.get("message") for r in records]
    assert sent == []  # nobody is left to read an answer
    # Logged as proxies log it (499), not as a gateway failure (5xx counts in the Errors metric).
    assert [r.get("status") for r in records if r.get("message") == "request"] == [499]


# --- deep values under masking --------------------------------------------------------------------
@pytest.fixture
def masked(upstream: DeepUpstream) -> Iterator[Caller]:
    rules = {
        "rec__echo": {
            "arguments": [{"path": "contact", "action": "mask"}],
            "results": [{"path": "a", "action": "mask"}],
        },
        "rec__deep": {"results": [{"path": "a", "action": "mask"}]},
    }
    app = create_app(_config(upstream.url, masking={"tools": rules}), store=MemorySessionStore(), streaming=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Caller(client, None)


def _nested(levels: int) -> Any:
    value: Any = "floor"
    for _ in range(levels):
        value = [value]
    return value


def test_arguments_nested_90_deep_are_masked_and_answered(masked: Caller, upstream: DeepUpstream) -> None:
    upstream.clear()
    arguments = {"contact": "jane.doe@example.com", "note": "mail jane.doe@example.com", "deep": _nested(90)}

    response = masked.modern("tools/call", {"name": "rec__echo", "arguments": arguments})

    assert response.status_code == 200, response.text
    [sent] = upstream.calls("tools/call")
    reached = json.loads(sent.body)["params"]["arguments"]
    assert reached["contact"] == "****"
    assert "jane.doe@example.com" not in sent.body
    assert reached["deep"] == _nested(90)
    assert "jane.doe@example.com" not in response.text


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_a_result_text_nested_900_deep_with_field_rules_is_answered(masked: Caller, era: str) -> None:
    params = {"name": "rec__deep", "arguments": {}}

    if era == "modern":
        response = masked.modern("tools/call", params)
    else:
        response = masked.legacy("tools/call", params, session=masked.open_session())

    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result["isError"] is False
    # Too deep to apply the tool's field rules with certainty: withheld, not delivered unruled.
    assert result["content"][0]["text"] == TOO_DEEP_TO_RULE


def test_a_field_rule_still_applies_when_a_sibling_of_the_field_is_nested_900_deep(masked: Caller) -> None:
    response = masked.modern("tools/call", {"name": "rec__deep", "arguments": {}})

    assert "account-7731" not in response.text  # masked, or the result withheld: never shown


# --- the verdict cache ----------------------------------------------------------------------------
def test_the_definition_gates_verdict_cache_never_holds_more_than_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(definitions, "VERDICT_CACHE_SIZE", 50)
    from tollway.masking import poisoning

    screened: list[str] = []
    real_screen = poisoning.screen_definition

    def counting_screen(kind: str, item: dict[str, Any], policy: DefinitionPolicy) -> Any:
        screened.append(item["name"])
        return real_screen(kind, item, policy)

    monkeypatch.setattr(poisoning, "screen_definition", counting_screen)
    gate = DefinitionGate(DefinitionPolicy(), MemoryPinStore())
    tools = [
        {"name": f"tool_{i}", "description": f"Looks up record {i}.", "inputSchema": {"type": "object"}}
        for i in range(230)
    ]
    sizes: list[int] = []

    async def feed() -> list[Any]:
        admitted: list[Any] = []
        for start in range(0, len(tools), 10):
            admitted += await gate.admit("rec", "tools", tools[start : start + 10])
            sizes.append(len(gate._verdicts))
        return admitted

    admitted = asyncio.run(feed())

    assert all(item is not None for item in admitted)
    assert len(screened) == len(tools)
    assert max(sizes) <= 50
    assert sizes[-1] == 50
    screened.clear()
    asyncio.run(gate.admit("rec", "tools", tools[-50:]))  # the most recent ones are remembered
    assert screened == []
    asyncio.run(gate.admit("rec", "tools", tools[:1]))  # the oldest was let go
    assert screened == ["tool_0"]
    assert len(gate._verdicts) == 50


# --- the dev allow-list for Host and Origin -------------------------------------------------------
DEV_HTTP = {
    # What `tollway dev` sets when the config names neither (tollway/dev.py).
    "allowed_hosts": ["127.0.0.1:*", "localhost:*", "[::1]:*"],
    "allowed_origins": ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
}


@pytest.fixture
def dev_client(upstream: DeepUpstream) -> Iterator[TestClient]:
    app = create_app(_config(upstream.url, http=DEV_HTTP), store=MemorySessionStore(), streaming=False)
    with TestClient(app, base_url="http://127.0.0.1:8080", raise_server_exceptions=False) as client:
        yield client


def _initialize(client: TestClient, **headers: str) -> Any:
    params = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "robustness", "version": "1"}}
    body = {"jsonrpc": "2.0", "id": 3, "method": "initialize", "params": params}
    return client.post(
        "/mcp", json=body, headers={"content-type": "application/json", "accept": ACCEPT_BOTH, **headers}
    )


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("[::1]:8080", "http://[::1]:8080"),
        ("[::1]:8080", None),
        ("127.0.0.1:8080", "http://127.0.0.1:6274"),
        ("localhost:8080", "http://localhost:6274"),
        ("LOCALHOST:8080", "http://LocalHost:6274"),
    ],
)
def test_the_dev_allow_list_accepts_loopback_hosts_and_origins(
    dev_client: TestClient, host: str, origin: str | None
) -> None:
    headers = {"host": host, **({"origin": origin} if origin else {})}

    response = _initialize(dev_client, **headers)

    assert response.status_code == 200, response.text
    assert response.json()["result"]["protocolVersion"] == LEGACY


@pytest.mark.parametrize(
    "host",
    ["evil.example:8080", "1:8080", "::8080", ":8080", "[::2]:8080", "[::1]", "127.0.0.1", "127.0.0.1.evil.example:80"],
)
def test_the_dev_allow_list_refuses_other_hosts_with_421(dev_client: TestClient, host: str) -> None:
    response = _initialize(dev_client, host=host)

    assert_http_error(response, 421, c.INVALID_REQUEST, message="Misdirected request: host not allowed")


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "http://evil.example:8080", "http://1:8080", "https://[::1]:8080", "http://[::2]:8080"],
)
def test_the_dev_allow_list_refuses_other_origins_with_403(dev_client: TestClient, origin: str) -> None:
    response = _initialize(dev_client, host="[::1]:8080", origin=origin)

    assert_http_error(response, 403, c.INVALID_REQUEST, message="Forbidden: origin not allowed")


# --- the IP detector ------------------------------------------------------------------------------
ARABIC_INDIC = "\u0661.\u0662.\u0663.\u0664"  # 1.2.3.4 in Arabic-Indic digits
FULLWIDTH = "\uff11.\uff12.\uff13.\uff14"  # 1.2.3.4 in fullwidth digits
ONE_FOREIGN_DIGIT = "1.2.3.\u0664"  # ASCII but for an Arabic-Indic 4
PERSIAN = "\u06f1\u06f9\u06f2.\u06f1\u06f6\u06f8.\u06f0.\u06f1"  # 192.168.0.1 in Extended Arabic-Indic digits
NOT_ADDRESSES = [ARABIC_INDIC, FULLWIDTH, ONE_FOREIGN_DIGIT, PERSIAN, "300.1.1.1", "1.2.3.256", "999.999.999.999"]


@pytest.mark.parametrize(
    "text", NOT_ADDRESSES, ids=["arabic-indic", "fullwidth", "one-foreign-digit", "persian", "300", "256", "999"]
)
def test_the_ip_detector_leaves_what_is_not_an_address_as_it_is(text: str) -> None:
    for sample in (text, f"host {text} answered", f"{text}\n{text}"):
        assert Redactor().redact_text(sample) == (sample, [])


def test_the_ip_detector_masks_an_address_next_to_ones_that_are_not() -> None:
    masked, findings = Redactor().redact_text(f"dns 8.8.8.8, not {ARABIC_INDIC} nor 300.1.1.1")

    assert masked == f"dns [REDACTED:ip], not {ARABIC_INDIC} nor 300.1.1.1"
    assert findings == [("ip", 1)]


@pytest.mark.parametrize("era", ["legacy", "modern"])
@pytest.mark.parametrize("value", [ARABIC_INDIC, ONE_FOREIGN_DIGIT, FULLWIDTH], ids=["arabic", "one", "fullwidth"])
def test_a_tool_argument_in_other_digits_is_answered_normally(
    masked: Caller, upstream: DeepUpstream, era: str, value: str
) -> None:
    upstream.clear()
    params = {"name": "rec__echo", "arguments": {"address": value, "server": "8.8.8.8"}}

    if era == "modern":
        response = masked.modern("tools/call", params)
    else:
        response = masked.legacy("tools/call", params, session=masked.open_session())

    assert response.status_code == 200, response.text
    [sent] = upstream.calls("tools/call")
    assert json.loads(sent.body)["params"]["arguments"] == {"address": value, "server": "[REDACTED:ip]"}


# --- store I/O off the event loop -----------------------------------------------------------------
class OffLoop:
    """Wraps a store: every public method call is recorded, and so is any call made on a thread
    that is running an event loop (blocking I/O there would stall every request of the process)."""

    def __init__(self, name: str, inner: Any, calls: list[str], on_loop: list[str]) -> None:
        self._name, self._inner, self._calls, self._on_loop = name, inner, calls, on_loop

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._inner, attribute)
        if attribute.startswith("_") or not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            where = f"{self._name}.{attribute}"
            self._calls.append(where)
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass  # a worker thread: fine
            else:
                self._on_loop.append(f"{where} on {threading.current_thread().name}")
            return value(*args, **kwargs)

        return call


def watched_stores(calls: list[str], on_loop: list[str]) -> Stores:
    memory = Stores.memory()
    return Stores(
        sessions=OffLoop("sessions", memory.sessions, calls, on_loop),
        ledger=OffLoop("ledger", memory.ledger, calls, on_loop),
        pins=OffLoop("pins", memory.pins, calls, on_loop),
    )


def test_while_other_requests_are_in_flight_every_store_call_runs_off_the_event_loop(
    upstream: DeepUpstream,
) -> None:
    """A blocking store call on the loop would stall every other request of the process."""
    calls: list[str] = []
    on_loop: list[str] = []
    stores = watched_stores(calls, on_loop)
    config = parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": [
                {"name": "rec", "url": upstream.url},
                {"name": "old", "url": upstream.url, "protocol": "legacy"},
            ],
            "quotas": {"plans": {"p": {"tenant": {"per_minute": 100}}}, "default_plan": "p"},
            "definitions": {"pinning": True},
            "sessions": {"cache_seconds": 0},  # every session read reaches the store
        }
    )
    app = create_app(config, stores=stores, streaming=False)
    another_request = {"type": "http"}  # in flight on this process meanwhile, counted as the app counts

    with TestClient(app, raise_server_exceptions=False) as client, serving(another_request):
        caller = Caller(client, None)
        session = caller.open_session()
        listed = caller.legacy("tools/list", session=session)
        answers = [
            caller.legacy("tools/call", {"name": name, "arguments": {"n": 1}}, session=session)
            for name in ("rec__echo", "old__echo")
        ]
        deleted = caller.delete(session)
        answers += [
            caller.modern("tools/call", {"name": name, "arguments": {"n": 2}}) for name in ("rec__echo", "old__echo")
        ]

    assert listed.status_code == 200, listed.text
    assert {t["name"] for t in listed.json()["result"]["tools"]} >= {"rec__echo", "old__echo"}
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"]["isError"] is False, answer.text
    assert deleted.status_code == 204
    assert {
        "sessions.create",
        "sessions.get",
        "sessions.add_upstream",
        "sessions.delete",
        "sessions.get_principal_upstream",
        "sessions.put_principal_upstream",
        "pins.get_all",
        "pins.pin",
        "ledger.charge",
    } <= set(calls)
    assert on_loop == []


@pytest.mark.parametrize("mode", ["buffered", "stream"])
def test_a_lone_requests_store_calls_run_inline(
    upstream: DeepUpstream, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """Nothing else waits on the loop (on Lambda, which hands an instance one invocation at a time,
    in either deployment), so the thread hop (CPU, two wake-ups) is skipped (`tollway.blocking`)."""
    monkeypatch.setenv("TOLLWAY_RESPONSE_MODE", mode)
    calls: list[str] = []
    on_loop: list[str] = []
    stores = watched_stores(calls, on_loop)
    config = parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": [{"name": "rec", "url": upstream.url}],
            "quotas": {"plans": {"p": {"tenant": {"per_minute": 100}}}, "default_plan": "p"},
            "sessions": {"cache_seconds": 0},
        }
    )
    app = create_app(config, stores=stores, streaming=False)

    with TestClient(app, raise_server_exceptions=False) as client:
        caller = Caller(client, None)
        session = caller.open_session()
        answer = caller.legacy("tools/call", {"name": "rec__echo", "arguments": {"n": 1}}, session=session)

    assert answer.status_code == 200, answer.text
    assert {"sessions.create", "sessions.get", "ledger.charge"} <= set(calls)
    assert {"sessions.create", "sessions.get", "ledger.charge"} <= {c.split(" on ")[0] for c in on_loop}
