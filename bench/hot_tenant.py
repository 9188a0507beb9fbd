"""Section 11: one hot tenant, many concurrent admitters, its day on one item or spread over shards.

Each admitter plays a Lambda instance (its own boto3 client and QuotaEnforcer) in a thread of this
process; DynamoDB is the emulator in its own process. The emulator is not DynamoDB: it has no
per-partition limit (DynamoDB's ~1,000 writes/s per item is what shards are for), so the figures
here are what sharding costs or saves in requests and in this process's CPU, compared as ratios
within one run.

    python -m bench.hot_tenant [--calls 1200] [--admitters 16] [--shards 8]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

PLAN = {"per_second": 1_000_000, "per_day": 100_000_000, "per_month": 1_000_000_000}
"""Limits that never refuse here: every call is admitted, so calls/s is the admission rate."""


def _config(shards: int) -> Any:
    from tollway.config import parse_config

    return parse_config(
        {
            "resource": "https://gateway.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": [{"name": "finance", "url": "http://127.0.0.1:9/mcp"}],
            "quotas": {"plans": {"hot": {"tenant": PLAN, "shards": shards}}, "default_plan": "hot"},
        }
    )


def _run(dynamodb: str, table: str, shards: int, calls: int, admitters: int) -> dict[str, float]:
    import boto3
    from botocore.config import Config
    from tollway.context import Principal
    from tollway.policy.quota import QuotaEnforcer
    from tollway.store.ledger import DynamoLedger
    from tollway.store.wire import DynamoWire

    session = boto3.session.Session()
    config = Config(max_pool_connections=admitters, retries={"total_max_attempts": 1})
    clients = [session.client("dynamodb", endpoint_url=dynamodb, config=config) for _ in range(admitters)]
    sent = {"n": 0}
    lock = threading.Lock()

    def count(**_: Any) -> None:
        with lock:
            sent["n"] += 1

    for client in clients:
        client.meta.events.register("before-send.dynamodb.UpdateItem", count)
    wires = [DynamoWire(client, session.get_credentials()) for client in clients]  # as deployed
    enforcers = [QuotaEnforcer(_config(shards), DynamoLedger(table, wire)) for wire in wires]
    caller = Principal(subject="agent", tenant=f"hot-{uuid.uuid4().hex[:8]}")
    for enforcer in enforcers:  # warm: each instance's first charge of each item reads its month base
        for _ in range(3 * shards):
            enforcer.admit(caller, "finance__run_forecast")
    sent["n"] = 0
    start = threading.Barrier(admitters + 1)

    def admitter(i: int) -> None:
        start.wait()
        for _ in range(i, calls, admitters):
            enforcers[i].admit(caller, "finance__run_forecast")

    with ThreadPoolExecutor(admitters) as pool:
        done = [pool.submit(admitter, i) for i in range(admitters)]
        start.wait()
        wall, cpu = time.perf_counter(), time.process_time()
        for future in done:
            future.result()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"calls_per_s": calls / wall, "updates_per_call": sent["n"] / calls, "cpu_ms_per_call": cpu * 1000 / calls}


def bench_hot_tenant(dynamodb: str, calls: int = 1200, admitters: int = 16, shards: int = 8) -> None:
    import boto3
    from tollway.store.tables import ensure_tables, find_template

    table = f"hot-{uuid.uuid4().hex[:8]}"
    ensure_tables(boto3.client("dynamodb", endpoint_url=dynamodb), find_template(), {"TollwayTable": table})
    one = _run(dynamodb, table, 1, calls, admitters)
    many = _run(dynamodb, table, shards, calls, admitters)
    print(f"11. One hot tenant: {admitters} concurrent admitters, {calls} calls, a rate and day/month quotas")
    print("   (DynamoDB emulated in its own process; it has no per-item limit: compare ratios)")
    print(f"   {'':<24} {'calls/s':>10} {'UpdateItem/call':>16} {'client CPU ms/call':>19}")
    for label, figures in (("one item", one), (f"{shards} shards", many)):
        print(
            f"   {label:<24} {figures['calls_per_s']:>10.0f} {figures['updates_per_call']:>16.2f}"
            f" {figures['cpu_ms_per_call']:>19.2f}"
        )
    print(f"   {shards} shards / one item: {many['calls_per_s'] / one['calls_per_s']:.2f}x calls/s")
    print(
        "   on DynamoDB: one item takes ~1,000 writes/s, N shards ~N x 1,000"
        " (10,000 calls/s: N >= 10, 1 write per call)\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.hot_tenant")
    parser.add_argument("--calls", type=int, default=1200)
    parser.add_argument("--admitters", type=int, default=16)
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    from bench.cpu import _moto

    with _moto() as dynamodb:
        bench_hot_tenant(dynamodb, args.calls, args.admitters, args.shards)


if __name__ == "__main__":
    main()
