"""Reading the audit trail back (`tollway audit`): the local JSON-lines file in dev, CloudWatch
Logs Insights over the audit log group when deployed.

The filters are applied by `matches` to every record either source returns; the Insights query
narrows the same way server-side (`insights_query`), so fewer records travel and the result
limit is spent on records that match.
"""

from __future__ import annotations

import fnmatch
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DECISIONS = ("allowed", "denied", "rate_limited", "withheld", "pending_approval", "invalid", "unauthenticated")
_SINCE = re.compile(r"^(\d{1,6})([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
QUERY_TIMEOUT_SECONDS = 60.0


class AuditQueryError(Exception):
    """A filter that cannot be used, or a source that cannot be read (one line for the CLI)."""


@dataclass(frozen=True)
class Filters:
    tenant: str | None = None
    tool: str | None = None
    """A glob on the public name (`finance__*`)."""
    since: timedelta | None = None
    decision: str | None = None


def parse_since(text: str) -> timedelta:
    """`30m`, `1h`, `2d`, `45s`."""
    found = _SINCE.fullmatch(text.strip())
    if found is None:
        raise AuditQueryError(f"--since must be a number and a unit (s, m, h, d), e.g. 30m or 2d (got {text!r})")
    return timedelta(seconds=int(found.group(1)) * _SECONDS[found.group(2)])


def matches(record: dict[str, Any], filters: Filters, now: datetime) -> bool:
    if record.get("audit") is None:
        return False
    if filters.tenant is not None and record.get("tenant") != filters.tenant:
        return False
    if filters.decision is not None and record.get("decision") != filters.decision:
        return False
    if filters.tool is not None and not fnmatch.fnmatchcase(str(record.get("name", "")), filters.tool):
        return False
    if filters.since is not None:
        at = _time(record)
        if at is None or at < now - filters.since:
            return False
    return True


def read_file(path: str, filters: Filters, now: datetime | None = None) -> list[dict[str, Any]]:
    """The matching records of a local audit file, oldest first (unreadable lines skipped)."""
    now = now or datetime.now(UTC)
    file = Path(path)
    if not file.exists():
        raise AuditQueryError(f"no audit file at {path} (run `tollway dev`, or set --file / TOLLWAY_AUDIT_FILE)")
    return [record for record in _lines(file) if matches(record, filters, now)]


def _lines(file: Path) -> Iterator[dict[str, Any]]:
    with file.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def insights_query(filters: Filters, limit: int) -> str:
    """The Logs Insights query for `filters` (values quoted; the tool glob as an anchored regex)."""
    conditions = ["ispresent(audit)"]
    if filters.tenant is not None:
        conditions.append(f"tenant = {_quote(filters.tenant)}")
    if filters.decision is not None:
        conditions.append(f"decision = {_quote(filters.decision)}")
    if filters.tool is not None:
        conditions.append(f"name like /{_glob_regex(filters.tool)}/")
    return f"fields @message | filter {' and '.join(conditions)} | sort @timestamp desc | limit {limit}"


def read_insights(
    log_group: str, filters: Filters, limit: int, client: Any = None, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The matching records of the audit log group, oldest first, through one Insights query."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    now = now or datetime.now(UTC)
    client = client or boto3.client("logs")
    start = now - (filters.since or timedelta(days=1))
    try:
        query = client.start_query(
            logGroupName=log_group,
            startTime=int(start.timestamp()),
            endTime=int(now.timestamp()) + 1,
            queryString=insights_query(filters, limit),
            limit=limit,
        )
        deadline = time.monotonic() + QUERY_TIMEOUT_SECONDS
        while True:
            answer = client.get_query_results(queryId=query["queryId"])
            if answer["status"] in ("Complete", "Failed", "Cancelled", "Timeout"):
                break
            if time.monotonic() > deadline:
                raise AuditQueryError(f"the Logs Insights query on {log_group} did not finish in time")
            time.sleep(0.5)
    except (BotoCoreError, ClientError) as exc:
        raise AuditQueryError(f"cannot query audit log group {log_group}: {exc}") from None
    if answer["status"] != "Complete":
        raise AuditQueryError(f"the Logs Insights query on {log_group} ended {answer['status']}")
    records = []
    for row in answer["results"]:
        message = next((cell["value"] for cell in row if cell["field"] == "@message"), None)
        try:
            record = json.loads(message) if message else None
        except ValueError:
            continue
        if isinstance(record, dict) and matches(record, filters, now):
            records.append(record)
    return sorted(records, key=lambda record: str(record.get("time", "")))


def format_line(record: dict[str, Any]) -> str:
    """One record, one line: time, who, what, decision (and why), outcome, status, units, ms."""
    who = f"{record.get('tenant', '-')}/{record.get('subject', '-')}"
    if record.get("type") == "admin":
        what = f"admin {record.get('action', '-')} {record.get('target', '')}".rstrip()
        decision = "-"
    else:
        what = f"{record.get('method', '-')} {record.get('name', '')}".rstrip()
        decision = str(record.get("decision", "-"))
        if record.get("rule"):
            decision += f" ({record['rule']})"
    fields = [
        str(record.get("time", "-")),
        who,
        what,
        decision,
        str(record.get("outcome", "-")),
        str(record.get("status", "-")),
        f"units={record.get('units', 0)}",
        f"{record.get('ms', 0)}ms",
    ]
    return "\t".join(fields)


def render(records: Iterable[dict[str, Any]], as_json: bool) -> str:
    if as_json:
        return "".join(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n" for record in records)
    return "".join(format_line(record) + "\n" for record in records)


def _time(record: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(record.get("time", "")).replace("Z", "+00:00"))
    except ValueError:
        return None


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _glob_regex(glob: str) -> str:
    """`finance__*` -> `^finance__.*$`, every other character literal (slashes escaped for /…/)."""
    parts = []
    for char in glob:
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char).replace("/", "\\/"))
    return "^" + "".join(parts) + "$"
