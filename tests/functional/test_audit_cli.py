"""`tollway audit` as an operator runs it: the local audit file in dev, CloudWatch Logs Insights
(moto) when deployed, filtered by tenant, tool glob, age and decision, one line per record or
`--json`; bad arguments are one line on stderr and exit 2.

moto runs Insights queries but ignores their `filter` clauses (it returns every event of the
range), so the filtering seen here is the CLI's own check of each record; the query text the CLI
sends is asserted separately."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from tollway.cli import main
from tollway.telemetry.audit_query import Filters, insights_query

NOW = datetime.now(UTC)


def record(minutes_ago: int, tenant: str, name: str, decision: str, **extra: Any) -> dict[str, Any]:
    at = (NOW - timedelta(minutes=minutes_ago)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "audit": 1,
        "time": at,
        "type": "mcp",
        "request_id": f"r-{tenant}-{name}-{minutes_ago}",
        "tenant": tenant,
        "subject": "alice",
        "method": "tools/call",
        "name": name,
        "decision": decision,
        "outcome": "ok" if decision == "allowed" else "refused",
        "status": 200,
        "ms": 3.5,
        **extra,
    }


RECORDS = [
    record(300, "acme", "finance__run_forecast", "allowed", units=10),
    record(20, "acme", "finance__run_forecast", "allowed", units=10),
    record(15, "acme", "support__create_ticket", "denied", rule="not in the tenant's tools"),
    record(10, "globex", "finance__fetch_revenue_data", "rate_limited", rule="tenant per_minute"),
    record(5, "acme", "finance__download_statement", "denied", rule="missing scopes ['finance:read']"),
]


def as_of_now(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """RECORDS with their times moved to the moment the test starts: a test run minutes after
    this module was imported must still find the record of "10 minutes ago" within 12."""
    shift = datetime.now(UTC) - NOW
    moved = []
    for r in records:
        at = datetime.fromisoformat(r["time"].replace("Z", "+00:00")) + shift
        moved.append({**r, "time": at.isoformat(timespec="milliseconds").replace("+00:00", "Z")})
    return moved


@pytest.fixture
def audit_file(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in as_of_now(RECORDS)) + "not json\n")
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["audit", *args])
    out, err = capsys.readouterr()
    return status, out, err


def ids(out: str) -> list[str]:
    return [json.loads(line)["request_id"] for line in out.splitlines()]


def test_the_local_file_is_filtered_by_tenant_tool_glob_age_and_decision(
    audit_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = ["--file", str(audit_file), "--json"]

    assert ids(run(capsys, *file)[1]) == [r["request_id"] for r in RECORDS[1:]]  # default: the last hour
    assert ids(run(capsys, *file, "--since", "1d")[1]) == [r["request_id"] for r in RECORDS]
    assert ids(run(capsys, *file, "--tenant", "globex")[1]) == ["r-globex-finance__fetch_revenue_data-10"]
    assert ids(run(capsys, *file, "--tool", "finance__*", "--decision", "denied")[1]) == [
        "r-acme-finance__download_statement-5"
    ]
    assert ids(run(capsys, *file, "--since", "12m")[1]) == [
        "r-globex-finance__fetch_revenue_data-10",
        "r-acme-finance__download_statement-5",
    ]


def test_records_print_one_line_each_with_who_what_decision_and_rule(
    audit_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "--file", str(audit_file), "--decision", "denied")

    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 2
    fields = lines[0].split("\t")
    assert fields[1:] == [
        "acme/alice",
        "tools/call support__create_ticket",
        "denied (not in the tenant's tools)",
        "refused",
        "200",
        "units=0",
        "3.5ms",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "tollway: --since must be a number and a unit"),
        (["--decision", "maybe"], "tollway: --decision must be one of allowed, denied"),
        (["--limit", "0"], "tollway: --limit must be between 1 and 10000"),
    ],
)
def test_bad_arguments_are_one_line_on_stderr_and_exit_2(
    audit_file: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status, out, err = run(capsys, "--file", str(audit_file), *args)

    assert (status, out) == (2, "")
    assert err.startswith(message) and err.count("\n") == 1


def test_a_missing_audit_file_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "--file", str(tmp_path / "none.jsonl"))

    assert (status, out) == (1, "")
    assert err.startswith("tollway: no audit file at") and err.count("\n") == 1 and "Traceback" not in err


def test_deployed_the_audit_log_group_is_queried_with_logs_insights(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with mock_aws():
        logs = boto3.client("logs")
        logs.create_log_group(logGroupName="/tollway/audit")
        logs.create_log_stream(logGroupName="/tollway/audit", logStreamName="s")
        records = as_of_now(RECORDS)
        events = [{"timestamp": int(time.time() * 1000) + i, "message": json.dumps(r)} for i, r in enumerate(records)]
        logs.put_log_events(logGroupName="/tollway/audit", logStreamName="s", logEvents=events)
        monkeypatch.setenv("TOLLWAY_AUDIT_LOG_GROUP", "/tollway/audit")

        status, out, err = run(capsys, "--tenant", "acme", "--decision", "denied", "--json")
        missing = main(["audit", "--log-group", "/tollway/nothing"])

    assert (status, err) == (0, "")
    assert ids(out) == ["r-acme-support__create_ticket-15", "r-acme-finance__download_statement-5"]
    assert missing == 1
    assert capsys.readouterr().err.startswith("tollway: cannot query audit log group /tollway/nothing")


def test_the_insights_query_narrows_by_every_filter_with_values_quoted() -> None:
    filters = Filters(tenant='ac"me', tool="finance__*", decision="denied")

    query = insights_query(filters, 50)

    assert query == (
        'fields @message | filter ispresent(audit) and tenant = "ac\\"me" and decision = "denied" '
        "and name like /^finance__.*$/ | sort @timestamp desc | limit 50"
    )
    assert insights_query(Filters(tool="a/b?"), 5) == (
        "fields @message | filter ispresent(audit) and name like /^a\\/b.$/ | sort @timestamp desc | limit 5"
    )
