"""Shared helpers to build and run a demo MCP server over streamable HTTP on 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp

HOST = "127.0.0.1"
MCP_PATH = "/mcp"

# Loopback only: keep DNS-rebinding protection on, but accept every loopback spelling with any port.
LOOPBACK_SECURITY = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
    allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
)

_STARTUP_POLLS = 200  # x 50 ms = 10 s to bind


def streamable_app(server: MCPServer, **options: Any) -> ASGIApp:
    """Serve `server` at /mcp on both protocol eras.

    The SDK's session manager sends requests whose MCP-Protocol-Version header is not a handshake
    version to its stateless 2026-07-28 handler; everything else takes the stateful (Mcp-Session-Id)
    path, which keeps server-to-client requests (sampling, elicitation) working for 2025 clients.
    json_response stays False so streamed results (progress, logs) arrive as SSE when accepted.
    Extra `options` (e.g. event_store, retry_interval) go to `MCPServer.streamable_http_app`.
    """
    return server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        json_response=False,
        stateless_http=False,
        transport_security=LOOPBACK_SECURITY,
        host=HOST,
        **options,
    )


def main(create_app: Callable[[], ASGIApp], *, prog: str, argv: Sequence[str] | None = None) -> None:
    """CLI entry point: `--port N` (0 picks a free port), optional `--lifetime SECONDS`."""
    parser = argparse.ArgumentParser(prog=prog, description="Run a demo MCP server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = any free port)")
    parser.add_argument(
        "--lifetime", type=float, default=0.0, help="stop by itself after this many seconds (0 = never)"
    )
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    args = parser.parse_args(argv)
    asyncio.run(serve(create_app(), port=args.port, lifetime=args.lifetime, log_level=args.log_level))


async def serve(app: ASGIApp, *, port: int, lifetime: float = 0.0, log_level: str = "warning") -> None:
    """Run `app` until signalled (or `lifetime` elapses); print `ready <url>` once listening.
    A port already in use ends the process with one line saying so."""
    # IPPROTO_TCP named: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose protocol says
    # TCP, and with Nagle on every kept-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot listen on {HOST}:{port}: {exc.strerror} (pick another port with --port)") from None
    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        log_level=log_level,
        lifespan="on",
        # Open SSE streams must not hold shutdown hostage.
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(_STARTUP_POLLS):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    if not server.started:
        server.should_exit = True
        await task
        raise SystemExit("server failed to start")
    bound_port = sock.getsockname()[1]  # with --port 0, known only once bound
    print(f"ready http://{HOST}:{bound_port}{MCP_PATH}", flush=True)
    if lifetime > 0:
        asyncio.get_running_loop().call_later(lifetime, setattr, server, "should_exit", True)
    await task


@contextlib.contextmanager
def spawn(
    module: str,
    *,
    cwd: str | Path | None = None,
    lifetime: float = 600.0,
    start_timeout: float = 20.0,
    stderr: IO[str] | int | None = None,
    args: Sequence[str] = (),
) -> Iterator[str]:
    """Start `python -m <module> --port 0` as a subprocess, yield its MCP URL, stop it on exit.

    `--lifetime` makes the child stop by itself even if this process dies without cleaning up.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0", "--lifetime", str(lifetime), *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    try:
        yield await_ready(proc, module, start_timeout)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[str], timeout: float = 10.0) -> None:
    """Terminate (then kill) a child started with stdout=PIPE and close that pipe."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    if proc.stdout is not None:
        proc.stdout.close()


def await_ready(proc: subprocess.Popen[str], module: str, timeout: float) -> str:
    """Block until the child prints `ready <url>` (bounded); return the URL."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([proc.stdout], [], [], remaining)
        if not readable:
            break
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{module} exited with code {proc.wait()} before it was ready")
        if line.startswith("ready "):
            return line.split()[1]
    raise TimeoutError(f"{module} did not print 'ready' within {timeout} s")
