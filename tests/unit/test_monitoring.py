"""The template's alarms and dashboard watch metrics the code emits: every Tollway metric they name
is in the code's metric catalog, with exactly the catalog's dimensions (an alarm on a dimension
set nobody writes never fires)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from tollway.telemetry.metrics import CATALOG

from tests.unit.cfn import template

ALARM = "AWS::CloudWatch::Alarm"
# SELECT SUM("Name") FROM SCHEMA("Namespace", "Dim", ...) [GROUP BY "Dim", ...]
_INSIGHTS = re.compile(r'SELECT\s+\w+\(\s*"?(\w+)"?\s*\)\s+FROM\s+(SCHEMA\(([^)]*)\)|\S+)(.*)', re.S)
_GROUP_BY = re.compile(r"GROUP BY\s+(.*?)(?:\s+ORDER BY|\s+LIMIT|$)", re.S)
# SEARCH('{Namespace,Dim,...} MetricName="Name"', ...)
_SEARCH = re.compile(r"SEARCH\('\{([^}]*)\}\s+MetricName=\"(\w+)\"")


@pytest.fixture(scope="module")
def tpl() -> dict[str, Any]:
    return template()


@pytest.fixture(scope="module")
def telemetry(tpl: dict[str, Any]) -> tuple[str, str]:
    """(namespace, service) the deployed functions write their metrics under."""
    env = tpl["Globals"]["Function"]["Environment"]["Variables"]
    return env["POWERTOOLS_METRICS_NAMESPACE"], env["POWERTOOLS_SERVICE_NAME"]


def _names(text: str) -> list[str]:
    return [part.strip().strip('"') for part in text.split(",") if part.strip()]


def expression_metrics(expression: str) -> list[tuple[str, str, frozenset[str]]]:
    """(namespace, metric, dimension names) that a Metrics Insights query or a SEARCH reads.
    A query must read one exact dimension set (FROM SCHEMA) and group by dimensions of it."""
    found = []
    if match := _INSIGHTS.search(expression):
        metric, source, schema, rest = match.groups()
        if schema is None:
            raise AssertionError(f"{expression!r}: FROM {source} matches every dimension set; use SCHEMA(...)")
        namespace, *dimensions = _names(schema)
        if group := _GROUP_BY.search(rest):
            grouped = set(_names(group.group(1)))
            assert grouped <= set(dimensions), f"{expression!r} groups by a dimension outside its schema"
        found.append((namespace, metric, frozenset(dimensions)))
    for match in _SEARCH.finditer(expression):
        namespace, *dimensions = _names(match.group(1))
        found.append((namespace, match.group(2), frozenset(dimensions)))
    return found


def alarm_metrics(props: dict[str, Any]) -> list[tuple[str, str, frozenset[str], dict[str, str]]]:
    """(namespace, metric, dimension names, dimension values) of every metric an alarm reads."""
    found = []
    stats = [props] if "MetricName" in props else []
    stats += [query["MetricStat"]["Metric"] for query in props.get("Metrics", []) if "MetricStat" in query]
    for stat in stats:
        values = {d["Name"]: d["Value"] for d in stat.get("Dimensions", [])}
        found.append((stat["Namespace"], stat["MetricName"], frozenset(values), values))
    for query in props.get("Metrics", []):
        if "Expression" in query:
            found += [(ns, name, dims, {}) for ns, name, dims in expression_metrics(query["Expression"])]
    return found


def dashboard_metrics(body: str) -> list[tuple[str, str, frozenset[str], dict[str, str]]]:
    """(namespace, metric, dimension names, dimension values) of every dashboard graph line."""
    found = []
    for widget in json.loads(body)["widgets"]:
        for line in widget.get("properties", {}).get("metrics", []):
            if isinstance(line[0], dict):
                found += [(ns, name, dims, {}) for ns, name, dims in expression_metrics(line[0]["expression"])]
                continue
            fields = [field for field in line if isinstance(field, str)]
            namespace, metric, *pairs = fields
            values = dict(zip(pairs[::2], pairs[1::2], strict=True))
            found.append((namespace, metric, frozenset(values), values))
    return found


def mismatches(metrics: list[tuple[str, str, frozenset[str], Any]], namespace: str) -> list[str]:
    """What in `metrics` the code does not emit: a Tollway name outside the catalog, or with
    other dimensions than the catalog's."""
    wrong = []
    for ns, name, dimensions, _ in metrics:
        if ns != namespace:
            continue
        if name not in CATALOG:
            wrong.append(f"{name}: not in the metric catalog")
        elif dimensions != frozenset(CATALOG[name].dimensions):
            wrong.append(f"{name}: dimensions {sorted(dimensions)}, emitted with {sorted(CATALOG[name].dimensions)}")
    return wrong


def _alarms(tpl: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: r["Properties"] for name, r in tpl["Resources"].items() if r["Type"] == ALARM}


def _dashboard_text(tpl: dict[str, Any]) -> str:
    """The dashboard's !Sub text (its variables, which deployment's function and API, aside)."""
    body = tpl["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    return body[0] if isinstance(body, list) else body


def _dashboard_body(tpl: dict[str, Any]) -> str:
    # The body is a !Sub: give its ${...} references placeholder values to read it as JSON.
    body = _dashboard_text(tpl)
    return re.sub(r"\$\{[^}]+\}", "x", body)


def test_every_alarm_watches_a_metric_the_code_emits(tpl: dict[str, Any], telemetry: tuple[str, str]) -> None:
    namespace, service = telemetry
    alarms = _alarms(tpl)
    assert len(alarms) >= 7
    for name, props in alarms.items():
        metrics = alarm_metrics(props)
        assert any(ns == namespace for ns, *_ in metrics), f"{name} watches no {namespace} metric"
        assert mismatches(metrics, namespace) == [], name
        for ns, _, _, values in metrics:
            if ns == namespace and values:
                assert values["service"] == service, name


def test_every_dashboard_metric_is_one_the_code_emits(tpl: dict[str, Any], telemetry: tuple[str, str]) -> None:
    namespace, service = telemetry
    metrics = dashboard_metrics(_dashboard_body(tpl))
    ours = [m for m in metrics if m[0] == namespace]
    assert len(ours) >= 20
    assert mismatches(metrics, namespace) == []
    assert {values["service"] for _, _, _, values in ours if values} == {service}
    # The list: calls, errors, throttles per tenant; latency; upstream and store
    # failures; drift and poisoning; masking hits.
    assert {
        "ToolCalls",
        "ToolErrors",
        "RateLimited",
        "Latency",
        "UpstreamLatency",
        "UpstreamFailures",
        "QuotaStoreFailures",
        "DefinitionDrift",
        "PoisonedDefinitions",
        "MaskedValues",
    } <= {name for _, name, _, _ in ours}


def test_the_check_catches_a_wrong_dimension_set_or_name() -> None:
    # The same parser on alarms the code could never fire.
    query = 'SELECT SUM("RateLimited") FROM SCHEMA("Tollway", "Tenant", "Tool", "service") GROUP BY "Tenant"'
    assert mismatches([("Tollway", *expression_metrics(query)[0][1:], [])], "Tollway") != []
    stat = {"Namespace": "Tollway", "MetricName": "Errors", "Dimensions": [{"Name": "Tenant", "Value": "a"}]}
    assert mismatches(alarm_metrics(stat), "Tollway") != []
    assert mismatches([("Tollway", "RateLimits", frozenset({"Tenant", "service"}), {})], "Tollway") != []
    with pytest.raises(AssertionError, match="SCHEMA"):
        expression_metrics('SELECT SUM("RateLimited") FROM "Tollway" GROUP BY "Tenant"')


def test_the_surge_alarm_is_per_tenant(tpl: dict[str, Any]) -> None:
    # One alarm for every tenant: a Metrics Insights query grouped by tenant, each tenant a
    # contributor, judged minute by minute.
    (query,) = _alarms(tpl)["RateLimitSurgeAlarm"]["Metrics"]
    assert expression_metrics(query["Expression"]) == [("Tollway", "RateLimited", frozenset({"Tenant", "service"}))]
    assert re.search(r'GROUP BY\s+"Tenant"', query["Expression"])
    assert query["Period"] == 60


def test_every_alarm_notifies_the_alarm_target(tpl: dict[str, Any]) -> None:
    target = {
        "Fn::If": [
            "NotifyAlarms",
            [{"Fn::If": ["HasAlarmTopicArn", {"Ref": "AlarmTopicArn"}, {"Ref": "AlarmTopic"}]}],
            {"Ref": "AWS::NoValue"},
        ]
    }
    for name, props in _alarms(tpl).items():
        assert props["AlarmActions"] == target, name
        assert props["OKActions"] == target, name


def test_the_dashboard_shows_every_alarm(tpl: dict[str, Any]) -> None:
    body = _dashboard_text(tpl)
    shown = set(re.findall(r"\$\{(\w+)\.Arn\}", body))
    assert shown == set(_alarms(tpl))
