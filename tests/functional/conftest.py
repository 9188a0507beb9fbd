"""Functional fixtures: the Lambda handler loaded against the demo upstreams and moto DynamoDB, a
recording upstream on 127.0.0.1, the dev issuer's signing key, and the `tollway` command in a
fresh process beside a DynamoDB served over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from moto.server import ThreadedMotoServer
from tollway.auth import dev
from tollway.config import GatewayConfig
from tollway.store.tables import ensure_tables, find_template

from tests.fixtures.recording_upstream import RecordingUpstream
from tests.functional.lambda_harness import REPO_ROOT, TABLE, LambdaGateway, load_handler

RECORDER_LIFETIME = 1800.0
"""Seconds after which the recording upstream stops even if its module never finished."""


@pytest.fixture(scope="session")
def table_name() -> str:
    """The table the Lambda handler is told about (TOLLWAY_TABLE), unless a module names another."""
    return TABLE


@pytest.fixture(scope="module")
def start_gateway(
    moto_dynamodb: Any, table_name: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[GatewayConfig], LambdaGateway]]:
    """Cold-start a Lambda instance whose gateway.yaml is `config`, its table `moto_dynamodb`'s."""
    started: list[LambdaGateway] = []

    def start(config: GatewayConfig) -> LambdaGateway:
        path: Path = tmp_path_factory.mktemp("config") / "gateway.yaml"
        path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True)))
        gateway = LambdaGateway(load_handler(path, table_name))
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.close()


@pytest.fixture(scope="module")
def gateway_sections() -> dict[str, Any]:
    """gateway.yaml sections of `gateway` besides its upstreams; a module overrides them."""
    return {}


@pytest.fixture(scope="module")
def gateway(
    start_gateway: Callable[[GatewayConfig], LambdaGateway],
    make_config: Callable[..., GatewayConfig],
    demo_upstreams: dict[str, str],
    gateway_sections: dict[str, Any],
) -> LambdaGateway:
    """The handler in front of both demo upstreams (support__*, finance__*)."""
    return start_gateway(make_config(demo_upstreams, **gateway_sections))


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingUpstream]:
    """A RecordingUpstream (tools `echo`, `whoami`) on 127.0.0.1, shared by the tests of a module."""
    with RecordingUpstream().running(lifetime=RECORDER_LIFETIME) as upstream:
        yield upstream


@pytest.fixture(autouse=True)
def _fresh_recorder(request: pytest.FixtureRequest) -> None:
    """A test that uses `recorder` finds its record empty and no refusals pending."""
    if "recorder" in request.fixturenames:
        recorder: RecordingUpstream = request.getfixturevalue("recorder")
        recorder.clear()
        recorder.refuse(0)


@pytest.fixture(scope="module")
def dev_key(tmp_path_factory: pytest.TempPathFactory) -> ec.EllipticCurvePrivateKey:
    """The local development issuer's signing key, made as `tollway dev` makes it. A gateway trusts
    it with `dev_keys=dev.jwk_set(dev_key)` and `auth.issuer: tollway-dev`; `dev.mint` signs with it."""
    return dev.signing_key(tmp_path_factory.mktemp("dev") / "key.pem")


@pytest.fixture
def dynamodb_server() -> Iterator[tuple[str, Any]]:
    """DynamoDB over real HTTP, as `tollway dev` embeds it: a moto server on 127.0.0.1 holding the
    gateway's table under its default name, TollwayTable. Yields (endpoint URL, a boto3 client)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("dynamodb", endpoint_url=endpoint)
        ensure_tables(client, find_template(REPO_ROOT), {"TollwayTable": "TollwayTable"})
        yield endpoint, client
    finally:
        server.stop()


@pytest.fixture
def tollway_in_a_fresh_shell(
    dynamodb_server: tuple[str, Any], tmp_path: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run(*argv, drop=("AWS_",))`: `python -m tollway.cli *argv` as a new process in `tmp_path`,
    its environment this one without the variables whose names start with `drop`, and with
    AWS_ENDPOINT_URL_DYNAMODB naming `dynamodb_server` (as beside `tollway dev`)."""
    endpoint, _ = dynamodb_server

    def run(*argv: str, drop: tuple[str, ...] = ("AWS_",)) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint
        return subprocess.run(
            [sys.executable, "-m", "tollway.cli", *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Metrics are switched off in tests (POWERTOOLS_METRICS_DISABLED), so every flush warns.
    quiet = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(quiet)
