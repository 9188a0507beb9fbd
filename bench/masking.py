"""Masking cost per call: the masking stage on a typical 4 KB tools/call result."""

from __future__ import annotations

import json
import statistics
import time

from tollway.config import parse_config
from tollway.masking.stage import MaskingStage


def typical_result() -> dict:
    """~4 KB: a text summary and structured rows, with a few PII values among ordinary data."""
    rows = [
        {
            "order_id": f"ORD-2026-{i:05d}",
            "sku": f"SKU-{i * 7919 % 100000:05d}",
            "status": "shipped" if i % 3 else "processing",
            "amount": round(19.99 + i * 3.5, 2),
            "note": "Delivered to reception, signed by the front desk.",
        }
        for i in range(12)
    ]
    rows[3]["contact"] = "ada.lovelace@example.com"
    rows[7]["card"] = "4242 4242 4242 4242"
    rows[10]["phone"] = "+44 20 7946 0958"
    text = "Orders for customer C-1001 (ada.lovelace@example.com): " + json.dumps(rows)
    return {"content": [{"type": "text", "text": text}], "structuredContent": {"orders": rows}, "isError": False}


def bench_masking(runs: int = 500) -> None:
    config = parse_config(
        {
            "resource": "https://gw.example.com/mcp",
            "auth": {"allow_anonymous": True},
            "upstreams": [{"name": "a", "url": "http://127.0.0.1:9/mcp"}],
        }
    )
    stage = MaskingStage(config, hash_key=lambda: b"k" * 32)
    message = {"jsonrpc": "2.0", "id": 1, "result": typical_result()}
    size = len(json.dumps(message["result"]).encode())
    stage.message("acme", "tools/call", "a__orders", message)  # warm-up (compiled patterns)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        stage.message("acme", "tools/call", "a__orders", message)
        times.append((time.perf_counter() - start) * 1000)
    print(f"8. masking a typical {size / 1024:.1f} KB tools/call result (text + structuredContent, 3 PII values)")
    print(
        f"   p50 {statistics.median(times):.3f} ms  p99 {statistics.quantiles(times, n=100)[98]:.3f} ms  ({runs} runs)"
    )
