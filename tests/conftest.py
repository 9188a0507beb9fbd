"""Shared setup for every test: a fake AWS environment, an in-process DynamoDB, the demo
upstreams, gateway configs.

The environment is set at import time, before any test module imports boto3 or tollway,
so nothing can reach a real AWS account or pick up a developer's profile.
"""

from __future__ import annotations

import os

_FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_SERVICE_NAME": "tollway-test",
    "POWERTOOLS_METRICS_NAMESPACE": "TollwayTest",
    "POWERTOOLS_METRICS_DISABLED": "true",
}
os.environ.update(_FAKE_AWS)
for _name in (
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "TOLLWAY_CONFIG",
    "TOLLWAY_RESOURCE",
    "TOLLWAY_AUTH_ISSUER",
    "TOLLWAY_AUTH_AUDIENCE",
    "TOLLWAY_AUTH_JWKS_URL",
    "TOLLWAY_AUDIT_LOG_GROUP",
    "TOLLWAY_LOG_FORMAT",
    "PORT",
):
    os.environ.pop(_name, None)

import contextlib  # noqa: E402
import socket  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import boto3  # noqa: E402
import pytest  # noqa: E402
from moto import mock_aws  # noqa: E402
from tollway.config import AuthConfig, GatewayConfig, parse_config  # noqa: E402
from tollway.dev import atomic_moto_writes  # noqa: E402
from tollway.store.tables import ensure_tables, find_template  # noqa: E402

atomic_moto_writes()  # every moto of the tests (in-process or served) writes atomically, as DynamoDB does

REPO_ROOT = Path(__file__).resolve().parents[1]
RESOURCE = "https://abc123.execute-api.us-east-1.amazonaws.com/mcp"
"""The gateway's canonical URL in test configs (the API Gateway host the event fixtures use)."""

DEMO_UPSTREAMS = {
    "support": "examples.upstreams.customer_support",
    "finance": "examples.upstreams.finance",
}


def config_data(upstreams: dict[str, str], **sections: Any) -> dict[str, Any]:
    """A gateway.yaml mapping: one upstream per `name -> url`, prefixed by its name.

    Authentication is switched off explicitly where the config supports saying so; tests of
    the auth stage build their own configs. Masking is off too, so routing tests see upstream
    data as served; the masking tests turn it on.
    """
    auth: dict[str, Any] = {}
    if "allow_anonymous" in AuthConfig.model_fields:
        auth["allow_anonymous"] = True
    data: dict[str, Any] = {
        "resource": RESOURCE,
        "auth": auth,
        "upstreams": [{"name": name, "url": url} for name, url in upstreams.items()],
        "masking": {"enabled": False},
    }
    data.update(sections)
    return data


def build_config(upstreams: dict[str, str], **sections: Any) -> GatewayConfig:
    return parse_config(config_data(upstreams, **sections))


@pytest.fixture(scope="session", autouse=True)
def tollway_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The `tollway` state directory of this run (TOLLWAY_HOME): a developer's own dev key and
    running `tollway dev` (dev.json) are never seen by the tests, nor changed by them."""
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("tollway-home")
        patch.setenv("TOLLWAY_HOME", str(home))
        yield home


# --- an in-process DynamoDB -----------------------------------------------------------------------
@contextlib.contextmanager
def moto_table(name: str) -> Iterator[Any]:
    """moto's in-process AWS holding the gateway's table exactly as template.yaml declares it
    (keys, index, billing, TTL), named `name`; yields a boto3 DynamoDB client to it."""
    with mock_aws():
        client = boto3.client("dynamodb")
        ensure_tables(client, find_template(REPO_ROOT), {"TollwayTable": name})
        yield client


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's server on 127.0.0.1 (threads of this process, real HTTP); yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def table_name() -> str:
    """The name `moto_dynamodb` and `fresh_dynamodb` give the gateway's table. A conftest or a
    module overrides it (scope module or wider) where its tests prove that a configured name,
    not the default, is the one used."""
    return "TollwayTable"


@pytest.fixture(scope="module")
def moto_dynamodb(table_name: str) -> Iterator[Any]:
    """One in-process DynamoDB for the tests of a module: what one test writes, the next one sees.
    moto stays active until the module's last test is done."""
    with moto_table(table_name) as client:
        yield client


@pytest.fixture
def fresh_dynamodb(table_name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An in-process DynamoDB of this test's own, its table empty, and named by TOLLWAY_TABLE
    as in the Lambda's environment (for code that finds the table by itself, such as the CLI).
    Not to be combined with `moto_dynamodb` in one test."""
    monkeypatch.setenv("TOLLWAY_TABLE", table_name)
    with moto_table(table_name) as client:
        yield client


# --- upstreams ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def dead_url() -> Iterator[str]:
    """An MCP URL on 127.0.0.1 that refuses connections: the port is bound but never listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"


@pytest.fixture(scope="session")
def demo_upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Both demo MCP servers as real processes, started once per test run: name -> MCP URL."""
    from examples.upstreams._serve import spawn

    logs = tmp_path_factory.mktemp("upstream-logs")
    with contextlib.ExitStack() as stack:
        handles = {name: stack.enter_context((logs / f"{name}.log").open("w")) for name in DEMO_UPSTREAMS}
        servers = {
            name: spawn(module, cwd=REPO_ROOT, lifetime=900, stderr=handles[name])
            for name, module in DEMO_UPSTREAMS.items()
        }
        # Start them side by side: each takes a couple of seconds to import the SDK.
        with ThreadPoolExecutor(len(servers)) as pool:
            starting = {name: pool.submit(server.__enter__) for name, server in servers.items()}
            urls, failures = {}, []
            for name, future in starting.items():
                try:
                    urls[name] = future.result()
                except Exception as exc:
                    failures.append(exc)
                else:
                    stack.push(servers[name].__exit__)
        if failures:
            raise failures[0]
        yield urls


# --- the audit trail ----------------------------------------------------------------------------------
class AuditTrail:
    """The audit file every gateway of the test run writes (TOLLWAY_AUDIT_FILE, also in the
    processes tests start): `mark()`, then `since()` the records written after the mark."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def mark(self) -> None:
        self._offset = self.path.stat().st_size if self.path.exists() else 0

    def text(self) -> str:
        if not self.path.exists():
            return ""
        with self.path.open("rb") as file:
            file.seek(self._offset)
            return file.read().decode()

    def since(self) -> list[dict[str, Any]]:
        import json

        return [json.loads(line) for line in self.text().splitlines() if line.strip()]


@pytest.fixture(scope="session", autouse=True)
def audit_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Audit records of the whole run go to one file of its own, never to the working directory."""
    path = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    os.environ["TOLLWAY_AUDIT_FILE"] = str(path)
    return path


@pytest.fixture
def audit_trail(audit_file: Path) -> AuditTrail:
    """The audit records this test causes (marked at its start)."""
    trail = AuditTrail(audit_file)
    trail.mark()
    return trail


@pytest.fixture(scope="session")
def make_config() -> Callable[..., GatewayConfig]:
    """`make_config({"support": url}, http={...})` -> a validated GatewayConfig."""
    return build_config


_FIGURES: list[str] = []
"""The run's figures, in the order their tests ended (on the controller when run with xdist)."""


@pytest.fixture
def run_summary(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Lines a test adds here are printed at the end of the run (pytest captures print). They
    travel on the test's report, so a parallel run's workers' figures are printed too."""
    lines: list[str] = []
    yield lines
    request.node.user_properties.extend(("figure", line) for line in lines)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        _FIGURES.extend(value for name, value in report.user_properties if name == "figure")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if _FIGURES:
        terminalreporter.section("figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)
