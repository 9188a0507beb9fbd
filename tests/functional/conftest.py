"""Functional fixtures: moto DynamoDB, and the Lambda handler loaded against the demo upstreams."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws
from tollway.config import GatewayConfig

from tests.functional.lambda_harness import TABLE, LambdaGateway, create_table, load_handler


@pytest.fixture(scope="module")
def dynamodb() -> Iterator[Any]:
    """An in-process DynamoDB holding the gateway's table; a client to inspect it."""
    with mock_aws():
        client = boto3.client("dynamodb")
        create_table(client, TABLE)
        yield client


@pytest.fixture(scope="module")
def start_gateway(
    dynamodb: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[GatewayConfig], LambdaGateway]]:
    """Cold-start a Lambda instance whose gateway.yaml is `config`."""
    started: list[LambdaGateway] = []

    def start(config: GatewayConfig) -> LambdaGateway:
        path: Path = tmp_path_factory.mktemp("config") / "gateway.yaml"
        path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True)))
        gateway = LambdaGateway(load_handler(path, TABLE))
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.close()


@pytest.fixture(scope="module")
def gateway(
    start_gateway: Callable[[GatewayConfig], LambdaGateway],
    make_config: Callable[..., GatewayConfig],
    demo_upstreams: dict[str, str],
) -> LambdaGateway:
    """The handler in front of both demo upstreams (support__*, finance__*)."""
    return start_gateway(make_config(demo_upstreams))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Metrics are switched off in tests (POWERTOOLS_METRICS_DISABLED), so every flush warns.
    quiet = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(quiet)
