"""Live configuration: gateway.yaml in SSM Parameter Store (moto) changes while the gateway runs.

A policy change (which tools a tenant may call) applies within the config TTL, without a new
instance; a broken config is refused, logged and counted (`ConfigRejected`) while the last good one
keeps serving; a fixed config applies again. Driven through the in-process app (the `LiveGateway`
that `tollway dev` serves) and through the Lambda handler (API Gateway v2 events). The TTL is a
fraction of a second here; tests poll with a bounded loop and never assert timing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
import yaml
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.config import ssm_provider
from tollway.errors import ConfigError
from tollway.http import create_app
from tollway.live import LiveGateway
from tollway.store import Stores
from tollway.telemetry import metrics

from tests.conftest import config_data
from tests.fixtures.memory_upstream import final_message
from tests.fixtures.recording_upstream import Caller, RecordingUpstream
from tests.functional.lambda_harness import LambdaGateway, assert_lambda_error, load_handler
from tests.unit.wire import assert_http_error

PARAMETER = "/tollway/functional/gateway-yaml"
SOURCE = f"ssm:{PARAMETER}"
TTL = 0.2
"""Seconds; the change must show within a bounded number of polls, not at a given time."""
POLL_SECONDS = 10.0
ECHO, WHOAMI = "rec__echo", "rec__whoami"


def gateway_yaml(upstream_url: str, tools: list[str], **sections: Any) -> str:
    """A gateway.yaml whose tenant `default` (the anonymous caller's) may call `tools`."""
    data = config_data({"rec": upstream_url}, tenants={"default": {"tools": tools}}, **sections)
    return yaml.safe_dump(data)


BROKEN = {
    "yaml": ("resource: [unclosed\n", "is not valid YAML at line"),
    "unknown key": (None, "tenants.default.tool: unknown key"),
    "jmespath": (None, "masking.tools.rec__echo.projection: not a valid JMESPath expression"),
    "reference": (None, "tenants.default.upstreams names unknown upstream 'nowhere'"),
}


def broken_yaml(kind: str, upstream_url: str) -> str:
    if kind == "yaml":
        return BROKEN["yaml"][0] or ""
    data = config_data({"rec": upstream_url}, tenants={"default": {"tools": [ECHO]}})
    if kind == "unknown key":
        data["tenants"]["default"] = {"tool": [ECHO, WHOAMI]}
    elif kind == "jmespath":
        data["masking"]["tools"] = {ECHO: {"projection": "[[["}}
    else:
        data["tenants"]["default"]["upstreams"] = ["nowhere"]
    return yaml.safe_dump(data)


@pytest.fixture
def ssm(moto_dynamodb: Any) -> Callable[[str], None]:
    """`put(text)`: the gateway.yaml parameter now holds `text` (moto is active for the module)."""
    client = boto3.client("ssm")

    def put(text: str) -> None:
        client.put_parameter(Name=PARAMETER, Value=text, Type="String", Overwrite=True)

    return put


@pytest.fixture(autouse=True)
def _fresh_parameter_cache() -> Iterator[None]:
    """The gateway's Parameter Store provider caches values per process; each test starts from
    what SSM holds."""
    ssm_provider.cache_clear()
    yield
    ssm_provider.cache_clear()


@pytest.fixture
def rejections(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The `problem` of every `config rejected` log line so far."""
    caplog.set_level(logging.INFO)
    return lambda: [r.__dict__["problem"] for r in caplog.records if r.getMessage().startswith("config rejected")]


def rejected_count(capsys: pytest.CaptureFixture[str]) -> float:
    """`ConfigRejected` as the service-wide EMF records flushed now (and printed before) say."""
    metrics.flush_metrics()
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    return sum(sum(record.get("ConfigRejected", [])) for record in emf)


def eventually(check: Callable[[], bool], what: str) -> None:
    """Poll `check` until it holds, at most POLL_SECONDS (a bound, not an expectation)."""
    deadline = time.monotonic() + POLL_SECONDS
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {POLL_SECONDS} s: {what}")
        time.sleep(TTL / 4)


# --- in process: the app `tollway dev` serves ------------------------------------------------------
@pytest.fixture
def live(recorder: RecordingUpstream, ssm: Callable[[str], None]) -> Iterator[tuple[LiveGateway, TestClient]]:
    ssm(gateway_yaml(recorder.url, [ECHO]))
    stores = Stores.memory()
    gateway = LiveGateway(
        SOURCE, lambda config, previous: create_app(config, stores=stores, previous=previous), ttl=TTL
    )
    with TestClient(gateway, base_url="http://127.0.0.1:8080") as client:
        yield gateway, client


def call(caller: Caller, tool: str) -> Any:
    return caller.modern("tools/call", {"name": tool, "arguments": {"n": 1}})


def allowed(caller: Caller, tool: str) -> bool:
    response = call(caller, tool)
    return response.status_code == 200 and "result" in response.json()


def test_a_tenant_policy_change_in_ssm_applies_within_the_ttl(
    live: tuple[LiveGateway, TestClient], recorder: RecordingUpstream, ssm: Callable[[str], None]
) -> None:
    _, client = live
    caller = Caller(client, None)
    assert allowed(caller, ECHO)
    assert_http_error(call(caller, WHOAMI), 400, c.INVALID_PARAMS, message=f"Unknown tool: {WHOAMI}", request_id=1)

    ssm(gateway_yaml(recorder.url, [WHOAMI]))

    eventually(lambda: allowed(caller, WHOAMI), "whoami allowed by the new policy")
    assert_http_error(call(caller, ECHO), 400, c.INVALID_PARAMS, message=f"Unknown tool: {ECHO}", request_id=1)
    assert [json.loads(r.body)["params"]["name"] for r in recorder.calls()] == ["echo", "whoami"]


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_config_is_refused_logged_and_counted_while_the_last_good_keeps_serving(
    live: tuple[LiveGateway, TestClient],
    recorder: RecordingUpstream,
    ssm: Callable[[str], None],
    rejections: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    gateway, client = live
    caller = Caller(client, None)
    ssm(broken_yaml(kind, recorder.url))

    eventually(lambda: allowed(caller, ECHO) and bool(rejections()), "the broken config refused")

    assert BROKEN[kind][1] in rejections()[0]
    assert rejected_count(capsys) >= 1
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    assert_http_error(call(caller, WHOAMI), 400, c.INVALID_PARAMS, message=f"Unknown tool: {WHOAMI}", request_id=1)
    assert gateway.config.tenants["default"].tools == [ECHO]  # the last good one

    ssm(gateway_yaml(recorder.url, [ECHO, WHOAMI]))  # fixed

    eventually(lambda: allowed(caller, WHOAMI), "the fixed config applied")
    assert allowed(caller, ECHO)


def test_a_rejection_never_logs_the_configs_text(
    live: tuple[LiveGateway, TestClient],
    recorder: RecordingUpstream,
    ssm: Callable[[str], None],
    rejections: Callable[[], list[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, client = live
    secret_looking = "sk-live-0123456789abcdef0123456789abcdef"
    data = config_data({"rec": recorder.url})
    data["upstreams"][0]["headers"] = {"X-Api-Key": secret_looking}
    data["upstreams"][0]["timeout_seconds"] = "not a number"
    ssm(yaml.safe_dump(data))

    eventually(lambda: client.get("/healthz").status_code == 200 and bool(rejections()), "the config refused")

    assert "upstreams.0.timeout_seconds" in rejections()[0]
    assert secret_looking not in caplog.text
    assert "not a number" not in caplog.text


def test_a_2025_session_opened_before_a_change_keeps_working_after_it(
    live: tuple[LiveGateway, TestClient], recorder: RecordingUpstream, ssm: Callable[[str], None]
) -> None:
    gateway, client = live
    caller = Caller(client, None)
    session = caller.open_session()
    before = gateway.current

    ssm(gateway_yaml(recorder.url, [ECHO, WHOAMI]))
    eventually(lambda: client.get("/healthz").is_success and gateway.current is not before, "the config applied")

    response = caller.legacy("tools/call", {"name": WHOAMI, "arguments": {}}, session=session)
    assert response.status_code == 200, response.text
    assert final_message(response)["result"]["isError"] is False


def test_an_unreadable_source_keeps_the_last_good_config(
    live: tuple[LiveGateway, TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    gateway, client = live
    caplog.set_level(logging.WARNING)
    caller = Caller(client, None)
    boto3.client("ssm").delete_parameter(Name=PARAMETER)

    eventually(lambda: allowed(caller, ECHO) and "config source unreadable" in caplog.text, "the failed read logged")

    assert allowed(caller, ECHO)
    assert gateway.config.tenants["default"].tools == [ECHO]


# --- the Lambda handler ---------------------------------------------------------------------------
@pytest.fixture
def lambda_gateway(recorder: RecordingUpstream, ssm: Callable[[str], None]) -> Iterator[LambdaGateway]:
    ssm(gateway_yaml(recorder.url, [ECHO]))
    gateway = LambdaGateway(load_handler(SOURCE, env={"TOLLWAY_CONFIG_TTL_SECONDS": str(TTL)}))
    yield gateway
    gateway.close()


def lambda_allowed(gateway: LambdaGateway, tool: str) -> bool:
    answer = gateway.modern("tools/call", {"name": tool, "arguments": {"n": 1}})
    return answer.status == 200 and "result" in answer.final()


def test_through_the_lambda_handler_a_change_applies_a_broken_one_is_refused_and_a_fix_applies(
    lambda_gateway: LambdaGateway,
    recorder: RecordingUpstream,
    ssm: Callable[[str], None],
    rejections: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gateway = lambda_gateway
    assert lambda_allowed(gateway, ECHO)
    assert_lambda_error(
        gateway.modern("tools/call", {"name": WHOAMI, "arguments": {}}), 400, c.INVALID_PARAMS, request_id=1
    )

    ssm(gateway_yaml(recorder.url, [ECHO, WHOAMI]))
    eventually(lambda: lambda_allowed(gateway, WHOAMI), "the new policy applied on the warm instance")

    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    capsys.readouterr()
    ssm(broken_yaml("unknown key", recorder.url))
    eventually(lambda: lambda_allowed(gateway, WHOAMI) and bool(rejections()), "the broken config refused")

    assert rejected_count(capsys) >= 1
    assert "tenants.default.tool: unknown key" in rejections()[0]
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")

    ssm(gateway_yaml(recorder.url, [ECHO]))
    eventually(lambda: not lambda_allowed(gateway, WHOAMI), "the fixed config applied")
    assert lambda_allowed(gateway, ECHO)


def test_a_cold_start_with_an_invalid_config_fails_closed(
    recorder: RecordingUpstream, ssm: Callable[[str], None]
) -> None:
    ssm(broken_yaml("unknown key", recorder.url))

    with pytest.raises(ConfigError, match=r"tenants\.default\.tool: unknown key"):
        load_handler(SOURCE)
