"""Warm Lambda-handler figures: latency per tools/call and DynamoDB requests per call."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.__main__ import HANDLER, ROOT

MODERN = "2026-07-28"


@dataclass
class FakeContext:
    function_name: str = "bench-gateway"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:bench-gateway"
    aws_request_id: str = "bench"


def event(body: dict[str, Any], headers: dict[str, str], method: str = "POST") -> dict[str, Any]:
    raw = json.dumps(body).encode()
    headers = {**headers, "authorization": f"Bearer {os.environ['BENCH_TOKEN']}"}
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/mcp",
        "rawQueryString": "",
        "headers": {"host": "abc.execute-api.us-east-1.amazonaws.com", **headers},
        "requestContext": {
            "http": {"method": method, "path": "/mcp", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
            "requestId": "bench",
            "stage": "$default",
        },
        "body": base64.b64encode(raw).decode(),
        "isBase64Encoded": True,
    }


def modern_call(name: str, args: dict[str, Any], rid: int) -> dict[str, Any]:
    body = {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "tools/call",
        "params": {
            "name": name,
            "arguments": args,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": MODERN,
        "mcp-method": "tools/call",
        "mcp-name": name,
    }
    return event(body, headers)


def modern_list(rid: int) -> dict[str, Any]:
    body = {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "tools/list",
        "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        },
    }
    headers = {
        "content-type": "application/json",
        "accept": "application/json",
        "mcp-protocol-version": MODERN,
        "mcp-method": "tools/list",
    }
    return event(body, headers)


def legacy(method: str, params: dict[str, Any], rid: int, session: str | None) -> dict[str, Any]:
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    if session:
        headers.update({"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"})
    return event({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}, headers)


def bench_handler(calls: int) -> None:
    from moto import mock_aws

    with mock_aws():
        import boto3
        from tollway.store.tables import ensure_tables

        ensure_tables(boto3.client("dynamodb"), ROOT / "template.yaml", {"TollwayTable": "TollwayTable"})
        spec = importlib.util.spec_from_file_location("gateway_app_bench", HANDLER)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        ctx = FakeContext()
        store = module.app.state.endpoint.store
        counts: Counter[str] = Counter()
        store.client.meta.events.register("before-call.dynamodb.*", lambda model, **_: counts.update([model.name]))

        def invoke(ev: dict[str, Any]) -> dict[str, Any]:
            reply = module.handler(ev, ctx)
            assert reply["statusCode"] == 200, reply
            return reply

        args = {"card_number": "4242424242424242", "amount": 12.5}
        results = {}
        # --- 2026-07-28 -----------------------------------------------------------------------
        invoke(modern_call("finance__validate_transaction", args, 0))  # warm-up: probe, connections
        counts.clear()
        invoke(modern_call("finance__validate_transaction", args, 1))
        modern_call_ddb = sum(counts.values())
        counts.clear()
        invoke(modern_list(2))
        modern_list_ddb = sum(counts.values())
        results[MODERN] = _time(lambda i: invoke(modern_call("finance__validate_transaction", args, i)), calls)
        # --- 2025-11-25 (session) --------------------------------------------------------------
        init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
        reply = invoke(legacy("initialize", init, 0, None))
        session = reply["headers"]["mcp-session-id"]
        call = {"name": "finance__validate_transaction", "arguments": args}
        invoke(legacy("tools/call", call, 1, session))  # opens the upstream session
        counts.clear()
        invoke(legacy("tools/call", call, 2, session))
        legacy_call_ddb = dict(counts)
        counts.clear()
        invoke(legacy("tools/list", {}, 3, session))
        legacy_list_ddb = dict(counts)
        results["2025-11-25"] = _time(lambda i: invoke(legacy("tools/call", call, i, session)), calls)

    print("2. warm tools/call through the Lambda handler (Mangum + Starlette + JWT validation, upstream on")
    print("   127.0.0.1, moto in-process)")
    for era, times in results.items():
        print(f"   {era:>10}: p50 {_pct(times, 50):.2f} ms  p99 {_pct(times, 99):.2f} ms  ({len(times)} calls)")
    print("\n3. DynamoDB requests (botocore before-call events, warm instance)")
    print(f"   2026-07-28 tools/call: {modern_call_ddb}   tools/list: {modern_list_ddb}   (goal: 0 reads per call)")
    print(
        f"   2025-11-25 tools/call: {sum(legacy_call_ddb.values())} {legacy_call_ddb}   "
        f"tools/list: {sum(legacy_list_ddb.values())} {legacy_list_ddb}\n"
    )


def _time(fn: Any, n: int) -> list[float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i + 10)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _pct(values: list[float], pct: int) -> float:
    return statistics.quantiles(values, n=100)[pct - 1] if pct < 100 else max(values)
