"""The CloudWatch metrics as CloudWatch reads them: the EMF records printed with metrics on (as on
Lambda: POWERTOOLS_METRICS_DISABLED false), their names, units and dimensions, checked against
the one catalog (`tollway.telemetry.metrics.CATALOG`) the template's alarms are checked against.

A tool call through the Lambda handler (demo upstreams, moto DynamoDB) prints one record with
every per-call metric; refusals print their per-tenant record; logs of refusals name the tenant
and the tool but never the subject.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient
from tollway.auth import dev
from tollway.store import Stores
from tollway.telemetry import metrics
from tollway.telemetry.metrics import CATALOG

from tests.fixtures.memory_upstream import MODERN, RESOURCE, Agent, MemoryUpstream, gateways, tool
from tests.functional.lambda_harness import LambdaGateway, load_event

PER_CALL = {"ToolCalls", "ToolErrors", "CostUnits", "ToolLatency", "UpstreamLatency"}


@pytest.fixture
def metrics_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    yield
    metrics.discard()  # nothing left over for another test


def emf_records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{") and '"_aws"' in line]


def assert_in_catalog(record: dict[str, Any]) -> None:
    """Every metric of `record` is in the catalog, with its unit and exact dimension set."""
    [directive] = record["_aws"]["CloudWatchMetrics"]
    [dimensions] = directive["Dimensions"]
    for metric in directive["Metrics"]:
        spec = CATALOG[metric["Name"]]
        assert metric["Unit"] == spec.unit, metric
        assert sorted(dimensions) == sorted(spec.dimensions), (metric["Name"], dimensions)
        assert metric["Name"] in record
    for dimension in dimensions:
        assert isinstance(record[dimension], str)


def test_a_tool_call_through_the_lambda_handler_prints_one_record_with_every_per_call_metric(
    gateway: LambdaGateway, metrics_on: None, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()

    answer = gateway.invoke(load_event("tools_call_modern"))

    assert answer.status == 200
    records = emf_records(capsys.readouterr().out)
    for record in records:
        assert_in_catalog(record)
    calls = [r for r in records if "ToolCalls" in r]
    assert len(calls) == 1
    [call] = calls
    [directive] = call["_aws"]["CloudWatchMetrics"]
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        "ToolCalls": "Count",
        "ToolErrors": "Count",
        "CostUnits": "Count",
        "ToolLatency": "Milliseconds",
        "UpstreamLatency": "Milliseconds",
    }
    assert directive["Namespace"] == "TollwayTest"
    assert directive["Dimensions"] == [["Tenant", "Tool", "service"]]
    assert (call["Tenant"], call["Tool"], call["service"]) == ("other", "finance__fetch_revenue_data", "tollway-test")
    assert (call["ToolCalls"], call["ToolErrors"], call["CostUnits"]) == ([1.0], [0.0], [1.0])
    assert call["ToolLatency"][0] >= call["UpstreamLatency"][0] > 0
    service = [r for r in records if "Requests" in r]
    assert len(service) == 1 and service[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]


@pytest.fixture
def start(dev_key: Any) -> Iterator[Callable[..., Agent]]:
    with gateways("memory") as launch:

        def build(**sections: Any) -> Agent:
            upstream = MemoryUpstream("mem", tools=[tool("echo"), tool("secret")])
            client: TestClient = launch(
                upstream,
                stores=Stores.memory(),
                dev_keys=dev.jwk_set(dev_key),
                auth={"issuer": dev.DEV_ISSUER},
                **sections,
            )
            token = dev.mint(dev_key, subject="alice-the-subject", tenant="acme", audience=RESOURCE)
            return Agent(client, MODERN, token=token)

        yield build


def logged(caplog: pytest.LogCaptureFixture, message: str) -> list[tuple[Any, Any]]:
    """(tenant, item or tool) of the log lines with `message`."""
    lines = [r for r in caplog.records if r.getMessage() == message]
    return [(r.__dict__.get("tenant"), r.__dict__.get("item", r.__dict__.get("tool"))) for r in lines]


def subject_logged(caplog: pytest.LogCaptureFixture) -> bool:
    return any("alice-the-subject" in str(record.__dict__) for record in caplog.records)


def test_a_denied_call_prints_a_denied_record_for_its_tenant_and_logs_no_subject(
    start: Callable[..., Agent], metrics_on: None, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    agent = start(tenants={"acme": {"tools": ["mem__echo"]}})
    capsys.readouterr()
    caplog.clear()

    agent.send("tools/call", {"name": "mem__secret", "arguments": {}})

    out = capsys.readouterr().out
    denied = [r for r in emf_records(out) if "Denied" in r]
    assert len(denied) == 1
    assert_in_catalog(denied[0])
    assert (denied[0]["Tenant"], denied[0]["Denied"]) == ("acme", [1.0])
    assert logged(caplog, "access denied") == [("acme", "mem__secret")]
    assert not subject_logged(caplog)


def test_a_rate_limited_call_prints_a_rate_limited_record_and_logs_no_subject(
    start: Callable[..., Agent], metrics_on: None, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    agent = start(
        tenants={"*": {}},
        quotas={"plans": {"p": {"tenant": {"per_minute": 1}}}, "default_plan": "p"},
    )
    agent.send("tools/call", {"name": "mem__echo", "arguments": {}})
    capsys.readouterr()
    caplog.clear()

    assert agent.send("tools/call", {"name": "mem__echo", "arguments": {}}).status_code == 429

    out = capsys.readouterr().out
    limited = [r for r in emf_records(out) if "RateLimited" in r]
    assert len(limited) == 1
    assert_in_catalog(limited[0])
    assert limited[0]["Tenant"] == "other"  # acme is not named in tenants: bounded
    assert logged(caplog, "call refused by a limit") == [("acme", "mem__echo")]
    assert not subject_logged(caplog)


def test_an_emitted_metric_outside_the_catalog_or_with_other_dimensions_is_refused(metrics_on: None) -> None:
    with pytest.raises(KeyError):
        metrics.count("Invented")
    with pytest.raises(ValueError, match="Tenant"):
        metrics.count("Denied")  # a per-tenant metric without its Tenant
    with pytest.raises(ValueError):
        metrics.record({"Upstream": "mem"}, {"ToolCalls": 1})


def test_with_a_window_routine_values_of_many_calls_go_out_in_one_record_and_a_refusal_flushes_at_once(
    start: Callable[..., Agent],
    metrics_on: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(metrics.WINDOW_ENV, "3600")
    agent = start(tenants={"acme": {"tools": ["mem__echo"]}})
    capsys.readouterr()

    for _ in range(3):
        assert agent.send("tools/call", {"name": "mem__echo", "arguments": {}}).status_code == 200
    held = emf_records(capsys.readouterr().out)
    agent.send("tools/call", {"name": "mem__secret", "arguments": {}})  # denied: alarm-worthy
    printed = emf_records(capsys.readouterr().out)

    assert held == []  # three calls, nothing printed yet: the window has not passed
    for record in printed:
        assert_in_catalog(record)
    [calls] = [r for r in printed if "ToolCalls" in r]
    assert (calls["Tenant"], calls["Tool"]) == ("acme", "mem__echo")
    assert (calls["ToolCalls"], calls["ToolErrors"]) == ([1.0] * 3, [0.0] * 3)
    assert len(calls["ToolLatency"]) == 3
    [denied] = [r for r in printed if "Denied" in r]
    assert denied["Denied"] == [1.0]
    [service] = [r for r in printed if "Requests" in r]
    assert service["Requests"] == [1.0] * 4
    assert calls["_aws"]["Timestamp"] <= denied["_aws"]["Timestamp"]  # stamped with its first value's time


def test_with_a_window_a_failed_call_is_printed_at_once(
    start: Callable[..., Agent],
    metrics_on: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(metrics.WINDOW_ENV, "3600")
    agent = start(tenants={"*": {}})
    capsys.readouterr()

    agent.send("tools/call", {"name": "mem__echo", "arguments": {}})
    assert emf_records(capsys.readouterr().out) == []
    metrics.tool_call("other", "mem__echo", latency_ms=5.0, upstream_ms=None, error=True, units=1)
    metrics.flush_due()  # as the middleware does at the end of the failed call's request

    [calls] = [r for r in emf_records(capsys.readouterr().out) if "ToolCalls" in r]
    assert calls["ToolErrors"] == [0.0, 1.0]
