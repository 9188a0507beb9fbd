"""The local development issuer: an ES256 key made once, its JWKS, and tokens signed with it.

Only `tollway dev` and `tollway token` use it. The key lives in the state directory
(`tollway.local_state`), never in the current one, so every shell finds the same key. `tollway dev`
serves its JWKS and names itself the issuer by its URL (`http://127.0.0.1:PORT`); a config
naming the placeholder `tollway-dev` is refused by `create_app` unless the dev server hands it
the key, so a deployed gateway can never trust it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt import PyJWKSet
from jwt.algorithms import ECAlgorithm

from tollway.auth import DEV_ISSUER
from tollway.local_state import dev_key_path


def signing_key(path: Path | None = None) -> ec.EllipticCurvePrivateKey:
    """Load the dev key (default: in the state directory), creating it (owner-readable only) on first use."""
    path = path or dev_key_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    return loaded


def key_id(key: ec.EllipticCurvePrivateKey) -> str:
    """RFC 7638 thumbprint of the public key."""
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    return jwt.utils.base64url_encode(hashlib.sha256(canonical.encode()).digest()).decode()


def jwks(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    return {"keys": [{**jwk, "kid": key_id(key), "use": "sig", "alg": "ES256"}]}


def jwk_set(key: ec.EllipticCurvePrivateKey) -> PyJWKSet:
    return PyJWKSet.from_dict(jwks(key))


def mint(
    key: ec.EllipticCurvePrivateKey,
    *,
    subject: str,
    tenant: str,
    audience: str,
    tenant_claim: str = "tenant_id",
    scopes: str = "",
    ttl: int = 3600,
    extra: dict[str, Any] | None = None,
    issuer: str = DEV_ISSUER,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        tenant_claim: tenant,
        **(extra or {}),
    }
    if scopes:
        claims["scope"] = scopes
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": key_id(key)})
