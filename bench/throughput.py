"""Local-server throughput: the same client and upstream, direct vs through `tollway dev`."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.__main__ import ROOT

MODERN = "2026-07-28"


async def bench_throughput(upstream_url: str, configs: dict[str, Path], requests: int, concurrency: int) -> None:
    """DynamoDB is moto in its own process (as DynamoDB is its own service; `bench.emulator`), not
    the thread `tollway dev` would embed, so its work does not share the gateway's GIL."""
    moto_port = _free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "bench.emulator", str(moto_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results: dict[str, float] = {}
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            await _wait_healthy(client, f"http://127.0.0.1:{moto_port}/moto-api/")
            results["direct to upstream"] = await _run(
                client, upstream_url, "validate_transaction", requests, concurrency
            )
            for label, config_path in configs.items():
                results[label] = await _through_gateway(
                    client, config_path, f"http://127.0.0.1:{moto_port}", requests, concurrency
                )
    finally:
        moto.terminate()
        moto.wait(timeout=10)
    direct = results.pop("direct to upstream")
    print(f"6. throughput on the local server, 2026-07-28 tools/call, {requests} requests, {concurrency} concurrent")
    print(f"   direct to upstream:            {direct:6.0f} calls/s")
    for label, rate in results.items():
        print(f"   through gateway, {label:<13} {rate:6.0f} calls/s  ({rate / direct:.2f}x of direct)")
    print()


async def _through_gateway(
    client: httpx.AsyncClient, config_path: Path, dynamodb: str, requests: int, concurrency: int
) -> float:
    port = _free_port()
    env = {**os.environ, "POWERTOOLS_LOG_LEVEL": "WARNING", "AWS_ENDPOINT_URL_DYNAMODB": dynamodb}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollway.cli", "dev", "--config", str(config_path), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await _wait_healthy(client, f"http://127.0.0.1:{port}/healthz")
        headers = {"authorization": f"Bearer {os.environ['BENCH_TOKEN']}"}
        url = f"http://127.0.0.1:{port}/mcp"
        return await _run(client, url, "finance__validate_transaction", requests, concurrency, headers)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _run(
    client: httpx.AsyncClient, url: str, tool: str, n: int, concurrency: int, auth: dict[str, str] | None = None
) -> float:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": tool,
            "arguments": {"card_number": "4242424242424242", "amount": 12.5},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
            },
        },
    }
    headers = {
        **(auth or {}),
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": MODERN,
        "mcp-method": "tools/call",
        "mcp-name": tool,
    }
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            reply = await client.post(url, json=body, headers=headers)
            assert reply.status_code == 200 and "error" not in reply.text[:200], reply.text[:300]

    await worker_warmup(client, url, body, headers)
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - start)


async def worker_warmup(client: httpx.AsyncClient, url: str, body: dict, headers: dict) -> None:
    for _ in range(5):
        await client.post(url, json=body, headers=headers)


async def _wait_healthy(client: httpx.AsyncClient, url: str) -> None:
    for _ in range(300):
        try:
            if (await client.get(url)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("gateway did not become healthy")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
