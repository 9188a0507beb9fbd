"""Every AWS client the gateway makes on a request's or an invocation's path waits seconds, not
botocore's minute per attempt (`tollway.aws`), and still does its work (moto in-process): the
stores' (test_dynamo_wire), the audit log group's, Secrets Manager's, the approval bus's, and the
config source's (Parameter Store, AppConfig), which a request waits for when it finds the
config's TTL passed."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws
from tollway import aws
from tollway.config import appconfig_provider, read_source, ssm_provider
from tollway.policy.approvals import EventBridgeNotifier
from tollway.secrets import get_secret, secrets_provider
from tollway.store.approvals import Approval
from tollway.telemetry.audit import AuditLog, CloudWatchSink

BOUNDED = (aws.CONNECT_TIMEOUT_SECONDS, aws.READ_TIMEOUT_SECONDS)


@pytest.fixture(autouse=True)
def emulated_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        secrets_provider.cache_clear()
        ssm_provider.cache_clear()
        yield
        secrets_provider.cache_clear()
        ssm_provider.cache_clear()


def _waits(client: object) -> tuple[float, float]:
    config = client.meta.config  # type: ignore[attr-defined]
    return config.connect_timeout, config.read_timeout


def test_the_bound_is_seconds_and_a_caller_may_tighten_it() -> None:
    assert BOUNDED == (2, 5)
    assert _waits(aws.client("logs")) == BOUNDED
    tightened = aws.client_config(read_timeout=1, retries={"total_max_attempts": 2})
    assert (tightened.connect_timeout, tightened.read_timeout, tightened.retries) == (
        2,
        1,
        {"total_max_attempts": 2},
    )


def test_the_audit_log_groups_client_is_bounded_and_delivers_the_records() -> None:
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName="/tollway/audit")
    sink = CloudWatchSink("/tollway/audit")
    log = AuditLog(sink)

    with log.batch():
        log.write({"audit": 1, "tool": "finance__pay"})

    assert _waits(sink._client) == BOUNDED
    stream = logs.describe_log_streams(logGroupName="/tollway/audit")["logStreams"][0]["logStreamName"]
    events = logs.get_log_events(logGroupName="/tollway/audit", logStreamName=stream)["events"]
    assert [json.loads(e["message"])["tool"] for e in events] == ["finance__pay"]


def test_the_secrets_client_is_bounded_and_reads_the_secret() -> None:
    boto3.client("secretsmanager").create_secret(Name="upstream/token", SecretString="s3cr3t")

    assert get_secret("upstream/token", 60) == "s3cr3t"
    assert _waits(secrets_provider().client) == BOUNDED


def test_the_approval_bus_client_waits_less_for_an_answer_and_tries_twice() -> None:
    boto3.client("events").create_event_bus(Name="approvals")
    notifier = EventBridgeNotifier("approvals")

    notifier(Approval("a-1", "acme", "alice", "finance__pay", "d" * 64, "pending", 1, 2))

    config = notifier.client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (aws.CONNECT_TIMEOUT_SECONDS, 3)
    assert config.retries["total_max_attempts"] == 2


def test_the_config_sources_clients_are_bounded_and_read_the_config() -> None:
    boto3.client("ssm").put_parameter(Name="/tollway/gateway", Value="resource: x\n", Type="String")

    assert read_source("ssm:/tollway/gateway", max_age=0) == "resource: x\n"
    assert _waits(ssm_provider().client) == BOUNDED
    assert _waits(appconfig_provider("tollway-unit", "prod").client) == BOUNDED
