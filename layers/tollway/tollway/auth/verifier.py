"""JWT verification (RFC 9068 style access tokens) with pyjwt against the issuer's JWKS.

Checks, in order: size, header shape, algorithm allow-list, key by `kid` (JWKS cached across
warm invocations; an unknown `kid` refreshes it at most once per cooldown, so a flood of random
`kid`s cannot hammer the issuer), signature, `iss`, `aud`, `exp`/`nbf`/`iat` with leeway, and
required claims. Every failure is one `InvalidToken` whose reason is for the log only.

A token that passed is remembered (`remembered`: a bounded LRU keyed by its SHA-256) until it
expires or `auth.jwks_cache_seconds` pass, whichever is first: an agent sends the same token on
every call, and checking a signature again costs more CPU than the rest of an admission. A key
removed from the JWKS stops its tokens within the same bound as the JWKS cache itself.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from tollway.config import AuthConfig

if TYPE_CHECKING:
    from jwt import PyJWKClient, PyJWKSet

REMEMBERED_TOKENS = 1024
JWKS_TIMEOUT_SECONDS = 5
"""A slow issuer must not hold requests past API Gateway's 29 s (lookups share one lock)."""


class InvalidToken(Exception):
    """The token is not acceptable. `reason` goes to the log, never to the caller."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TokenVerifier:
    def __init__(self, auth: AuthConfig, audience: str, jwks: PyJWKSet | None = None) -> None:
        if not auth.issuer:
            raise ValueError("a token verifier needs an issuer")
        self.auth = auth
        self.audience = audience
        self._static = jwks
        self._client: PyJWKClient | None = None
        self._passed: OrderedDict[bytes, tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def remembered(self, token: str) -> dict[str, Any] | None:
        """The claims of a token that passed `verify` recently and has not expired since."""
        fingerprint = hashlib.sha256(token.encode()).digest()
        with self._lock:
            entry = self._passed.get(fingerprint)
            if entry is None:
                return None
            if entry[0] <= time.time():
                del self._passed[fingerprint]
                return None
            self._passed.move_to_end(fingerprint)
            return entry[1]

    def verify(self, token: str) -> dict[str, Any]:
        claims = self._verify(token)
        exp = claims.get("exp")
        if isinstance(exp, int | float):
            until = min(float(exp), time.time() + self.auth.jwks_cache_seconds)
            with self._lock:
                self._passed[hashlib.sha256(token.encode()).digest()] = (until, claims)
                if len(self._passed) > REMEMBERED_TOKENS:
                    self._passed.popitem(last=False)
        return claims

    def _verify(self, token: str) -> dict[str, Any]:
        import jwt  # on the first token, not at cold start: healthz and 401s never need it

        if len(token) > self.auth.max_token_bytes:
            raise InvalidToken("token exceeds the size limit")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        alg = header.get("alg")
        if alg not in self.auth.algorithms:
            raise InvalidToken(f"algorithm {alg!r} not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("token has no kid")
        key = self._key(kid)
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.auth.issuer,
                leeway=self.auth.leeway_seconds,
                options={"require": ["exp", "iss", "aud", *self.auth.required_claims]},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from None

    def _key(self, kid: str) -> Any:
        if self._static is not None:
            for candidate in self._static.keys:
                if candidate.key_id == kid:
                    return candidate.key
            raise InvalidToken("unknown kid")
        import jwt

        client = self._jwks()
        if client is None:
            raise InvalidToken("no JWKS configured")
        try:
            return client.get_signing_key(kid).key
        except jwt.PyJWKClientConnectionError:
            raise InvalidToken("JWKS unreachable") from None
        except jwt.PyJWKClientError:
            raise InvalidToken("unknown kid") from None
        except (jwt.PyJWKSetError, jwt.InvalidKeyError, ValueError):
            raise InvalidToken("JWKS is not a usable key set") from None

    def _jwks(self) -> PyJWKClient | None:
        """The JWKS client, made once per instance (the JWKS cache lives in it); None when the
        keys are static or no JWKS is configured."""
        if self._client is None and self._static is None and self.auth.jwks_url:
            import jwt

            with self._lock:
                if self._client is None:
                    self._client = jwt.PyJWKClient(
                        self.auth.jwks_url,
                        lifespan=self.auth.jwks_cache_seconds,
                        cooldown_duration=self.auth.jwks_refresh_cooldown,
                        timeout=JWKS_TIMEOUT_SECONDS,
                    )
        return self._client

    def prefetch(self) -> None:
        """Fetch the JWKS now (an instance's warm-up, off the first request's path). A failure
        is the first token's to report: it fetches again."""
        client = self._jwks()
        if client is not None:
            client.get_signing_keys()
