"""The gateway's own credentials for each upstream (never the caller's token).

`header`/`bearer`: a secret string from AWS Secrets Manager, read through Powertools
parameters (cached for `SECRET_MAX_AGE` across warm invocations).
`oauth_client_credentials`: client id and secret from Secrets Manager, exchanged at the
upstream's token endpoint; the access token is cached until shortly before it expires.
"""

from __future__ import annotations

import json
import time
from typing import NamedTuple

from tollway.blocking import run_blocking
from tollway.config import UpstreamConfig
from tollway.errors import UpstreamAuthError
from tollway.secrets import get_secret
from tollway.telemetry import logger

SECRET_MAX_AGE = 300
TOKEN_EXPIRY_MARGIN = 60
"""Refresh a client-credentials token this many seconds before it expires."""


class _Token(NamedTuple):
    value: str
    expires_at: float


class UpstreamCredentials:
    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self._token: _Token | None = None

    async def headers(self) -> dict[str, str]:
        auth = self.config.auth
        if auth.type == "none":
            return {}
        if auth.type == "header":
            return {auth.header: await self._secret()}
        if auth.type == "bearer":
            return {"authorization": f"Bearer {await self._secret()}"}
        return {"authorization": f"Bearer {await self._client_credentials_token()}"}

    def forget_token(self) -> None:
        """Called when the upstream answers 401: the next call fetches a fresh token."""
        self._token = None

    async def _secret(self) -> str:
        name = str(self.config.auth.secret)
        try:
            value = await run_blocking(get_secret, name, SECRET_MAX_AGE)
        except Exception as exc:  # boundary: any Secrets Manager failure is the same answer to the caller
            logger.error(
                "upstream secret unavailable", extra={"upstream": self.config.name, "error": type(exc).__name__}
            )
            raise self._unavailable() from exc
        return str(value)

    async def _client_credentials_token(self) -> str:
        if self._token is not None and self._token.expires_at - TOKEN_EXPIRY_MARGIN > time.time():
            return self._token.value
        auth = self.config.auth
        try:
            client = json.loads(await self._secret())
            form = {
                "grant_type": "client_credentials",
                "client_id": client["client_id"],
                "client_secret": client["client_secret"],
            }
        except (ValueError, KeyError, TypeError) as exc:
            logger.error(
                "upstream client secret is not {client_id, client_secret}", extra={"upstream": self.config.name}
            )
            raise self._unavailable() from exc
        if auth.scope:
            form["scope"] = auth.scope
        import httpx  # only here, about once an hour: not on every instance's import path

        try:
            async with httpx.AsyncClient() as http:
                reply = await http.post(auth.token_url or "", data=form, timeout=10.0)
            body = reply.json() if reply.status_code == 200 else {}
        except (httpx.HTTPError, ValueError) as exc:
            raise self._unavailable() from exc
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            logger.error(
                "upstream token endpoint refused", extra={"upstream": self.config.name, "status": reply.status_code}
            )
            raise self._unavailable()
        lifetime = body.get("expires_in")
        lifetime = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else 300.0
        self._token = _Token(token, time.time() + lifetime)
        return token

    def _unavailable(self) -> UpstreamAuthError:
        return UpstreamAuthError(self.config.name, f"Upstream '{self.config.name}' credentials are unavailable")
