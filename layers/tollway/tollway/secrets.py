"""Secrets from AWS Secrets Manager (through Powertools parameters, cached per warm instance):
the gateway's credentials for upstreams, and the key of `hash` field rules."""

from __future__ import annotations

import hashlib

from tollway.config import GatewayConfig

HASH_KEY_MAX_AGE = 3600


def get_secret(name: str, max_age: int) -> str:
    """The secret string, from the cache when younger than `max_age` seconds. Blocking I/O."""
    from aws_lambda_powertools.utilities import parameters

    return str(parameters.get_secret(name, max_age=max_age))


def field_hash_key(config: GatewayConfig) -> bytes:
    """Key of `hash` field rules: from Secrets Manager (`masking.hash_key_secret`) when set; else
    derived from the gateway name (fine locally only)."""
    secret = config.masking.hash_key_secret
    if secret:
        return hashlib.sha256(get_secret(secret, HASH_KEY_MAX_AGE).encode()).digest()
    return hashlib.sha256(f"tollway/field-hash/{config.name}".encode()).digest()
