"""Secrets from AWS Secrets Manager (through Powertools parameters, cached per warm instance):
the gateway's credentials for upstreams, and the key of `hash` field rules."""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from tollway.aws import client_config
from tollway.config import GatewayConfig

HASH_KEY_MAX_AGE = 3600


def get_secret(name: str, max_age: int) -> str:
    """The secret string, from the cache when younger than `max_age` seconds. Blocking I/O."""
    return str(secrets_provider().get(name, max_age=max_age))


@functools.cache
def secrets_provider() -> Any:
    """One Powertools Secrets Manager provider per instance (its cache), its client's waits
    bounded (`tollway.aws`)."""
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    return SecretsProvider(boto_config=client_config())


def field_hash_key(config: GatewayConfig) -> bytes:
    """Key of `hash` field rules: from Secrets Manager (`masking.hash_key_secret`) when set; else
    derived from the gateway name (fine locally only)."""
    secret = config.masking.hash_key_secret
    if secret:
        return hashlib.sha256(get_secret(secret, HASH_KEY_MAX_AGE).encode()).digest()
    return hashlib.sha256(f"tollway/field-hash/{config.name}".encode()).digest()
