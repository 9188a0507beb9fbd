"""The shared base of the DynamoDB stores."""

from __future__ import annotations

import os
from typing import Any


class DynamoTable:
    """Base of the DynamoDB stores: the table's name and a boto3 client made on first use, so
    requests that touch no table never import boto3. Tests inject a client."""

    def __init__(self, table_name: str | None = None, client: Any = None) -> None:
        self.table_name = table_name or os.environ.get("TOLLWAY_TABLE", "TollwayTable")
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("dynamodb")
        return self._client


LOCAL_AWS_DEFAULTS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1"}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def use_local_credentials_for_loopback() -> None:
    """A loopback DynamoDB (`tollway dev`'s embedded one) takes any credentials: fill in
    placeholders, so operator commands run against it from a fresh shell."""
    from urllib.parse import urlsplit

    endpoint = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
    if endpoint and urlsplit(endpoint).hostname in _LOOPBACK:
        for key, value in LOCAL_AWS_DEFAULTS.items():
            os.environ.setdefault(key, value)
