"""What Lambda bills per warm `tools/call`: the handler in-process (Mangum, API Gateway v2 events),
in a fresh process per configuration, as a deployed instance runs it.

Measured per call, in both eras: the handler's CPU time (`time.process_time()`, every thread),
its wall time, DynamoDB requests and billed write units (botocore events; DynamoDB is moto's
server in a process of its own, so its work is not counted), the bytes the function writes to
its log group at the template's level (INFO, EMF metrics on) and the bytes of audit records.
Also the instance's first request (probe, JWKS, DynamoDB client, connections), and where its time
goes (bench/first_request.py).

    python -m bench.lambda_cost CONFIG DYNAMODB_URL CALLS   (prints one JSON line; run by bench)
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.__main__ import HANDLER, ROOT

MODERN, LEGACY = "2026-07-28", "2025-11-25"
TOOL = "finance__validate_transaction"
ARGUMENTS = {"card_number": "4242424242424242", "amount": 12.5}


def measure(config: Path, dynamodb: str, calls: int) -> dict[str, Any]:
    """Runs this module in a fresh process (the handler is imported once per instance) with the
    template's logging (INFO, metrics on) and returns its figures."""
    import boto3
    from tollway.store.tables import ensure_tables

    # Here, not in the child: the child's first request imports boto3, as a Lambda instance's does.
    tables = {"TollwayTable": "TollwayTable"}
    ensure_tables(boto3.client("dynamodb", endpoint_url=dynamodb), ROOT / "template.yaml", tables)
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "TOLLWAY_CONFIG": str(config),
            "AWS_ENDPOINT_URL_DYNAMODB": dynamodb,
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "POWERTOOLS_METRICS_DISABLED": "false",
            "TOLLWAY_AUDIT_FILE": str(Path(tmp) / "audit.jsonl"),
            "TOLLWAY_METRICS_WINDOW_SECONDS": str(metrics_window_seconds()),
            "TOLLWAY_RESPONSE_MODE": "buffered",  # as the template sets for the Mangum function
        }
        with open(os.environ.get("BENCH_KEEP_STDOUT") or Path(tmp) / "stdout", "wb") as stdout:
            run = subprocess.run(
                [sys.executable, "-m", "bench.lambda_cost", str(config), dynamodb, str(calls)],
                cwd=ROOT,
                env=env,
                stdout=stdout,
                stderr=subprocess.PIPE,
                text=True,
            )
        if run.returncode != 0:
            raise RuntimeError(f"bench.lambda_cost failed:\n{run.stderr[-2000:]}")
        return json.loads(run.stderr.strip().splitlines()[-1])


def metrics_window_seconds() -> int:
    """The template's default for MetricsWindowSeconds (what a deployment runs with)."""
    text = (ROOT / "template.yaml").read_text()
    block = text[text.index("  MetricsWindowSeconds:") :]
    return int(block.split("Default:", 1)[1].split()[0])


def _child(config: Path, dynamodb: str, calls: int) -> dict[str, Any]:
    from bench.handler import FakeContext, legacy, modern_call

    import_started = time.perf_counter()
    spec = importlib.util.spec_from_file_location("gateway_app", HANDLER)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    import_ms = (time.perf_counter() - import_started) * 1000
    context = FakeContext()

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        reply = module.handler(event, context)
        if reply["statusCode"] != 200 or '"error"' in reply["body"][:200]:
            raise RuntimeError(f"handler answered {reply['statusCode']}: {reply['body'][:300]}")
        return reply

    out: dict[str, Any] = {"import_ms": import_ms}
    from bench.first_request import breakdown

    with breakdown() as parts:
        started = time.perf_counter()
        invoke(modern_call(TOOL, ARGUMENTS, 0))
        out["first_request_ms"] = (time.perf_counter() - started) * 1000
    out["first_request_parts"] = {**parts, "rest": out["first_request_ms"] - sum(parts.values())}
    out["first_request_imports"] = dict(parts.modules.most_common(6))
    counter = _DynamoCounter(module.app.state.endpoint)
    init = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
    session = invoke(legacy("initialize", init, 0, None))["headers"]["mcp-session-id"]
    invoke(legacy("tools/call", {"name": TOOL, "arguments": ARGUMENTS}, 1, session))  # the upstream session
    makers = {
        MODERN: lambda i: modern_call(TOOL, ARGUMENTS, i),
        LEGACY: lambda i: legacy("tools/call", {"name": TOOL, "arguments": ARGUMENTS}, i, session),
    }
    audit = Path(os.environ["TOLLWAY_AUDIT_FILE"])
    for era, make in makers.items():
        for i in range(20):  # warm: catalogs, caches, connections
            invoke(make(i))
        sys.stdout.flush()
        logs_before, audit_before = _lines(sys.stdout.fileno()), _lines_of(audit)
        cpu, wall = time.process_time(), time.perf_counter()
        for i in range(calls):
            invoke(make(i))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        sys.stdout.flush()
        logs, audits = _lines(sys.stdout.fileno()), _lines_of(audit)
        requests, units, reads = counter.count(lambda make=make: [invoke(make(i)) for i in range(50)], 50)
        out[era] = {
            "cpu_ms": cpu * 1000 / calls,
            "wall_ms": wall * 1000 / calls,
            "log_bytes": (logs[0] - logs_before[0]) / calls,
            "log_events": (logs[1] - logs_before[1]) / calls,
            "audit_bytes": (audits[0] - audit_before[0]) / calls,
            "audit_events": (audits[1] - audit_before[1]) / calls,
            "requests": requests,
            "write_units": units,
            "read_units": reads,
        }
    return out


class _DynamoCounter:
    """DynamoDB requests and billed write units, from botocore's `before-send` on the stores' client."""

    def __init__(self, endpoint: Any) -> None:
        from bench.handler import on_requests

        self._counts: Counter[str] = Counter()
        self._on = False
        pipeline = endpoint.pipeline
        on_requests((endpoint.store, pipeline.quota.ledger, pipeline.exposure.gate.store), self._count)

    def _count(self, operation: str, params: dict[str, Any]) -> None:
        if not self._on:
            return
        self._counts["requests"] += 1
        if operation in ("GetItem", "Query", "BatchGetItem"):
            self._counts["reads"] += 1  # at most one read unit each here (small items)
        if operation == "TransactWriteItems":
            self._counts["units"] += 2 * len(params.get("TransactItems", []))
        elif operation in ("PutItem", "UpdateItem", "DeleteItem"):
            from bench.handler import _write_units  # reads the item with a client of its own

            self._counts["units"] += _write_units(params)

    def count(self, run: Any, n: int) -> tuple[float, float, float]:
        self._counts.clear()
        self._on = True
        try:
            run()
        finally:
            self._on = False
        return self._counts["requests"] / n, self._counts["units"] / n, self._counts["reads"] / n


def _lines(fd: int) -> tuple[int, int]:
    """(bytes, lines) written so far to the file behind `fd` (log events are lines)."""
    with open(f"/proc/self/fd/{fd}", "rb") as f:
        data = f.read()
    return len(data), data.count(b"\n")


def _lines_of(path: Path) -> tuple[int, int]:
    data = path.read_bytes() if path.exists() else b""
    return len(data), data.count(b"\n")


if __name__ == "__main__":
    result = _child(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))
    print(json.dumps(result), file=sys.stderr)
