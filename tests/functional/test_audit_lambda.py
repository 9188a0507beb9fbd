"""Audit records of the deployed gateway: the Lambda handler (API Gateway v2 events, moto AWS) puts
each invocation's records into the audit log group (TOLLWAY_AUDIT_LOG_GROUP) in one PutLogEvents
call before it answers; when the put fails, the records go to stdout (the function's own log)
and `AuditWriteFailures` counts them, so none is lost."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from tollway.config import GatewayConfig
from tollway.telemetry import metrics

from tests.functional.lambda_harness import LambdaGateway, load_event

GROUP = "/tollway/test/audit"


@pytest.fixture
def deployed(
    start_gateway: Callable[[GatewayConfig], LambdaGateway],
    make_config: Callable[..., GatewayConfig],
    demo_upstreams: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[LambdaGateway, Any, list[str]]]:
    """A cold Lambda instance whose audit log group is GROUP; its logs client and the API calls made."""
    monkeypatch.setenv("TOLLWAY_AUDIT_LOG_GROUP", GROUP)
    gateway = start_gateway(make_config(demo_upstreams))
    logs = boto3.client("logs")
    calls: list[str] = []
    logs.meta.events.register("before-call.logs.*", lambda model, **_: calls.append(model.name))
    gateway.app.state.audit.sink._client = logs
    yield gateway, logs, calls
    with_group = logs.describe_log_groups(logGroupNamePrefix=GROUP)["logGroups"]
    if with_group:
        logs.delete_log_group(logGroupName=GROUP)


def events_of(logs: Any) -> list[dict[str, Any]]:
    streams = logs.describe_log_streams(logGroupName=GROUP)["logStreams"]
    records = []
    for stream in streams:
        answer = logs.get_log_events(logGroupName=GROUP, logStreamName=stream["logStreamName"], startFromHead=True)
        records += [json.loads(event["message"]) for event in answer["events"]]
    return records


def test_each_invocation_puts_its_record_into_the_audit_log_group_in_one_call(
    deployed: tuple[LambdaGateway, Any, list[str]],
) -> None:
    gateway, logs, calls = deployed
    logs.create_log_group(logGroupName=GROUP)

    answer = gateway.invoke(load_event("tools_call_modern"))
    calls_after_first = calls.count("PutLogEvents")
    session = gateway.initialize()

    assert answer.status == 200 and session
    assert calls_after_first == 1
    assert calls.count("PutLogEvents") == 3  # one per invocation: call, initialize, initialized
    assert calls.count("CreateLogStream") == 1  # the instance's own stream, made once
    records = events_of(logs)
    assert [r["method"] for r in records] == ["tools/call", "initialize", "notifications/initialized"]
    call = records[0]
    assert (call["audit"], call["name"], call["decision"], call["outcome"]) == (
        1,
        "finance__fetch_revenue_data",
        "allowed",
        "ok",
    )
    assert (call["client"], call["client_version"], call["era"]) == ("agent-under-test", "1.4.0", "2026-07-28")
    assert "EMEA" not in json.dumps(records)  # an argument value


def test_records_the_log_group_refuses_go_to_stdout_and_are_counted(
    deployed: tuple[LambdaGateway, Any, list[str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gateway, _, _ = deployed  # the log group was never created: every put fails
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    capsys.readouterr()

    answer = gateway.invoke(load_event("tools_call_modern"))

    assert answer.status == 200
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    audit = [line for line in lines if line.get("audit") == 1]
    assert [(r["method"], r["outcome"]) for r in audit] == [("tools/call", "ok")]
    failures = [line for line in lines if "AuditWriteFailures" in line]
    assert [line["AuditWriteFailures"] for line in failures] == [[1.0]]
    metrics.discard()
