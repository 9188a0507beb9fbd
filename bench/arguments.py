"""Argument validation cost per call: a demo tool's real inputSchema, checked with jsonschema."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from typing import Any

from tollway.errors import MalformedParams
from tollway.policy import arguments

from examples.upstreams import finance


def _schema(tool: str) -> dict[str, Any]:
    tools = asyncio.run(finance.build_server().list_tools())
    return next(t.input_schema for t in tools if t.name == tool)


def _timed(runs: int, call: Any) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def bench_arguments(runs: int = 2000) -> None:
    schema = _schema("validate_transaction")
    valid = {"card_number": "4242 4242 4242 4242", "amount": 129.5, "currency": "EUR"}
    invalid = {"card_number": "4242 4242 4242 4242", "amount": "lots"}

    def refuse() -> None:
        try:
            arguments.check_arguments("finance__validate_transaction", schema, invalid)
        except MalformedParams:
            return
        raise AssertionError("invalid arguments were accepted")

    arguments._validator.cache_clear()  # earlier sections listed (so compiled) this schema already
    started = time.perf_counter()
    arguments.check_arguments("finance__validate_transaction", schema, valid)  # compiles the validator
    first = (time.perf_counter() - started) * 1000
    code = (
        "import time; t = time.perf_counter(); import jsonschema, referencing; print((time.perf_counter() - t) * 1000)"
    )
    imports = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout) for _ in range(5)
    ]
    ok = _timed(runs, lambda: arguments.check_arguments("finance__validate_transaction", schema, valid))
    bad = _timed(runs, refuse)
    print("9. tools/call argument validation (finance__validate_transaction's inputSchema, jsonschema 2020-12)")
    print(f"   importing jsonschema in a fresh process (once per instance): median {statistics.median(imports):.0f} ms")
    print(f"   first call of a schema (compiled once per schema per instance): {first:.1f} ms")
    for label, times in (("valid arguments", ok), ("refused arguments", bad)):
        p99 = statistics.quantiles(times, n=100)[98]
        print(f"   {label:>17}: p50 {statistics.median(times) * 1000:.0f} µs  p99 {p99 * 1000:.0f} µs  ({runs} runs)")
