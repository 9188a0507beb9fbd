"""Warm Lambda-handler figures: latency per tools/call and DynamoDB requests per call."""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
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


def bench_handler(calls: int, config_path: Path, lease_config: Path) -> None:
    from moto import mock_aws

    with mock_aws():
        import boto3
        from tollway.store.tables import ensure_tables

        ensure_tables(boto3.client("dynamodb"), ROOT / "template.yaml", {"TollwayTable": "TollwayTable"})
        os.environ["TOLLWAY_RESPONSE_MODE"] = "buffered"  # as the template sets for the Mangum function
        try:
            exact = _run(calls, config_path, "gateway_app_bench")
            lease = _run(calls, lease_config, "gateway_app_bench_lease")
        finally:
            del os.environ["TOLLWAY_RESPONSE_MODE"]  # the local servers of later sections stream

    print("2. warm tools/call through the Lambda handler (Mangum + Starlette + JWT validation + quota + usage,")
    print("   upstream on 127.0.0.1, moto in-process)")
    print(
        f"   first request after the import (upstream probe, JWKS fetch, DynamoDB client, connections): "
        f"{exact['first_ms']:.1f} ms"
    )
    for era, times in exact["times"].items():
        print(f"   {era:>28}: p50 {_pct(times, 50):6.2f} ms  p99 {_pct(times, 99):6.2f} ms  ({len(times)} calls)")
    print("\n3. DynamoDB requests (and billed write units) per request, warm instance, botocore events")
    for label, run in (("exact quotas (lease_units 1)", exact), ("quota leases (lease_units 100)", lease)):
        print(f"   {label}:")
        for what, (count, by_op) in run["requests"].items():
            print(f"     {what:<22} {count:5.2f}  {by_op}")
    print()
    print("4. cost per million tools/call: in the summary at the end, from the figures measured in this run\n")


def _run(calls: int, config_path: Path, module_name: str) -> dict[str, Any]:
    os.environ["TOLLWAY_CONFIG"] = str(config_path)
    spec = importlib.util.spec_from_file_location(module_name, HANDLER)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    ctx = FakeContext()
    endpoint = module.app.state.endpoint
    counts: Counter[str] = Counter()

    def count(operation: str, params: dict[str, Any]) -> None:
        counts.update([operation])
        # Billing: a transactional write costs 2 write units per KB of each item; a plain write 1
        # per KB of the larger of the item before and after (`_write_units` reads the item's size).
        if operation == "TransactWriteItems":
            counts.update({"write units": 2 * len(params.get("TransactItems", []))})
        elif operation in ("PutItem", "UpdateItem", "DeleteItem") and counting:
            counts.update({"write units": _write_units(params)})

    dynamodb_ms: list[float] = []
    pipeline = endpoint.pipeline
    stores = (endpoint.store, pipeline.quota.ledger, pipeline.exposure.gate.store)
    on_requests(stores, count)
    from tollway.store.table import DynamoTable

    timed = DynamoTable._request

    def timed_request(self: Any, operation: str, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return timed(self, operation, **kwargs)
        finally:
            dynamodb_ms.append((time.perf_counter() - started) * 1000)

    DynamoTable._request = timed_request  # type: ignore[method-assign]

    def invoke(ev: dict[str, Any]) -> dict[str, Any]:
        reply = module.handler(ev, ctx)
        assert reply["statusCode"] == 200, reply
        return reply

    counting: list[bool] = []  # true while `per_request` counts (reading item sizes costs time)

    def per_request(label: str, make: Any, n: int) -> None:
        counts.clear()
        counting.append(True)
        for i in range(n):
            invoke(make(i))
        counting.clear()
        calls = sum(v for k, v in counts.items() if k != "write units")
        requests[label] = (calls / n, {k: round(v / n, 2) for k, v in counts.items()})

    args = {"card_number": "4242424242424242", "amount": 12.5}
    requests: dict[str, tuple[float, dict[str, float]]] = {}
    times: dict[str, list[float]] = {}
    first = time.perf_counter()  # the instance's first request: probe, JWKS, DynamoDB client, connections
    invoke(modern_call("finance__validate_transaction", args, 0))
    first_ms = (time.perf_counter() - first) * 1000
    per_request("2026-07-28 tools/call", lambda i: modern_call("finance__validate_transaction", args, i), 50)
    per_request("2026-07-28 tools/list", lambda i: modern_list(i), 5)
    dynamodb_ms.clear()
    times[MODERN] = _time(lambda i: invoke(modern_call("finance__validate_transaction", args, i)), calls)
    times[f"{MODERN} minus DynamoDB"] = _minus(times[MODERN], dynamodb_ms, calls)
    init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
    session = invoke(legacy("initialize", init, 0, None))["headers"]["mcp-session-id"]
    call = {"name": "finance__validate_transaction", "arguments": args}
    invoke(legacy("tools/call", call, 1, session))  # opens the upstream session
    per_request("2025-11-25 tools/call", lambda i: legacy("tools/call", call, i, session), 50)
    per_request("2025-11-25 tools/list", lambda i: legacy("tools/list", {}, i, session), 5)
    dynamodb_ms.clear()
    times["2025-11-25"] = _time(lambda i: invoke(legacy("tools/call", call, i, session)), calls)
    times["2025-11-25 minus DynamoDB"] = _minus(times["2025-11-25"], dynamodb_ms, calls)
    DynamoTable._request = timed  # type: ignore[method-assign]
    return {"times": times, "requests": requests, "first_ms": first_ms}


def on_requests(stores: Any, callback: Any) -> None:
    """`callback(operation, params)` for each DynamoDB request the stores send: botocore's
    `before-send` event, which the boto3 client and the stores' DynamoWire both emit."""
    emitters = {id(c.meta.events): c.meta.events for c in (getattr(s, "client", None) for s in stores) if c}

    def hook(request: Any, event_name: str, **_: Any) -> None:
        callback(event_name.rsplit(".", 1)[1], json.loads(request.body or b"{}"))

    for events in emitters.values():
        events.register("before-send.dynamodb.*", hook)


def _write_units(params: dict[str, Any]) -> int:
    """Write units an UpdateItem/PutItem/DeleteItem is billed: 1 per started KB of the item as it
    stands after the write (for these counters, the larger of before and after), and as much
    again when the item carries the index's keys (ByMonth projects every attribute, so the index
    takes the write too)."""
    key = params.get("Key") or {k: params["Item"][k] for k in ("pk", "sk")}
    item = _reader().get_item(TableName=params["TableName"], Key=key).get("Item") or {}
    units = max(1, -(-_item_bytes(item) // 1024))
    return units * 2 if "gsi1pk" in item else units


@functools.cache
def _reader() -> Any:
    import boto3

    return boto3.client("dynamodb")


def _item_bytes(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB bills it: attribute names plus values (numbers ~ digits / 2 + 1)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        (kind, raw), *_ = value.items()
        if kind == "S":
            size += len(raw.encode())
        elif kind == "N":
            size += len(raw.lstrip("-").replace(".", "")) // 2 + 2
        else:
            size += 1
    return size


def _minus(totals: list[float], dynamodb_ms: list[float], calls: int) -> list[float]:
    """Per-call time without DynamoDB (here moto, in-process and slow), spread evenly."""
    per_call = sum(dynamodb_ms) / calls
    return [max(0.0, t - per_call) for t in totals]


def _time(fn: Any, n: int) -> list[float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(i + 10)
        times.append((time.perf_counter() - start) * 1000)
    return times


def _pct(values: list[float], pct: int) -> float:
    return statistics.quantiles(values, n=100)[pct - 1] if pct < 100 else max(values)
