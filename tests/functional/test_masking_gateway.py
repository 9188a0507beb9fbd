"""Masking through the gateway: the agent sees masked data, the upstream sees masked arguments,
a tool may be allowed a detector, and nothing the gateway logs contains the seeded PII or tokens."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from tollway.auth.dev import DEV_ISSUER, jwk_set, mint, signing_key
from tollway.config import parse_config
from tollway.http import create_app
from tollway.store import Stores
from tollway.telemetry import logger

from examples.upstreams._serve import spawn
from tests.fixtures.recording_upstream import Caller, RecordingUpstream

RESOURCE = "https://gateway.example.com/mcp"
# Values the demo upstreams serve, and ones an agent sends: none may reach the log.
SEEDED_PII = [
    "ada.lovelace@example.com",
    "+44 20 7946 0958",
    "4242 4242 4242 4242",
    "4242424242424242",
    "grace.hopper@example.org",
    "5555 5555 5555 4444",
    "GB82 WEST 1234 5698 7654 32",
]


@pytest.fixture(scope="module")
def upstreams(recorder: RecordingUpstream) -> Iterator[dict[str, str]]:
    with spawn("examples.upstreams.customer_support") as support:
        yield {"support": support, "rec": recorder.url, "recorder": recorder}  # type: ignore[dict-item]


def _agent(upstreams: dict[str, Any], tmp_path: Path, **sections: Any) -> tuple[Caller, str]:
    key = signing_key(tmp_path / "key.pem")
    config = parse_config(
        {
            "resource": RESOURCE,
            "auth": {"issuer": DEV_ISSUER},
            "upstreams": [{"name": "support", "url": upstreams["support"]}, {"name": "rec", "url": upstreams["rec"]}],
            **sections,
        }
    )
    app = create_app(config, stores=Stores.memory(), dev_keys=jwk_set(key))
    token = mint(key, subject="alice", tenant="acme", audience=RESOURCE)
    return Caller(TestClient(app), token), token


def _text(response: Any) -> str:
    body = response.json()
    assert "result" in body, body
    return body["result"]["content"][0]["text"]


def test_the_agent_sees_customer_pii_masked_with_the_shape_kept(upstreams: dict[str, Any], tmp_path: Path) -> None:
    agent, _ = _agent(upstreams, tmp_path)

    response = agent.modern(
        "tools/call", {"name": "support__get_customer_profile", "arguments": {"customer_id": "C-1001"}}
    )

    text = _text(response)
    assert "ada.lovelace@example.com" not in text
    assert "7946 0958" not in text
    assert "4242 4242 4242 4242" not in text
    assert "4242" in text  # a masked card keeps its last four digits
    structured = response.json()["result"]["structuredContent"]
    assert "ada.lovelace@example.com" not in json.dumps(structured)
    assert structured["customer_id"] == "C-1001"  # identifiers that are not PII pass


def test_the_upstream_sees_pii_in_arguments_masked(upstreams: dict[str, Any], tmp_path: Path) -> None:
    recorder: RecordingUpstream = upstreams["recorder"]
    recorder.clear()
    agent, _ = _agent(upstreams, tmp_path)
    arguments = {"note": "mail grace.hopper@example.org, card 5555 5555 5555 4444", "order": "8350 0012 4417 9926"}

    agent.modern("tools/call", {"name": "rec__echo", "arguments": arguments})

    sent = recorder.calls("tools/call")[-1].body
    assert "grace.hopper@example.org" not in sent
    assert "5555 5555 5555 4444" not in sent
    assert "4444" in sent
    assert "8350 0012 4417 9926" in sent  # fails Luhn: an order number, not a card


def test_a_tool_allowed_a_detector_receives_that_value_unmasked(upstreams: dict[str, Any], tmp_path: Path) -> None:
    recorder: RecordingUpstream = upstreams["recorder"]
    recorder.clear()
    agent, _ = _agent(upstreams, tmp_path, masking={"tools": {"rec__echo": {"allow_detectors": ["email"]}}})

    agent.modern(
        "tools/call", {"name": "rec__echo", "arguments": {"to": "grace.hopper@example.org", "card": "4242424242424242"}}
    )

    sent = recorder.calls("tools/call")[-1].body
    assert "grace.hopper@example.org" in sent
    assert "4242424242424242" not in sent


def test_nothing_the_gateway_logs_contains_seeded_pii_or_the_callers_token(
    upstreams: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(logger._logger, "level", logging.DEBUG)  # the gateway's DEBUG lines are scanned too
    agent, token = _agent(upstreams, tmp_path)
    session = agent.open_session()
    for customer in ("C-1001", "C-1002", "C-9999"):
        agent.modern("tools/call", {"name": "support__get_customer_profile", "arguments": {"customer_id": customer}})
        agent.legacy(
            "tools/call", {"name": "support__list_orders", "arguments": {"customer_id": customer}}, session=session
        )
    agent.modern("tools/call", {"name": "rec__echo", "arguments": {"email": "grace.hopper@example.org"}})
    agent.modern("tools/call", {"name": "support__no_such_tool", "arguments": {"card": "4242424242424242"}})
    agent.modern("resources/read", {"uri": "support+support://customers/C-1001"})
    agent.modern(
        "prompts/get", {"name": "support__draft_reply", "arguments": {"customer_id": "C-1001", "tone": "warm"}}
    )

    # Every record with all its fields (message, extras, exception text), as the JSON log would carry.
    everything = "\n".join(json.dumps(record.__dict__, default=str) for record in caplog.records)
    assert len(caplog.records) >= 10, "too little was logged: the scan would prove nothing"
    assert '"masked"' in everything  # the masking stage itself logged what it found (names, counts)
    for value in [*SEEDED_PII, token]:
        assert value not in everything, f"{value!r} reached the log"


def test_an_oversized_result_is_cut_with_a_clear_marker(upstreams: dict[str, Any], tmp_path: Path) -> None:
    agent, _ = _agent(upstreams, tmp_path, masking={"tools": {"support__list_orders": {"max_result_bytes": 120}}})

    response = agent.modern("tools/call", {"name": "support__list_orders", "arguments": {"customer_id": "C-1001"}})

    result = response.json()["result"]
    text = _text(response)
    shown = len(text.split("\n…[truncated")[0].encode())
    assert text.endswith(f"[truncated by Tollway: {shown} of " + text.split(" of ")[-1])
    assert len(text.encode()) <= 120  # the marker included: the limit holds for what reaches the agent
    assert "structuredContent" not in result  # 1 KB of structured content cannot fit in 120 bytes


def test_a_projection_gives_the_agent_only_the_fields_it_needs(upstreams: dict[str, Any], tmp_path: Path) -> None:
    projection = {"support__get_customer_profile": {"projection": "{name: name, tier: tier}"}}
    agent, _ = _agent(upstreams, tmp_path, masking={"tools": projection})

    listed = agent.modern("tools/list").json()["result"]["tools"]
    response = agent.modern(
        "tools/call", {"name": "support__get_customer_profile", "arguments": {"customer_id": "C-1001"}}
    )

    profile = next(t for t in listed if t["name"] == "support__get_customer_profile")
    assert "outputSchema" not in profile  # the upstream's schema no longer describes the result
    assert response.json()["result"]["structuredContent"] == {"name": "Ada Lovelace", "tier": "gold"}
    assert json.loads(_text(response)) == {"name": "Ada Lovelace", "tier": "gold"}


def test_account_identifiers_hash_to_the_same_token_within_a_tenant(upstreams: dict[str, Any], tmp_path: Path) -> None:
    rules = {"support__get_customer_profile": {"results": [{"path": "customer_id", "action": "hash"}]}}
    agent, _ = _agent(upstreams, tmp_path, masking={"tools": rules})
    call = {"name": "support__get_customer_profile", "arguments": {"customer_id": "C-1001"}}

    first = agent.modern("tools/call", call).json()["result"]["structuredContent"]["customer_id"]
    second = agent.modern("tools/call", call).json()["result"]["structuredContent"]["customer_id"]

    assert first == second
    assert first != "C-1001"
