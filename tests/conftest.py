"""Shared setup for every test: a fake AWS environment, the demo upstreams, gateway configs.

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
):
    os.environ.pop(_name, None)

import contextlib  # noqa: E402
import socket  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from tollway.config import AuthConfig, GatewayConfig, parse_config  # noqa: E402

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


@pytest.fixture(scope="session")
def make_config() -> Callable[..., GatewayConfig]:
    """`make_config({"support": url}, http={...})` -> a validated GatewayConfig."""
    return build_config


_SUMMARY = pytest.StashKey[list[str]]()


@pytest.fixture
def run_summary(pytestconfig: pytest.Config) -> list[str]:
    """Lines a test adds here are printed at the end of the run (pytest captures print)."""
    return pytestconfig.stash.setdefault(_SUMMARY, [])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(_SUMMARY, [])
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)
