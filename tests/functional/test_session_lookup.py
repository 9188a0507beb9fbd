"""Where a 2025-era call finds its session on the local server and the streaming deployment: a
session this instance read lately is taken from memory on the event loop (no worker thread, no
store read); anything else (not remembered, another principal's, a renewal due) goes through the
store off the loop, and is answered as before."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.auth import dev
from tollway.protocol import endpoint as endpoint_module

from tests.fixtures.memory_upstream import LEGACY, RESOURCE, Agent, MemoryUpstream, final_message, gateways, tool


@pytest.fixture
def looked_up(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the blocking functions the endpoint sends off the loop, in order."""
    names: list[str] = []
    real = endpoint_module.run_blocking

    async def recording(fn: Callable[..., Any], *args: object) -> Any:
        names.append(getattr(fn, "__name__", repr(fn)))
        return await real(fn, *args)

    monkeypatch.setattr(endpoint_module, "run_blocking", recording)
    return names


@pytest.fixture
def start() -> Iterator[Callable[..., TestClient]]:
    with gateways("memory") as launch:
        yield launch


def test_a_session_read_lately_is_found_without_leaving_the_event_loop(
    start: Callable[..., TestClient], looked_up: list[str], dev_key: Any
) -> None:
    client = start(
        MemoryUpstream("mem", tools=[tool("echo")]),
        streaming=True,
        dev_keys=dev.jwk_set(dev_key),
        auth={"issuer": dev.DEV_ISSUER},
    )
    token = dev.mint(dev_key, subject="alice", tenant="acme", audience=RESOURCE)
    alice = Agent(client, LEGACY, token=token)
    alice.open()
    looked_up.clear()

    answers = [alice.send("tools/call", {"name": "mem__echo", "arguments": {"text": f"hi {n}"}}) for n in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [final_message(a)["result"]["content"][0]["text"] for a in answers] == [
        '{"text": "hi 0"}',
        '{"text": "hi 1"}',
        '{"text": "hi 2"}',
    ]
    assert "_session" not in looked_up

    mallory = Agent(client, LEGACY, token=dev.mint(dev_key, subject="mallory", tenant="acme", audience=RESOURCE))
    mallory.session = alice.session  # remembered here, but not hers: asked of the store, and refused
    stolen = mallory.send("tools/call", {"name": "mem__echo", "arguments": {"text": "x"}})
    missing = Agent(client, LEGACY, token=mallory.token)
    missing.session = "no-such-session"
    unknown = missing.send("tools/call", {"name": "mem__echo", "arguments": {"text": "x"}})

    assert stolen.status_code == unknown.status_code == 404
    assert stolen.json() == unknown.json()
    assert looked_up.count("_session") == 2


def test_a_session_due_for_renewal_is_renewed_through_the_store(
    start: Callable[..., TestClient], looked_up: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = start(MemoryUpstream("mem", tools=[tool("echo")]), streaming=True, sessions={"ttl_seconds": 600})
    agent = Agent(client, LEGACY)
    agent.open()
    looked_up.clear()
    later = endpoint_module.time.time() + 400  # past half the lifetime
    monkeypatch.setattr(endpoint_module, "time", _Clock(later))

    answer = agent.send("tools/call", {"name": "mem__echo", "arguments": {"text": "hi"}})

    assert answer.status_code == 200
    assert looked_up[0] == "_session"
    assert answer.headers.get(c.SESSION_ID_HEADER) in (None, agent.session)


class _Clock:
    """`time` as the endpoint uses it, with the wall clock moved on."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.monotonic = endpoint_module.time.monotonic

    def time(self) -> float:
        return self.now
