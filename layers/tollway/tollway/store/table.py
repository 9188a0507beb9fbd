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
