"""The shared base of the DynamoDB stores, and how keys are built."""

from __future__ import annotations

import os
import threading
from typing import Any

from tollway import aws
from tollway.errors import StorageError


class ConditionFailed(Exception):
    """A write's condition did not hold (raised only where the caller asked: `conditional=True`)."""


def key(*parts: str) -> str:
    """Join key parts with `#`, each part escaped (`%` -> `%25`, `#` -> `%23`), so values that
    contain `#` (a tenant `a#b`) can never make two principals' keys equal."""
    return "#".join(part.replace("%", "%25").replace("#", "%23") for part in parts)


class DynamoClient:
    """A DynamoDB client made on first use, once, by whichever thread comes first: the deployed
    stores share one (it is thread-safe), so an instance creates one client and keeps one
    connection pool, not one of each per store. Their data requests go out through `DynamoWire`
    (store/wire.py: about a third of the client's CPU per request); with a proxy configured,
    through the client itself. The client is botocore's (`tollway.aws`: the low-level client
    boto3 would return, without boto3's import)."""

    def __init__(self) -> None:
        self._client: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    from botocore.utils import get_environ_proxies

                    from tollway.store.wire import DynamoWire

                    session = aws.session()
                    # The stores build every request themselves: botocore's own check of each one
                    # costs about a seventh of a request's CPU and catches nothing DynamoDB would
                    # not refuse.
                    client = session.create_client("dynamodb", config=aws.client_config(parameter_validation=False))
                    proxied = client.meta.config.proxies or get_environ_proxies(client.meta.endpoint_url)
                    self._client = client if proxied else DynamoWire(client, session.get_credentials())
        return self._client


class DynamoTable:
    """Base of the DynamoDB stores: the table's name and a DynamoDB client made on first use
    (from `shared`, else one of its own), so requests that touch no table never import botocore.
    Tests inject a client."""

    unavailable = "Store unavailable"
    """What the `StorageError` every other DynamoDB failure becomes says (in the log)."""

    def __init__(self, table_name: str | None = None, client: Any = None, shared: DynamoClient | None = None) -> None:
        self.table_name = table_name or os.environ.get("TOLLWAY_TABLE", "TollwayTable")
        self._client = client
        self._shared = shared or DynamoClient()

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._shared.get()
        return self._client

    def _call(self, operation: str, *, conditional: bool = False, **kwargs: Any) -> dict[str, Any]:
        """`operation` on the table; a failed condition raises `ConditionFailed` if `conditional`,
        else (like any other failure) `StorageError`: no AWS detail reaches a caller."""
        return self._request(operation, conditional=conditional, TableName=self.table_name, **kwargs)

    def _request(self, operation: str, *, conditional: bool = False, **kwargs: Any) -> dict[str, Any]:
        """`_call` for requests that name their tables themselves (batches)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            if conditional and exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise ConditionFailed from exc
            raise StorageError(self.unavailable) from exc
        except BotoCoreError as exc:
            raise StorageError(self.unavailable) from exc


LOCAL_AWS_DEFAULTS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1"}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def use_local_credentials_for_loopback() -> None:
    """A loopback DynamoDB (`tollway dev`'s embedded one) takes any credentials: fill in
    placeholders, so operator commands run against it from a fresh shell. It is never
    throttled, so one retry is enough: a stopped one is reported at once, not after backoff."""
    from urllib.parse import urlsplit

    endpoint = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
    if endpoint and urlsplit(endpoint).hostname in _LOOPBACK:
        for key, value in {**LOCAL_AWS_DEFAULTS, "AWS_MAX_ATTEMPTS": "2"}.items():
            os.environ.setdefault(key, value)
