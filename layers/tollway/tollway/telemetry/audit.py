"""The audit trail: one record per MCP request and per admin action, and where records go.

A record says who called what, when, and what came of it: never raw arguments, results, PII or
tokens, only their sizes and the SHA-256 of the masked arguments and result. Its shape is
versioned (`"audit": 1`) and documented field by field in the README ("Audit trail"); a field
that does not apply is left out, which keeps records small.

Sinks (`AuditLog.create` picks one):
- deployed (TOLLWAY_AUDIT_LOG_GROUP set by the template): CloudWatch Logs PutLogEvents into
  the audit log group of its own, one call per Lambda invocation (`AuditLog.batch`), made before
  the handler returns; if the put fails, the records are printed to stdout (the function's log)
  and counted as `AuditWriteFailures`, so none is lost;
- a file named by TOLLWAY_AUDIT_FILE, wherever the gateway runs (tests);
- on Lambda without either: stdout (the function's own log);
- locally (`tollway dev`): the JSON-lines file `audit.file` (default `.tollway/audit.jsonl`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from tollway import aws
from tollway.telemetry import count, logger

VERSION = 1
SCOPE_LOG = "tollway.audit_log"
"""ASGI scope key: the app's `AuditLog` (the telemetry middleware puts it there)."""
SCOPE_REQUEST = "tollway.audit_request"
"""ASGI scope key: (request id, start time) of the HTTP request, for records written below."""
SCOPE_WRITTEN = "tollway.audited"
"""ASGI scope key: True once an endpoint wrote the request's admin record itself."""
LOG_GROUP_ENV = "TOLLWAY_AUDIT_LOG_GROUP"
FILE_ENV = "TOLLWAY_AUDIT_FILE"
MAX_TEXT = 64
"""Caller-supplied text (client name and version) is cut to this many characters."""
_PUT_MAX_EVENTS = 10_000
_PUT_MAX_BYTES = 1_000_000  # PutLogEvents: 1,048,576 bytes with 26 bytes per event
_EVENT_OVERHEAD = 26


def digest(value: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of `value` (keys sorted, no spaces, UTF-8): what
    anyone holding the same masked payload can recompute."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# --- records -----------------------------------------------------------------------------------------
def mcp_record(
    facts: Any,
    *,
    request_id: str,
    principal: Any,
    client_info: dict[str, Any],
    era: str | None,
    status: int,
    ms: float,
    request_bytes: int,
    response_bytes: int,
) -> dict[str, Any]:
    """The record of one `/mcp` request. `facts`: its `context.AuditFacts`; `principal`: the
    caller (None before authentication)."""
    decision, rule, outcome = facts.decision, facts.rule, facts.outcome
    # Refusals no stage recorded (they came before one ran): by the answer they got.
    if decision == "allowed" and status == 401:
        decision = "unauthenticated"
    elif decision == "allowed" and status == 403:
        decision, rule = "denied", rule or facts.error  # a browser origin, or a scope the path needs
    elif decision == "allowed" and facts.error is not None and status < 500 and outcome is None:
        decision, rule = "invalid", rule or facts.error
    if outcome is None:
        outcome = "ok" if status < 400 and facts.error is None else ("refused" if decision != "allowed" else "error")
    record: dict[str, Any] = {
        "audit": VERSION,
        "time": _now(),
        "type": "mcp",
        "request_id": request_id,
        "tenant": getattr(principal, "tenant", None),
        "subject": getattr(principal, "subject", None),
        "client": _text(client_info.get("name")),
        "client_version": _text(client_info.get("version")),
        "era": era,
        "method": _text(facts.method),
        "name": facts.public_name,
        "upstream": facts.upstream,
        "upstream_name": facts.upstream_name,
        "decision": decision,
        "rule": rule,
        "approval_id": facts.approval_id,
        "outcome": outcome,
        "status": status,
        "units": facts.units or None,
        "ms": round(ms, 1),
        "upstream_ms": round(facts.upstream_ms, 1) if facts.upstream_ms is not None else None,
        "request_bytes": request_bytes,
        "response_bytes": response_bytes,
        "arguments_sha256": facts.arguments_sha256,
        "result_sha256": facts.result_sha256,
    }
    return {key: value for key, value in record.items() if value is not None}


def admin_record(
    *,
    request_id: str,
    principal: Any,
    action: str,
    target: str | None,
    outcome: str,
    status: int,
    ms: float,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "audit": VERSION,
        "time": _now(),
        "type": "admin",
        "request_id": request_id,
        "tenant": getattr(principal, "tenant", None),
        "subject": getattr(principal, "subject", None),
        "action": action,
        "target": target,
        "outcome": outcome,
        "status": status,
        "ms": round(ms, 1),
    }
    return {key: value for key, value in record.items() if value is not None}


def admin_action(
    request: Any, principal: Any, action: str, target: str | None = None, outcome: str = "ok", status: int = 200
) -> None:
    """The audit record of an admin action (`request`: the Starlette request). Endpoints call
    it once they know the outcome; a request refused before (401, 403, 400, 503) gets its record
    from the telemetry middleware instead."""
    scope = request.scope
    log: AuditLog | None = scope.get(SCOPE_LOG)
    if log is None:
        return
    request_id, started = scope.get(SCOPE_REQUEST, ("", time.perf_counter()))
    scope[SCOPE_WRITTEN] = True
    log.write(
        admin_record(
            request_id=request_id,
            principal=principal,
            action=action,
            target=target,
            outcome=outcome,
            status=status,
            ms=(time.perf_counter() - started) * 1000,
        )
    )


def admin_outcome(status: int) -> str:
    """The outcome of an admin request the endpoint did not record itself, by its status."""
    if status < 400:
        return "ok"
    return {401: "unauthenticated", 403: "denied", 404: "not_found"}.get(status, "invalid" if status < 500 else "error")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: Any) -> str | None:
    return value[:MAX_TEXT] if isinstance(value, str) and value else None


# --- sinks -------------------------------------------------------------------------------------------
class Sink(Protocol):
    def write(self, line: str, at_ms: int) -> None: ...

    def flush(self) -> None: ...


class FileSink:
    """JSON lines appended to a local file (created with its folder), one write per record."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, line: str, at_ms: int) -> None:
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def flush(self) -> None:
        pass


class StdoutSink:
    def write(self, line: str, at_ms: int) -> None:
        print(line, file=sys.stdout, flush=True)

    def flush(self) -> None:
        pass


class CloudWatchSink:
    """Records kept in memory and put into the audit log group in one PutLogEvents call (more
    only past its limits) when `flush` is called: once per Lambda invocation. The log stream is
    this instance's own, created on first use."""

    def __init__(self, group: str, client: Any = None) -> None:
        self.group = group
        self.stream = _stream_name()
        self._client = client
        self._created = False
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def write(self, line: str, at_ms: int) -> None:
        with self._lock:
            self._events.append({"timestamp": at_ms, "message": line})

    def flush(self) -> None:
        with self._lock:
            events, self._events = self._events, []
        if not events:
            return
        events.sort(key=lambda event: event["timestamp"])  # PutLogEvents wants them in order
        try:
            self._put(events)
        except Exception as exc:  # whatever the put failed with, the records must survive
            logger.warning(
                "audit records written to stdout: the audit log group did not take them",
                extra={"records": len(events), "cause": type(exc).__name__},
            )
            count("AuditWriteFailures", len(events))
            for event in events:
                print(event["message"], file=sys.stdout, flush=True)

    def _put(self, events: list[dict[str, Any]]) -> None:
        if self._client is None:
            self._client = aws.client("logs")  # bounded waits: the invocation's answer waits on this put
        client = self._client
        if not self._created:
            with contextlib.suppress(client.exceptions.ResourceAlreadyExistsException):
                client.create_log_stream(logGroupName=self.group, logStreamName=self.stream)
            self._created = True
        for batch in _batches(events):
            client.put_log_events(logGroupName=self.group, logStreamName=self.stream, logEvents=batch)


def _batches(events: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    size = 0
    for event in events:
        event_size = len(event["message"].encode()) + _EVENT_OVERHEAD
        if batch and (len(batch) == _PUT_MAX_EVENTS or size + event_size > _PUT_MAX_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(event)
        size += event_size
    if batch:
        yield batch


def _stream_name() -> str:
    """The function instance's own log stream name where Lambda gives one (one writer per stream)."""
    own = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
    return own or f"{datetime.now(UTC):%Y/%m/%d}/{uuid.uuid4().hex}"


# --- the log -------------------------------------------------------------------------------------------
class AuditLog:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self._held = False

    @classmethod
    def create(cls, file: str) -> AuditLog:
        """The sink for where the gateway runs (see the module docstring); `file`: `audit.file`."""
        group, named_file = os.environ.get(LOG_GROUP_ENV), os.environ.get(FILE_ENV)
        if group:
            return cls(CloudWatchSink(group))
        if named_file:
            return cls(FileSink(named_file))
        if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
            return cls(StdoutSink())  # a read-only file system: the function's own log
        return cls(FileSink(file))

    @property
    def file(self) -> str | None:
        """The absolute path of the file records go to, if they go to one (`tollway dev`
        publishes it, so `tollway audit` finds it from any directory)."""
        return str(self.sink.path.resolve()) if isinstance(self.sink, FileSink) else None

    @property
    def where(self) -> str:
        """Where records go, for people: the file, the log group, or stdout."""
        if isinstance(self.sink, FileSink):
            return str(self.sink.path)
        if isinstance(self.sink, CloudWatchSink):
            return f"CloudWatch Logs {self.sink.group}"
        return "stdout"

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str)
        try:
            self.sink.write(line, int(time.time() * 1000))
            if not self._held:
                self.sink.flush()
        except OSError as exc:  # a full disk or a vanished folder: the record goes to stdout
            logger.warning("audit record written to stdout", extra={"cause": type(exc).__name__})
            count("AuditWriteFailures", 1)
            print(line, file=sys.stdout, flush=True)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Hold records until the block ends, then write them in one go (a Lambda invocation)."""
        self._held = True
        try:
            yield
        finally:
            self._held = False
            self.sink.flush()
