"""The operator's first hour, locally: `tollway dev` as a real process in one directory, and the
other `tollway` commands run from another directory, in a clean environment that holds only
HOME and the state directory (TOLLWAY_HOME) — no AWS variables, no config path. They find the
running gateway's DynamoDB, table, config, dev issuer and key by themselves.

The config says `resource: http://127.0.0.1:8080/mcp`, as the example does, and the gateway is
served on another port: what it advertises must follow the port it serves.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
import yaml
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from tollway.local_state import NO_RUNNING_DEV

from tests.e2e.conftest import DEMO_UPSTREAMS, HOST, START_TIMEOUT, STOP_TIMEOUT, free_port

pytestmark = [pytest.mark.e2e]

CONFIG_RESOURCE = "http://127.0.0.1:8080/mcp"
NO_DEV_LINE = f"tollway: {NO_RUNNING_DEV}\n"


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """Only what a fresh shell of this user has: PATH, HOME, the state directory (and the
    interpreter's module path, when the test run sets one)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TOLLWAY_HOME": str(home / "state")}
    if "PYTHONPATH" in os.environ:
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def tollway(home: Path, *argv: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`tollway *argv` from `cwd`, in a clean environment."""
    return subprocess.run(
        [sys.executable, "-m", "tollway.cli", *argv],
        cwd=cwd,
        env=clean_env(home, **env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class LocalDev:
    proc: subprocess.Popen[str]
    home: Path
    project: Path
    port: int
    banner: list[str]
    healthz_right_after_banner: int

    @property
    def origin(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.origin}/mcp"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return self.proc.returncode


def start_dev(home: Path, project: Path, config: dict[str, Any], port: int, *argv: str, **env: str) -> LocalDev:
    """`tollway dev --config gateway.yaml *argv` in `project`, to be served on `port`; returns once
    its banner is out, having asked /healthz exactly once right after the banner's first line."""
    project.mkdir(parents=True, exist_ok=True)
    (project / "gateway.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollway.cli", "dev", "--config", "gateway.yaml", *argv],
        cwd=project,
        env=clean_env(home, **env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    banner: list[str] = []
    health = 0
    deadline = time.monotonic() + START_TIMEOUT
    while not banner or not banner[-1].startswith("  state:"):
        readable, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = proc.stdout.readline() if readable else ""
        if not line:
            proc.kill()
            pytest.fail(f"tollway dev stopped or printed no banner (exit {proc.wait()}): {banner}")
        banner.append(line.rstrip("\n"))
        if len(banner) == 1:
            health = httpx.get(f"http://{HOST}:{port}/healthz", timeout=5).status_code
    return LocalDev(proc, home, project, port, banner, health)


def demo_config(**sections: Any) -> dict[str, Any]:
    """As infra/gateway.example.yaml: resource on 8080, the two demo upstreams launched by
    `tollway dev` (on free ports here), the dev issuer."""
    upstreams = {name: free_port() for name in DEMO_UPSTREAMS}
    return {
        "resource": CONFIG_RESOURCE,
        "upstreams": [{"name": n, "url": f"http://{HOST}:{p}/mcp", "prefix": n} for n, p in upstreams.items()],
        "dev": {"launch": DEMO_UPSTREAMS},
        **sections,
    }


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("user")


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another directory: no gateway.yaml, no key, nothing of the gateway's."""
    return tmp_path_factory.mktemp("elsewhere")


@pytest.fixture(scope="module")
def dev(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDev]:
    port = free_port()
    running = start_dev(home, tmp_path_factory.mktemp("project"), demo_config(), port, "--port", str(port))
    try:
        yield running
    finally:
        running.stop()


# --- the running gateway ------------------------------------------------------------------------------
def test_the_banner_is_printed_once_the_gateway_answers(dev: LocalDev) -> None:
    assert dev.healthz_right_after_banner == 200
    assert dev.banner[0] == f"Tollway gateway: http://127.0.0.1:{dev.port}/mcp"
    assert f"  auth:      dev issuer {dev.origin} (JWKS at {dev.origin}/.well-known/jwks.json)" in dev.banner
    assert '  token:     tollway token --sub alice --tenant acme --scope "finance"' in dev.banner


def test_what_the_gateway_advertises_follows_the_port_it_serves(dev: LocalDev) -> None:
    unauthenticated = httpx.post(dev.url, json={}, timeout=10)
    metadata = httpx.get(f"{dev.origin}/.well-known/oauth-protected-resource/mcp", timeout=10).json()
    issuer = httpx.get(f"{dev.origin}/.well-known/oauth-authorization-server", timeout=10).json()
    keys = httpx.get(issuer["jwks_uri"], timeout=10).json()

    assert unauthenticated.status_code == 401
    challenge = unauthenticated.headers["www-authenticate"]
    assert f'resource_metadata="{dev.origin}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert metadata["resource"] == dev.url
    assert metadata["authorization_servers"] == [dev.origin]
    assert issuer["issuer"] == dev.origin
    assert [key["alg"] for key in keys["keys"]] == ["ES256"]


def test_the_dev_key_lives_in_the_state_directory_not_where_dev_runs(dev: LocalDev) -> None:
    assert (dev.home / "state" / "dev-signing-key.pem").exists()
    assert not list(dev.project.rglob("*.pem"))


async def _call_tool(url: str, token: str) -> Any:
    """The official client, as the README shows it."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30.0, read=300.0))
    async with http, Client(streamable_http_client(url, http_client=http), mode="2026-07-28") as client:
        return await client.call_tool("finance__fetch_revenue_data", {"region": "EMEA", "quarter": "2026-Q1"})


def test_a_token_made_in_another_directory_is_accepted_and_the_call_reaches_the_usage_report_and_audit(
    dev: LocalDev, elsewhere: Path
) -> None:
    made = tollway(dev.home, "token", "--sub", "alice", "--tenant", "acme", "--scope", "finance", cwd=elsewhere)
    assert (made.returncode, made.stderr) == (0, ""), made.stderr

    called = anyio.run(_call_tool, dev.url, made.stdout.strip())
    assert not called.is_error
    assert '"region": "EMEA"' in called.content[0].text

    month = datetime.now(UTC).strftime("%Y-%m")
    report = tollway(dev.home, "usage", "report", "--month", month, "--format", "csv", cwd=elsewhere)
    assert report.returncode == 0, report.stderr
    rows = [line.split(",") for line in report.stdout.splitlines()]
    header, body = rows[0], [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert "tenant" in header
    calls = [(r["tenant"], r["tool"], r["calls"]) for r in body if r["tool"] == "finance__fetch_revenue_data"]
    assert calls == [("acme", "finance__fetch_revenue_data", "1")]

    audit = tollway(dev.home, "audit", "--tenant", "acme", "--json", cwd=elsewhere)
    assert audit.returncode == 0, audit.stderr
    records = [json.loads(line) for line in audit.stdout.splitlines()]
    assert [(r["name"], r["subject"], r["outcome"]) for r in records if r.get("method") == "tools/call"] == [
        ("finance__fetch_revenue_data", "alice", "ok")
    ]
    assert not (elsewhere / ".tollway").exists()


def test_pending_definitions_and_approvals_are_listed_from_another_directory(dev: LocalDev, elsewhere: Path) -> None:
    definitions = tollway(dev.home, "upstream", "pending", cwd=elsewhere)
    approvals = tollway(dev.home, "approvals", "list", cwd=elsewhere)

    assert (definitions.returncode, definitions.stdout) == (0, "nothing awaits approval\n"), definitions.stderr
    assert (approvals.returncode, approvals.stdout) == (0, "no approvals\n"), approvals.stderr


def test_environment_variables_win_over_the_running_dev(dev: LocalDev, elsewhere: Path) -> None:
    """A DynamoDB named in the environment is the one used, even with a dev running."""
    with socket.socket() as closed:
        closed.bind((HOST, 0))
        nowhere = f"http://{HOST}:{closed.getsockname()[1]}"
    listed = tollway(dev.home, "upstream", "pending", cwd=elsewhere, AWS_ENDPOINT_URL_DYNAMODB=nowhere)

    assert listed.returncode == 1
    assert listed.stderr == f"tollway: cannot use DynamoDB table TollwayTable: nothing answers at {nowhere}\n"


# --- before and after ---------------------------------------------------------------------------------
def test_a_clean_exit_withdraws_the_gateway_and_the_commands_say_so(tmp_path: Path) -> None:
    """Started with PORT from the environment (as `make dev PORT=…` does); without upstreams."""
    home, port = tmp_path / "user", free_port()
    config = {"resource": CONFIG_RESOURCE, "upstreams": [{"name": "support", "url": f"http://{HOST}:9/mcp"}]}
    running = start_dev(home, tmp_path / "project", config, port, PORT=str(port))
    dev_file = home / "state" / "dev.json"
    recorded = json.loads(dev_file.read_text())
    assert running.banner[0] == f"Tollway gateway: http://{HOST}:{port}/mcp"
    assert (recorded["gateway"], recorded["issuer"]) == (f"http://{HOST}:{port}/mcp", f"http://{HOST}:{port}")

    running.stop()

    assert not dev_file.exists()
    token = tollway(home, "token", "--sub", "alice", "--tenant", "acme", cwd=tmp_path)
    assert (token.returncode, token.stdout, token.stderr) == (1, "", NO_DEV_LINE)
    report = tollway(home, "usage", "report", "--month", "2026-11", cwd=tmp_path)
    assert (report.returncode, report.stdout) == (1, "")
    assert report.stderr.count("\n") == 1 and report.stderr.endswith(f"; {NO_RUNNING_DEV}\n"), report.stderr


def test_a_dev_that_died_without_cleaning_up_is_not_running(tmp_path: Path) -> None:
    home = tmp_path / "user"
    (home / "state").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    recorded = {
        "pid": int(dead.stdout),
        "gateway": "http://127.0.0.1:8080/mcp",
        "issuer": "http://127.0.0.1:8080",
        "audience": "http://127.0.0.1:8080/mcp",
        "dynamodb": "http://127.0.0.1:9",
        "table": "TollwayTable",
        "config": None,
    }
    (home / "state" / "dev.json").write_text(json.dumps(recorded))

    token = tollway(home, "token", "--sub", "alice", "--tenant", "acme", cwd=tmp_path)

    assert (token.returncode, token.stdout, token.stderr) == (1, "", NO_DEV_LINE)


def test_a_gateway_port_in_use_is_one_line_naming_it(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(demo_config()))
        done = tollway(tmp_path, "dev", "--config", "gateway.yaml", "--port", str(port), cwd=tmp_path)

    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"tollway: port {port} on 127.0.0.1 is already in use (the gateway): "
        f"pick another: make dev PORT={port + 1}, or tollway dev --port {port + 1}\n"
    )


def test_a_demo_upstream_port_in_use_is_one_line_naming_it(tmp_path: Path) -> None:
    config = demo_config()
    support_port = int(config["upstreams"][0]["url"].split(":")[-1].split("/")[0])
    with socket.socket() as taken:
        taken.bind((HOST, support_port))
        taken.listen()
        (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
        done = tollway(tmp_path, "dev", "--config", "gateway.yaml", "--port", str(free_port()), cwd=tmp_path)

    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"tollway: port {support_port} on 127.0.0.1 is already in use (demo upstream 'support'): "
        "stop what uses it, or change upstream support's url in gateway.yaml\n"
    )
