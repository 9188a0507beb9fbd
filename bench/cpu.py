"""CPU per warm `tools/call`, side by side in one run: Tollway (every feature off, fully on, fully on
with quota leases) and FastMCP's proxy (shared backend client, stateless JSON front, no auth, no
quota, no masking) in front of the same upstream, driven by the same client with the same payload,
in both eras.

Each server is its own process; its CPU time (user + system, every thread, from /proc) is read
before and after `calls` sequential calls. DynamoDB is moto's server in a process of its own, so
its work is not counted; the gateway's own DynamoDB client work is. The Lambda handler is measured the
same way in-process (Mangum, API Gateway v2 events): `time.process_time()` around the calls.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.__main__ import ROOT
from bench.throughput import _free_port

MODERN, LEGACY = "2026-07-28", "2025-11-25"
FASTMCP = "fastmcp==4.2.3"
TOOL = "validate_transaction"
ARGUMENTS = {"card_number": "4242424242424242", "amount": 12.5}
_TICK_SECONDS = 1 / os.sysconf("SC_CLK_TCK")


ROUNDS = 5
"""Rounds of calls per server and era; the servers take turns, so a load that comes and goes on
the host weighs on each of them alike, and the figure is the median round."""


def bench_cpu(upstream_url: str, configs: dict[str, Path], token: str, calls: int) -> dict[str, dict[str, float]]:
    """{server: {era: CPU ms per call}}; prints the table with ratios to FastMCP. Every server runs
    at once; they take turns, `calls` // ROUNDS calls at a time, and each figure is the median of
    its rounds (the spread is printed: compare ratios only where it is small)."""
    rounds: dict[str, dict[str, list[float]]] = {}
    with contextlib.ExitStack() as stack:
        dynamodb = stack.enter_context(_moto())
        servers: dict[str, tuple[str, str, dict[str, str]]] = {}
        for label, config in configs.items():
            auth = {"authorization": f"Bearer {token}"} if "off" not in label else {}
            servers[label] = (stack.enter_context(_tollway(config, dynamodb)), f"finance__{TOOL}", auth)
        servers["FastMCP proxy"] = (stack.enter_context(_fastmcp(upstream_url)), TOOL, {})
        client = stack.enter_context(httpx.Client(timeout=30))
        callers = {
            (label, era): (_server_pid(url), _caller(client, url, era, tool, auth))
            for label, (url, tool, auth) in servers.items()
            for era in (MODERN, LEGACY)
        }
        for _pid, call in callers.values():
            for _ in range(20):  # warm: connections, catalogs, caches, JWKS
                call()
        per_round = max(calls // ROUNDS, 300)  # CPU time is counted in 10 ms ticks: ~1 s of it, a tick ~1 %
        for _ in range(ROUNDS):
            for (label, era), (pid, call) in callers.items():
                before = _cpu_seconds(pid)
                for _ in range(per_round):
                    call()
                rounds.setdefault(label, {}).setdefault(era, []).append((_cpu_seconds(pid) - before) * 1000 / per_round)
    results = {label: {era: statistics.median(v) for era, v in by_era.items()} for label, by_era in rounds.items()}
    peer = results["FastMCP proxy"]
    print(
        f"5. CPU per warm tools/call, gateway process only (median of {ROUNDS} rounds of {per_round} sequential calls,"
        " the servers taking turns; DynamoDB in its own process)"
    )
    print(f"   {'':<34} {MODERN:>30} {LEGACY:>30}")
    for label, by_era in results.items():
        cells = [
            f"{by_era[era]:5.2f} ms ({by_era[era] / peer[era]:4.2f}x) ±{_spread(rounds[label][era]):2.0f}%"
            for era in (MODERN, LEGACY)
        ]
        print(f"   {label:<34} {cells[0]:>30} {cells[1]:>30}")
    print("   (±: half the range of the rounds, as a share of the median)")
    print("   goals: fully on <= 1.0x FastMCP; every feature off <= 0.5x\n")
    return results


def _spread(values: list[float]) -> float:
    middle = statistics.median(values)
    return 50 * (max(values) - min(values)) / middle if middle else 0.0


def _caller(client: httpx.Client, url: str, era: str, tool: str, auth: dict[str, str]) -> Any:
    headers = {**auth, "content-type": "application/json", "accept": "application/json, text/event-stream"}
    params: dict[str, Any] = {"name": tool, "arguments": ARGUMENTS}
    if era == MODERN:
        headers.update({"mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": tool})
        params["_meta"] = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    else:
        init = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}
        reply = client.post(
            url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init}, headers=headers
        )
        reply.raise_for_status()
        headers["mcp-protocol-version"] = LEGACY
        if session := reply.headers.get("mcp-session-id"):
            headers["mcp-session-id"] = session
        client.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}).encode()

    def call() -> None:
        reply = client.post(url, content=body, headers=headers)
        if reply.status_code != 200 or '"error"' in reply.text[:200] or '"isError":true' in reply.text:
            raise RuntimeError(f"{url} answered {reply.status_code}: {reply.text[:300]}")

    return call


# --- processes -------------------------------------------------------------------------------------
_PIDS: dict[str, int] = {}


def _server_pid(url: str) -> int:
    return _PIDS[url]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_SECONDS  # utime, stime: every thread


@contextmanager
def _process(argv: list[str], url: str, health: str, env: dict[str, str] | None = None) -> Iterator[str]:
    proc = subprocess.Popen(
        argv, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait(health, proc)
        _PIDS[url] = proc.pid
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


@contextmanager
def _moto() -> Iterator[str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with _process([sys.executable, "-m", "bench.emulator", str(port)], url, f"{url}/moto-api/"):
        yield url


@contextmanager
def _tollway(config: Path, dynamodb: str) -> Iterator[str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    argv = [sys.executable, "-m", "tollway.cli", "dev", "--config", str(config), "--port", str(port)]
    env = {"POWERTOOLS_LOG_LEVEL": "WARNING", "AWS_ENDPOINT_URL_DYNAMODB": dynamodb}
    with _process(argv, url, f"http://127.0.0.1:{port}/healthz", env):
        yield url


@contextmanager
def _fastmcp(upstream_url: str) -> Iterator[str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    argv = [str(_peer_python()), str(ROOT / "bench" / "fastmcp_proxy.py"), upstream_url, str(port)]
    with _process(argv, url, f"http://127.0.0.1:{port}/mcp"):
        yield url


def _peer_python() -> Path:
    """A venv of its own for the peer (made once under .tollway/): its dependencies never meet ours."""
    venv = ROOT / ".tollway" / "bench-fastmcp-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if not stamp.exists() or stamp.read_text() != FASTMCP:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", FASTMCP], check=True)
        stamp.write_text(FASTMCP)
    return python
