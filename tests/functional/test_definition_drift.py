"""Definition drift: a tool whose definition changed since it was pinned is recorded as pending,
withheld from lists and calls on fresh and warm instances alike (its upstream's other tools stay
callable) until an admin approves it, by the admin API or `tollway upstream approve`; an approval
pins what the upstream serves now. With first-sight approval off, new tools wait for an admin too.
A pin store failure answers the admin API with a retryable 503 and no detail.

The poisoned demo upstream (`examples/upstreams/poisoned.py`) runs as a real process on a fixed
port of 127.0.0.1, so it can come back as another variant at the same URL, as a redeployed
upstream does. Caches are off here; in production a warm instance notices a change within the
pin and catalog cache times, 30 s each.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.auth.dev import DEV_ISSUER, jwk_set
from tollway.cli import main
from tollway.config import parse_config
from tollway.http import create_app
from tollway.policy.definitions import definition_hash
from tollway.routing import catalog
from tollway.store import Stores
from tollway.store.ledger import MemoryLedger
from tollway.store.pins import DynamoPinStore, MemoryPinStore, PinStore
from tollway.store.sessions import MemorySessionStore

from examples.upstreams import poisoned
from examples.upstreams._serve import await_ready, stop
from tests.functional.test_definitions_gate import (
    ALL_TOOLS,
    ERAS,
    MODERN,
    RESOURCE,
    Agent,
    agent_token,
    assert_answered_as_unknown,
    bearer,
    public,
)
from tests.unit.wire import assert_http_error

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE = "examples.upstreams.poisoned"
CONVERT = {"amount": 10, "source": "USD", "target": "EUR"}
VARIANT_1_RESULT, VARIANT_2_RESULT = {"result": 9.2}, {"result": 9}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PoisonedUpstream:
    """The poisoned demo upstream on a fixed port, so it can come back as another variant at the
    same URL (as an upstream that is redeployed does)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.proc: subprocess.Popen[str] | None = None

    def start(self, variant: int) -> None:
        self.stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", MODULE, "--port", str(self.port), "--lifetime", "300", "--variant", str(variant)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            await_ready(self.proc, f"{MODULE} --variant {variant}", timeout=20)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(str(exc))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop(proc)


@pytest.fixture(autouse=True)
def no_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "MIN_REFRESH_SECONDS", 0.0)


@pytest.fixture
def upstream() -> Iterator[PoisonedUpstream]:
    server = PoisonedUpstream()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def instance(upstream: PoisonedUpstream, dev_key: ec.EllipticCurvePrivateKey) -> Iterator[Callable[..., TestClient]]:
    """`instance(pins, definitions={...})`: a new gateway instance (cold start) with the dev
    issuer in front of `upstream`, sharing `pins`."""
    with contextlib.ExitStack() as stack:

        def start(pins: PinStore, definitions: dict[str, Any] | None = None) -> TestClient:
            config = parse_config(
                {
                    "resource": RESOURCE,
                    "auth": {"issuer": DEV_ISSUER},
                    "upstreams": [{"name": "poisoned", "url": upstream.url, "prefix": "p"}],
                    "definitions": {"cache_seconds": 0, **(definitions or {})},
                }
            )
            stores = Stores(MemorySessionStore(), MemoryLedger(), pins)
            app = create_app(config, stores=stores, streaming=False, dev_keys=jwk_set(dev_key))
            return stack.enter_context(TestClient(app, raise_server_exceptions=False))

        yield start


def served_hash(tool: dict[str, Any], description: str) -> str:
    """The hash of convert_currency as the upstream serves it with `description`, from the tool
    as the gateway published it (only the name differs: the gateway adds its prefix)."""
    return definition_hash("tool", {**tool, "name": "convert_currency", "description": description})


@pytest.fixture
def drifted(
    upstream: PoisonedUpstream, instance: Callable[..., TestClient], dev_key: ec.EllipticCurvePrivateKey
) -> tuple[MemoryPinStore, dict[str, dict[str, Any]]]:
    """Gateway A listed variant 1 (its tools are pinned on first sight); then the upstream was
    redeployed as variant 2 at the same URL. Returns the shared pin store and A's list."""
    pins = MemoryPinStore()
    upstream.start(variant=1)
    first = Agent(instance(pins), MODERN, agent_token(dev_key)).tools()
    assert list(first) == public("get_weather", "search_docs", "fetch_page", "convert_currency")
    upstream.start(variant=2)
    return pins, first


# --- a changed tool is withheld, recorded, and approved ---------------------------------------------
@pytest.mark.parametrize("era", ERAS)
def test_a_fresh_instance_withholds_a_tool_whose_description_changed_since_it_was_pinned(
    drifted: tuple[MemoryPinStore, dict[str, dict[str, Any]]],
    instance: Callable[..., TestClient],
    dev_key: ec.EllipticCurvePrivateKey,
    era: str,
) -> None:
    pins, first = drifted
    agent = Agent(instance(pins), era, agent_token(dev_key))

    tools = agent.tools()

    assert list(tools) == public("get_weather", "search_docs", "fetch_page")
    assert tools == {name: first[name] for name in tools}
    assert_answered_as_unknown(agent, "p__convert_currency", CONVERT)


@pytest.mark.parametrize("era", ERAS)
def test_after_a_tool_changes_the_unchanged_tools_of_its_upstream_stay_callable(
    drifted: tuple[MemoryPinStore, dict[str, dict[str, Any]]],
    instance: Callable[..., TestClient],
    dev_key: ec.EllipticCurvePrivateKey,
    era: str,
) -> None:
    pins, _ = drifted

    response = Agent(instance(pins), era, agent_token(dev_key)).call("p__get_weather", {"city": "Lisbon"})

    assert response.status_code == 200, response.text
    assert response.json()["result"]["structuredContent"] == {"result": "Lisbon: 21 C, clear sky"}


@pytest.mark.parametrize("era", ERAS)
def test_the_instance_that_pinned_the_tool_withholds_it_from_its_list_once_it_changed(
    upstream: PoisonedUpstream, instance: Callable[..., TestClient], dev_key: ec.EllipticCurvePrivateKey, era: str
) -> None:
    upstream.start(variant=1)
    agent = Agent(instance(MemoryPinStore()), era, agent_token(dev_key))
    assert "p__convert_currency" in agent.tools()

    upstream.start(variant=2)

    assert list(agent.tools()) == public("get_weather", "search_docs", "fetch_page")


def test_the_admin_sees_the_changed_tool_as_pending_with_the_approved_and_the_served_hash(
    drifted: tuple[MemoryPinStore, dict[str, dict[str, Any]]],
    instance: Callable[..., TestClient],
    dev_key: ec.EllipticCurvePrivateKey,
) -> None:
    pins, first = drifted
    client = instance(pins)
    Agent(client, MODERN, agent_token(dev_key)).send("tools/list")  # this instance meets the change

    response = client.get("/admin/definitions/pending", headers=bearer(dev_key))

    tool = first["p__convert_currency"]
    assert response.status_code == 200, response.text
    assert response.json() == {
        "pending": [
            {
                "upstream": "poisoned",
                "kind": "tool",
                "name": "convert_currency",
                "state": "changed since approval",
                "approvedHash": served_hash(tool, poisoned.CONVERT_CURRENCY_DESCRIPTIONS[1]),
                "servedHash": served_hash(tool, poisoned.CONVERT_CURRENCY_DESCRIPTIONS[2]),
            }
        ]
    }


@pytest.mark.parametrize("era", ERAS)
def test_after_an_admin_approves_the_change_the_tool_is_listed_and_callable_again(
    drifted: tuple[MemoryPinStore, dict[str, dict[str, Any]]],
    instance: Callable[..., TestClient],
    dev_key: ec.EllipticCurvePrivateKey,
    era: str,
) -> None:
    pins, first = drifted
    client = instance(pins)
    agent = Agent(client, era, agent_token(dev_key))
    agent.send("tools/list")

    approval = client.post(
        "/admin/definitions/approve",
        json={"upstream": "poisoned", "name": "convert_currency", "kind": "tool"},
        headers=bearer(dev_key),
    )
    tools = agent.tools()
    call = agent.call("p__convert_currency", CONVERT)

    assert approval.status_code == 200, approval.text
    assert approval.json() == {
        "upstream": "poisoned",
        "kind": "tool",
        "name": "convert_currency",
        "approvedHash": served_hash(first["p__convert_currency"], poisoned.CONVERT_CURRENCY_DESCRIPTIONS[2]),
        "approvedBy": "ops/fiona",
    }
    assert list(tools) == public("get_weather", "search_docs", "fetch_page", "convert_currency")
    assert tools["p__convert_currency"]["description"] == poisoned.CONVERT_CURRENCY_DESCRIPTIONS[2]
    assert call.status_code == 200, call.text
    assert call.json()["result"]["structuredContent"] == VARIANT_2_RESULT
    assert client.get("/admin/definitions/pending", headers=bearer(dev_key)).json() == {"pending": []}


def test_an_admin_approval_pins_the_definition_the_upstream_serves_now(
    upstream: PoisonedUpstream, instance: Callable[..., TestClient], dev_key: ec.EllipticCurvePrivateKey
) -> None:
    """No gate involved: the drift is already on record, as a fixed gate would leave it."""
    upstream.start(variant=1)
    pins = MemoryPinStore()
    pins.approve("poisoned", "tool", "convert_currency", "a" * 64, "auto:first-seen")
    pins.mark_drift("poisoned", "tool", "convert_currency", "b" * 64)

    response = instance(pins).post(
        "/admin/definitions/approve", json={"upstream": "poisoned", "name": "convert_currency"}, headers=bearer(dev_key)
    )

    assert response.status_code == 200, response.text
    assert response.json() == {
        "upstream": "poisoned",
        "kind": "tool",
        "name": "convert_currency",
        "approvedHash": "b" * 64,
        "approvedBy": "ops/fiona",
    }
    pin = pins.get_all("poisoned")[("tool", "convert_currency")]
    assert (pin.hash, pin.status, pin.approved_by, pin.seen_hash) == ("b" * 64, "approved", "ops/fiona", None)


@pytest.mark.parametrize("era", ERAS)
def test_with_first_sight_approval_off_new_tools_are_withheld_until_an_admin_approves_them(
    upstream: PoisonedUpstream, instance: Callable[..., TestClient], dev_key: ec.EllipticCurvePrivateKey, era: str
) -> None:
    upstream.start(variant=1)
    pins = MemoryPinStore()
    client = instance(pins, {"auto_approve_first_seen": False})
    agent = Agent(client, era, agent_token(dev_key))

    tools = agent.tools()
    pending = client.get("/admin/definitions/pending", headers=bearer(dev_key)).json()["pending"]

    assert tools == {}
    assert [(p["kind"], p["name"], p["state"]) for p in pending] == [
        ("tool", name, "awaiting approval") for name in sorted(ALL_TOOLS)
    ]


@pytest.fixture(scope="module")
def table_name() -> str:
    """What `fresh_dynamodb` names its table and TOLLWAY_TABLE says: the CLI must find it by that name."""
    return "tollway-definitions"


def test_the_approve_command_pins_the_definition_the_upstream_serves_now(
    fresh_dynamodb: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "resource: https://gateway.example.com/mcp\nupstreams: [{name: poisoned, url: 'http://127.0.0.1:9/mcp'}]\n"
    )
    store = DynamoPinStore(client=fresh_dynamodb)
    store.approve("poisoned", "tool", "convert_currency", "a" * 64, "auto:first-seen")
    store.mark_drift("poisoned", "tool", "convert_currency", "b" * 64)
    capsys.readouterr()

    status = main(["upstream", "approve", "poisoned", "convert_currency", "--by", "fiona", "--config", str(config)])

    out, err = capsys.readouterr()
    assert (status, out) == (0, "approved poisoned tool convert_currency (bbbbbbbbbbbb…) by fiona\n")
    assert '"message":"definition approved"' in err  # the audit log line goes to stderr
    pin = store.get_all("poisoned")[("tool", "convert_currency")]
    assert (pin.hash, pin.seen_hash) == ("b" * 64, None)


# --- a warm instance that already called the tool -------------------------------------------------
@pytest.mark.parametrize("era", ERAS)
def test_a_warm_instance_that_already_called_a_tool_answers_it_as_unknown_once_it_changed(
    upstream: PoisonedUpstream, instance: Callable[..., TestClient], dev_key: ec.EllipticCurvePrivateKey, era: str
) -> None:
    upstream.start(variant=1)
    agent = Agent(instance(MemoryPinStore()), era, agent_token(dev_key))
    before = agent.call("p__convert_currency", CONVERT)
    assert before.json()["result"]["structuredContent"] == VARIANT_1_RESULT

    upstream.start(variant=2)
    after = agent.call("p__convert_currency", CONVERT)

    # Not HTTP 200 with structuredContent {"result": 9}: the changed tool must not run.
    status = 400 if era == MODERN else 200
    assert_http_error(after, status, c.INVALID_PARAMS, message="Unknown tool: p__convert_currency", request_id=1)


# --- the pin store fails ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/admin/definitions/pending", None),
        ("POST", "/admin/definitions/approve", {"upstream": "poisoned", "name": "convert_currency"}),
    ],
)
def test_a_pin_store_failure_in_the_definitions_admin_api_answers_503_without_detail(
    fresh_dynamodb: Any,
    instance: Callable[..., TestClient],
    dev_key: ec.EllipticCurvePrivateKey,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    broken = DynamoPinStore("no-such-table", fresh_dynamodb)

    response = instance(broken).request(method, path, json=body, headers=bearer(dev_key))

    error = assert_http_error(response, 503, c.INTERNAL_ERROR, message="Pin store unavailable")
    assert error["data"] == {"retryable": True}
    assert "no-such-table" not in response.text
