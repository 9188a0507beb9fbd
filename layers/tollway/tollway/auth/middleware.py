"""The auth stage: bearer token -> Principal on scope["principal"], or a spec challenge.

Every path is protected except the public ones `create_app` names (health, protected-resource
metadata, the dev issuer's JWKS): a route added later is protected without anyone remembering to.
401 carries `WWW-Authenticate: Bearer resource_metadata=…` (plus `error="invalid_token"` when
a token was sent); a valid token without the gateway's required scopes gets 403
`insufficient_scope` naming them. Why a token failed is logged, never answered.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from tollway.auth.verifier import InvalidToken, TokenVerifier
from tollway.blocking import run_blocking
from tollway.config import GatewayConfig
from tollway.context import ANONYMOUS, Principal
from tollway.errors import Forbidden, Unauthorized
from tollway.telemetry import count, logger

_QUERY_TOKEN_PARAMS = {"access_token", "token", "id_token"}
MAX_CLAIM_CHARS = 256
"""Longest tenant or subject accepted: both become parts of DynamoDB keys."""


def metadata_url(resource: str) -> str:
    """RFC 9728 §3.1: the metadata URL inserts the well-known segment before the resource path."""
    parts = urlsplit(resource)
    return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{parts.path.rstrip('/')}"


class AuthMiddleware:
    def __init__(
        self, app: ASGIApp, config: GatewayConfig, verifier: TokenVerifier | None, public_paths: frozenset[str]
    ) -> None:
        self.app = app
        self.config = config
        self.verifier = verifier
        self.public_paths = public_paths
        self.challenge = f'Bearer resource_metadata="{metadata_url(config.resource)}"'

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.public_paths:
            scope["principal"] = await self._principal(scope)  # raises: the error middleware answers
        await self.app(scope, receive, send)

    async def _principal(self, scope: Scope) -> Principal:
        if self.verifier is None:  # auth.allow_anonymous: an explicit opt-out
            return ANONYMOUS
        query = scope.get("query_string", b"")
        if query and _QUERY_TOKEN_PARAMS & parse_qs(query.decode("latin-1")).keys():
            _refuse("token in query string")
            raise Unauthorized(headers={"www-authenticate": f'{self.challenge}, error="invalid_request"'})
        token = _bearer(scope)
        if token is None:
            raise Unauthorized(headers={"www-authenticate": self.challenge})
        try:
            # A token seen before costs no thread hop and no signature check (see TokenVerifier).
            claims = self.verifier.remembered(token) or await run_blocking(self.verifier.verify, token)
            principal = principal_from_claims(claims, self.config)
        except InvalidToken as exc:
            _refuse(exc.reason)
            raise Unauthorized(headers={"www-authenticate": f'{self.challenge}, error="invalid_token"'}) from None
        missing = [s for s in self.config.auth.required_scopes if s not in principal.scopes]
        if missing:
            raise insufficient_scope(self.config, self.config.auth.required_scopes, missing, tenant=principal.tenant)
        return principal


def insufficient_scope(config: GatewayConfig, required: list[str], missing: list[str], **extra: Any) -> Forbidden:
    """The 403 for a valid token without the scopes a path needs (logged and counted)."""
    _refuse("insufficient scope", **extra)
    challenge = f'Bearer resource_metadata="{metadata_url(config.resource)}"'
    header = f'{challenge}, error="insufficient_scope", scope="{" ".join(required)}"'
    return Forbidden(headers={"www-authenticate": header}, data={"requiredScopes": missing})


def _refuse(reason: str, **extra: Any) -> None:
    logger.warning("authentication refused", extra={"reason": reason, **extra})
    count("AuthFailures", 1)


def _bearer(scope: Scope) -> str | None:
    values = [v for k, v in scope.get("headers") or [] if k == b"authorization"]
    if len(values) != 1:
        return None
    scheme, _, token = values[0].decode("latin-1").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def principal_from_claims(claims: dict[str, Any], config: GatewayConfig) -> Principal:
    auth = config.auth
    subject = claims.get("sub")
    if not _usable(subject):
        raise InvalidToken("token has no usable subject")
    tenant = claims.get(auth.tenant_claim) or auth.default_tenant
    if not _usable(tenant):
        raise InvalidToken("token has no usable tenant")
    return Principal(
        subject=subject,
        tenant=tenant,
        scopes=frozenset(_words(claims.get("scope")) | _words(claims.get("scp"))),
        roles=frozenset(_words(claims.get(auth.roles_claim))),
    )


def _usable(value: Any) -> bool:
    """A non-empty, short string that is valid Unicode (it will be part of storage keys)."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CLAIM_CHARS:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _words(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, list):
        return {v for v in value if isinstance(v, str)}
    return set()
