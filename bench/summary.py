"""The one table `make bench` ends with: Tollway (every feature off, fully on with exact quotas,
fully on with quota leases) and FastMCP's proxy side by side in both eras, with the cost per
million calls worked out from what was measured in the same run, and the model's inputs printed.

Lambda duration: what the handler measured in-process (CPU per call, on this host) scaled to the
vCPU share Lambda gives the template's memory size (1,769 MB = one vCPU), plus the time spent
waiting on DynamoDB (an input: real DynamoDB's in-region latency, not the emulator's). The
upstream's own time is not the gateway's and is left out (each millisecond of it adds
`lambda_per_gb_second x memory` per call). Log bytes: the function's log lines and EMF records
at the template's level and metrics window, the audit record, and API Gateway's access-log line
(rendered from the template's format), each with CloudWatch's 26-byte event overhead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bench.__main__ import ROOT

MODERN, LEGACY = "2026-07-28", "2025-11-25"
FULL_VCPU_MB = 1769
"""Lambda gives one full vCPU at 1,769 MB, and CPU in proportion below it."""
LAMBDA_GB_SECOND = 0.0000133334
"""arm64 Lambda's price per GB-second (us-east-1)."""
DYNAMODB_MS_PER_REQUEST = 4.0
"""In-region DynamoDB UpdateItem latency, as waited on by the function (an input: not measured here)."""
EVENT_OVERHEAD_BYTES = 26
XRAY_PER_MILLION_TRACES = 5.0
XRAY_SAMPLED = 0.05
"""X-Ray's default rule: the first request each second, then 5 %: at high volume ~5 % of calls."""
AGENTCORE_PER_MILLION = 5.0


def template_memory_mb() -> int:
    match = re.search(r"^\s+MemorySize:\s*(\d+)", (ROOT / "template.yaml").read_text(), re.M)
    return int(match.group(1)) if match else 1024


def access_log_bytes() -> int:
    """API Gateway's access-log line for one call: the template's format with typical values."""
    text = (ROOT / "template.yaml").read_text()
    start = text.index("Format: >-")
    lines = []
    for line in text[start:].splitlines()[1:]:
        if not line.startswith("          "):
            break
        lines.append(line.strip())
    typical = {
        "$context.requestId": "dGhpcyBpcyBhIHJlcXVlc3Q=",
        "$context.identity.sourceIp": "203.0.113.17",
        "$context.requestTime": "04/Dec/2026:23:45:20 +0000",
        "$context.httpMethod": "POST",
        "$context.routeKey": "$default",
        "$context.status": "200",
        "$context.protocol": "HTTP/1.1",
        "$context.responseLength": "412",
        "$context.responseLatency": "38",
        "$context.integrationLatency": "36",
        "$context.integrationErrorMessage": "-",
        "$context.error.message": "-",
    }
    line = "".join(lines)
    for key in sorted(typical, key=len, reverse=True):
        line = line.replace(key, typical[key])
    return len(line.encode())


def cost_inputs(handler: dict[str, Any], era: str, memory_mb: int) -> dict[str, float]:
    """The cost model's inputs for one configuration and era, from its handler measurement."""
    figures = handler[era]
    lambda_ms = figures["cpu_ms"] * max(1.0, FULL_VCPU_MB / memory_mb) + DYNAMODB_MS_PER_REQUEST * figures["requests"]
    log_bytes = (
        figures["log_bytes"]
        + figures["log_events"] * EVENT_OVERHEAD_BYTES
        + figures["audit_bytes"]
        + figures["audit_events"] * EVENT_OVERHEAD_BYTES
        + access_log_bytes()
        + EVENT_OVERHEAD_BYTES
    )
    return {
        "lambda_ms": lambda_ms,
        "writes": figures["write_units"],
        "reads": figures["read_units"],
        "log_bytes": log_bytes,
    }


def cost_per_million(inputs: dict[str, float], memory_mb: int) -> float:
    from tollway.config import CostModel
    from tollway.finance.report import cost_per_million_calls

    model = CostModel(
        lambda_memory_mb=memory_mb,
        lambda_overhead_ms=inputs["lambda_ms"],
        dynamodb_writes_per_call=inputs["writes"],
        dynamodb_reads_per_call=inputs["reads"],
        log_bytes_per_call=round(inputs["log_bytes"]),
    )
    return cost_per_million_calls(model)


def print_summary(
    cpu: dict[str, dict[str, float]],
    handlers: dict[str, dict[str, Any]],
    cold_import: dict[str, float] | None,
    labels: dict[str, str],
) -> dict[str, Any]:
    """`cpu`: section 5's {server: {era: CPU ms}}; `handlers`: {config: lambda_cost figures};
    `labels`: config name -> its label in `cpu`. Prints the table; returns its figures as JSON-able."""
    memory = template_memory_mb()
    peer = cpu["FastMCP proxy"]
    print("Summary: Tollway and FastMCP side by side, one run (ratios are to FastMCP in the same era)")
    head = f"   {'':<32}"
    for era in (MODERN, LEGACY):
        head += f" | {era + ' server CPU':^23} {'Lambda CPU':>10} {'DDB req':>7} {'WCU':>5} {'$/M':>6}"
    print(head)
    out: dict[str, Any] = {"memory_mb": memory, "rows": {}}
    for name, label in labels.items():
        row = f"   {label:<32}"
        cells: dict[str, Any] = {}
        for era in (MODERN, LEGACY):
            server = cpu[label][era]
            handler = handlers[name][era]
            inputs = cost_inputs(handlers[name], era, memory)
            dollars = cost_per_million(inputs, memory)
            row += (
                f" | {server:6.2f} ms ({server / peer[era]:4.2f}x)     {handler['cpu_ms']:7.2f} ms"
                f" {handler['requests']:7.2f} {handler['write_units']:5.2f} {dollars:6.2f}"
            )
            cells[era] = {
                "server_cpu_ms": server,
                "ratio_to_fastmcp": server / peer[era],
                "lambda_cpu_ms": handler["cpu_ms"],
                "dynamodb_requests": handler["requests"],
                "write_units": handler["write_units"],
                "cost_per_million": dollars,
                "inputs": inputs,
            }
        out["rows"][name] = cells
        print(row)
    row = f"   {'FastMCP proxy':<32}"
    for era in (MODERN, LEGACY):
        row += f" | {peer[era]:6.2f} ms (1.00x)     {'-':>10} {'-':>7} {'-':>5} {'-':>6}"
    print(row)
    first = {name: handlers[name]["first_request_ms"] for name in labels}
    cold_import_ms = None
    if cold_import is not None:
        cold_import_ms, libraries = cold_import["handler_ms"], cold_import["libraries_ms"]
        print(
            f"   cold import (runtime Python, layer bytecode, config as sam build bundles it): {cold_import_ms:.0f} ms"
            f" (goal <= 200 ms); its libraries alone {libraries:.0f} ms, Tollway's own part"
            f" {cold_import_ms - libraries:.0f} ms; a YAML config source {cold_import['yaml_config_ms']:.0f} ms"
        )
        if "baseline_ms" in cold_import:
            baseline = cold_import["baseline_ms"]
            print(
                f"   the goal's baseline (the code that read 201 ms when it was set) in the same turns:"
                f" {baseline:.0f} ms; today's import {cold_import_ms / baseline:.2f}x of it"
            )
        if "handler_minstr" in cold_import:
            print(
                f"   cold import in instructions: {cold_import['handler_minstr']:.0f} M, libraries alone"
                f" {cold_import['libraries_minstr']:.0f} M,"
                f" a YAML config source {cold_import['yaml_config_minstr']:.0f} M"
            )
        out["cold_import"] = cold_import
    print("   first request after the import: " + ", ".join(f"{n} {ms:.0f} ms" for n, ms in first.items()))
    print_first_request(handlers["exact"], cold_import_ms, memory)
    print(
        f"   cost model inputs (per call, {MODERN}; {memory} MB, CPU x{max(1.0, FULL_VCPU_MB / memory):.2f} for "
        f"Lambda's vCPU share, DynamoDB {DYNAMODB_MS_PER_REQUEST:.0f} ms per request waited):"
    )
    for name in labels:
        inputs = out["rows"][name][MODERN]["inputs"]
        figures = handlers[name][MODERN]
        print(
            f"     {name:<7} Lambda {inputs['lambda_ms']:5.1f} ms, {inputs['writes']:.2f} WCU,"
            f" {inputs['reads']:.2f} RCU,"
            f" log bytes {inputs['log_bytes']:.0f} (function {figures['log_bytes']:.0f} in"
            f" {figures['log_events']:.2f} events, audit {figures['audit_bytes']:.0f}, API access"
            f" {access_log_bytes()}, +26 per event)"
        )
    xray = XRAY_PER_MILLION_TRACES * XRAY_SAMPLED
    print(
        f"   not in $/M: X-Ray at its default sampling (~{XRAY_SAMPLED:.0%} of calls) adds ~${xray:.2f}; the"
        f" upstream's own time adds ${memory / 1024 * 0.001 * LAMBDA_GB_SECOND * 1e6:.4f} per ms."
        f" Peer: AgentCore Gateway ${AGENTCORE_PER_MILLION:.2f} per million tool calls before Lambda/upstream costs."
    )
    print("   goals: server CPU fully on <= 1.0x, every feature off <= 0.5x; exact quotas <= $2.50 per million\n")
    return out


def print_first_request(figures: dict[str, Any], cold_import_ms: float | None, memory_mb: int) -> None:
    """Where the first request's time goes (fully on, exact quotas: every part there is), and
    what a cold start costs at the template's memory size (host ms scaled by the model's vCPU
    share, as for warm calls)."""
    parts = figures["first_request_parts"]
    from bench.first_request import PARTS

    modules = ", ".join(f"{name or 'relative'} {ms:.0f}" for name, ms in figures["first_request_imports"].items())
    print(
        "   first request, exact, where the time goes (ms, each part on its own): "
        + ", ".join(f"{name} {parts.get(name, 0.0):.0f}" for name in (*PARTS, "rest"))
        + f"; first imports: {modules}"
    )
    cold_ms = (cold_import_ms or figures["import_ms"]) + figures["first_request_ms"]
    billed_ms = cold_ms * max(1.0, FULL_VCPU_MB / memory_mb)
    dollars = memory_mb / 1024 * billed_ms / 1000 * LAMBDA_GB_SECOND
    print(
        f"   a cold start (import + first request, {cold_ms:.0f} ms here, ~{billed_ms:.0f} ms at {memory_mb} MB)"
        f" costs ${dollars * 1e6:.2f} per million cold starts of Lambda time"
    )


def write_json(figures: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(figures, indent=2) + "\n")
