"""How long the gateway's own AWS clients wait, decided once.

botocore waits 60 s to connect and 60 s for an answer, per attempt (3 attempts unless
configured): a service that hangs would hold a request, or an instance's start, for minutes
before the caller's failure mode applies. The services the gateway calls (DynamoDB, CloudWatch
Logs for the audit trail, EventBridge, Secrets Manager, Parameter Store, AppConfig) answer in
milliseconds, so every client it makes waits at most `CONNECT_TIMEOUT_SECONDS` to connect and
`READ_TIMEOUT_SECONDS` for an answer, per attempt. A store call that runs on the event loop's
thread while its request is alone (`tollway.blocking`) holds the loop no longer either.

The clients made here (`session`, `client`: DynamoDB, the audit log group, EventBridge) are
botocore's own: boto3 adds nothing to a low-level client but its import (20-30 ms of an
instance's first request, besides botocore's). Powertools' parameter providers (Secrets Manager,
Parameter Store, AppConfig) make theirs through boto3, with `client_config`. botocore is imported
when a client is made, not with this module (the cold import does not need it)."""

from __future__ import annotations

from typing import Any

CONNECT_TIMEOUT_SECONDS = 2
READ_TIMEOUT_SECONDS = 5


def client_config(**settings: Any) -> Any:
    """A botocore `Config` with the bounded waits; `settings` add to them or override them."""
    from botocore.config import Config

    return Config(**{"connect_timeout": CONNECT_TIMEOUT_SECONDS, "read_timeout": READ_TIMEOUT_SECONDS, **settings})


def session() -> Any:
    """A botocore session of its own (a session is not thread-safe, and an instance makes few
    clients): the region, credentials and endpoint settings from the environment and the config
    files, as boto3's would have."""
    import botocore.session

    return botocore.session.get_session()


def client(service: str, **settings: Any) -> Any:
    """A client of `service` with the bounded waits (`settings` as in `client_config`)."""
    return session().create_client(service, config=client_config(**settings))
