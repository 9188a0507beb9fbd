"""Real processes over real HTTP: MCP upstreams and `tollway dev` gateways in front of them.

Every process binds 127.0.0.1 only, is started once per test session and stopped at teardown
with a bounded wait. Each gateway runs its own embedded moto DynamoDB (AWS_ENDPOINT_URL_DYNAMODB
is removed from its environment) in its own working directory, with its own state directory
(TOLLWAY_HOME), so its dev signing key and dev.json are its own too. Process output goes to log
files whose tail is shown when a process fails to start.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from examples.upstreams._serve import await_ready, stop

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
START_TIMEOUT = 30.0  # seconds for any process to become ready
STOP_TIMEOUT = 10.0  # seconds between terminate and kill
LIFETIME = 600  # upstreams stop by themselves after this long, even if teardown never runs

DEMO_UPSTREAMS = {
    "support": "examples.upstreams.customer_support",
    "finance": "examples.upstreams.finance",
}
INTERACTIVE_UPSTREAM = "tests.fixtures.conformance_upstream"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class UpstreamProcess:
    """An MCP server module run as `python -m module --port N` on a fixed port, so it can be
    restarted at the same URL."""

    module: str
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/mcp"

    def start(self) -> None:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "--port", str(self.port), "--lifetime", str(LIFETIME)],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )

    def wait_ready(self) -> None:
        """Block until the server prints `ready <url>` (bounded)."""
        assert self.proc is not None
        try:
            await_ready(self.proc, self.module, START_TIMEOUT)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{exc}:\n{_tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, STOP_TIMEOUT)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
        self.wait_ready()


@dataclass
class GatewayProcess:
    """`tollway dev --config <file> --port N` as a subprocess."""

    config: dict[str, Any]
    workdir: Path
    port: int
    proc: subprocess.Popen[str] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def log(self) -> Path:
        return self.workdir / "gateway.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / "gateway.yaml"

    @property
    def home(self) -> Path:
        """Its state directory (TOLLWAY_HOME): the dev key, and dev.json while it runs."""
        return self.workdir / "home"

    def start(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [*_tollway(), "dev", "--config", str(self.config_path), "--port", str(self.port)],
                cwd=self.workdir,
                env=_gateway_env(self.home),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def token(self, subject: str, tenant: str, scope: str = "", config: Path | None = None) -> str:
        """`tollway token`: a JWT signed by this gateway's dev key, for its audience, or that of
        `config` if given."""
        done = subprocess.run(
            [*_tollway(), "token", "--sub", subject, "--tenant", tenant, "--scope", scope],
            cwd=self.workdir,
            env={**_gateway_env(self.home), "TOLLWAY_CONFIG": str(config or self.config_path)},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"tollway token failed ({done.returncode}): {done.stderr}")
        return done.stdout.strip()

    def wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"gateway exited with {self.proc.returncode} before it was healthy:\n{_tail(self.log)}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(f"gateway did not answer /healthz within {START_TIMEOUT:.0f} s:\n{_tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, STOP_TIMEOUT)
        self.proc = None


def _tollway() -> list[str]:
    """The `tollway` console script of this environment (the module when it is not installed)."""
    console_script = Path(sys.executable).with_name("tollway")
    return [str(console_script)] if console_script.exists() else [sys.executable, "-m", "tollway.cli"]


def _gateway_env(home: Path | None = None) -> dict[str, str]:
    """This environment without a DynamoDB or config of its own; `home`: a gateway's state
    directory (TOLLWAY_HOME), for it and the commands that talk to it."""
    env = dict(os.environ)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "TOLLWAY_CONFIG", "TOLLWAY_TABLE"):
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    if home is not None:
        env["TOLLWAY_HOME"] = str(home)
    return env


def gateway_config(port: int, **sections: Any) -> dict[str, Any]:
    """Masking off unless asked for: these gateways test routing with upstream data as served."""
    return {"resource": f"http://{HOST}:{port}/mcp", "masking": {"enabled": False}, **sections}


@contextlib.contextmanager
def running(gateway: GatewayProcess, upstreams: list[UpstreamProcess]) -> Iterator[None]:
    """Start the upstreams side by side, then the gateway; stop everything at teardown."""
    try:
        for upstream in upstreams:
            upstream.start()
        for upstream in upstreams:
            upstream.wait_ready()
        gateway.start()
        gateway.wait_healthy()
        yield
    finally:
        gateway.stop()
        for upstream in upstreams:
            upstream.stop()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway in front of both demo upstreams, mounted under the prefixes `support` and `finance`,
    as `make dev` runs it: authentication by the local dev issuer (tokens from `tollway token`).

    Browser origins are restricted to `http://localhost:*`; hosts are left to `tollway dev`'s
    default (loopback names only)."""
    workdir = tmp_path_factory.mktemp("gateway")
    upstreams = {name: UpstreamProcess(module, workdir / f"{name}.log") for name, module in DEMO_UPSTREAMS.items()}
    port = free_port()
    config = gateway_config(
        port,
        upstreams=[{"name": name, "url": u.url, "prefix": name} for name, u in upstreams.items()],
        http={"allowed_origins": ["http://localhost:*"]},
    )
    process = GatewayProcess(config, workdir, port)
    with running(process, list(upstreams.values())):
        yield process


@dataclass
class InteractiveGateway:
    gateway: GatewayProcess
    upstream: UpstreamProcess
    short_timeout: float
    """`timeout_seconds` of the `brief` mount."""

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture(scope="session")
def interactive_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InteractiveGateway]:
    """An anonymous gateway (`auth.allow_anonymous`) in front of the conformance fixture upstream,
    whose tools ask the client for input: by elicitation/sampling requests on a 2025 session and
    by input_required results at 2026-07-28.

    The same upstream is mounted four times: `conf` (the gateway picks the client's era),
    `old` (spoken to as a 2025-era server only) and `new` (as a 2026-07-28 server only), so
    cross-era combinations can be shown too, and `brief`, whose upstream timeout is short.
    """
    workdir = tmp_path_factory.mktemp("interactive-gateway")
    upstream = UpstreamProcess(INTERACTIVE_UPSTREAM, workdir / "upstream.log")
    short_timeout = 2.0
    port = free_port()
    config = gateway_config(
        port,
        auth={"allow_anonymous": True},
        upstreams=[
            {"name": "conf", "url": upstream.url, "prefix": "conf"},
            {"name": "old", "url": upstream.url, "prefix": "old", "protocol": "legacy"},
            {"name": "new", "url": upstream.url, "prefix": "new", "protocol": "2026-07-28"},
            {"name": "brief", "url": upstream.url, "prefix": "brief", "timeout_seconds": short_timeout},
        ],
    )
    process = GatewayProcess(config, workdir, port)
    with running(process, [upstream]):
        yield InteractiveGateway(process, upstream, short_timeout)
