"""Regressions found while testing identity, authorization and upstream credentials: each test
states behaviour a caller or operator relies on that an earlier version got wrong."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.auth import dev
from tollway.auth.verifier import InvalidToken, TokenVerifier
from tollway.config import AuthConfig, parse_config
from tollway.errors import ConfigError
from tollway.http import create_app
from tollway.store.sessions import MemorySessionStore

from tests.fixtures.recording_upstream import Caller, LocalIssuer, RecordingUpstream, SigningKey, serve_in_thread

RESOURCE = "https://gateway.example.com/mcp"
INVALID_TOKEN = (
    'Bearer resource_metadata="https://gateway.example.com/.well-known/oauth-protected-resource/mcp", '
    'error="invalid_token"'
)


@pytest.fixture(scope="module")
def dev_key(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return dev.signing_key(Path(tmp_path_factory.mktemp("dev")) / "key.pem")


# --- 1. a denied tool is distinguishable from a missing one under the same prefix ------------------
@pytest.fixture(scope="module")
def acme(demo_upstreams: dict[str, str], dev_key: Any) -> Iterator[Caller]:
    """Tenant acme may use finance__* except run_forecast, which needs a scope acme lacks."""
    config = parse_config(
        {
            "resource": RESOURCE,
            "auth": {"issuer": dev.DEV_ISSUER},
            "upstreams": [{"name": "finance", "url": demo_upstreams["finance"]}],
            "tenants": {
                "acme": {
                    "tools": ["finance__*"],
                    "rules": [{"match": ["finance__run_forecast"], "scopes": ["forecast"]}],
                }
            },
        }
    )
    app = create_app(config, store=MemorySessionStore(), streaming=False, dev_keys=dev.jwk_set(dev_key))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Caller(client, dev.mint(dev_key, subject="alice", tenant="acme", audience=RESOURCE))


@pytest.mark.parametrize("era", ["2026-07-28", "2025-11-25"])
def test_a_denied_tool_and_a_missing_tool_under_the_same_prefix_answer_alike(acme: Caller, era: str) -> None:
    session = acme.open_session() if era == "2025-11-25" else None

    def call(name: str) -> Any:
        params = {"name": name, "arguments": {"region": "EMEA"}}
        return acme.legacy("tools/call", params, session=session) if session else acme.modern("tools/call", params)

    denied, missing = call("finance__run_forecast"), call("finance__no_such_tool")

    assert denied.status_code == missing.status_code, (denied.text, missing.text)
    assert json.loads(denied.text.replace("finance__run_forecast", "finance__no_such_tool")) == missing.json()


# --- 2. a JWKS cache lifespan of 0 passes validation, then crashes create_app -----------------------
def test_a_jwks_cache_lifespan_of_zero_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        config = parse_config(
            {
                "resource": RESOURCE,
                "auth": {
                    "issuer": "https://issuer.example.com/",
                    "jwks_url": "https://issuer.example.com/jwks.json",
                    "jwks_cache_seconds": 0,
                },
                "upstreams": [{"name": "rec", "url": "http://127.0.0.1:9/mcp"}],
            }
        )
        create_app(config, store=MemorySessionStore(), streaming=False)


# --- 3. credentials failures at first contact are reported as something else ------------------------
@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream().running() as upstream:
        yield upstream


@pytest.fixture
def secrets() -> Iterator[Any]:
    with mock_aws():
        parameters.clear_caches()
        yield boto3.client("secretsmanager")
        parameters.clear_caches()


def _gateway(upstream: RecordingUpstream, dev_key: Any, stack: contextlib.ExitStack, **settings: Any) -> Caller:
    config = parse_config(
        {
            "resource": RESOURCE,
            "auth": {"issuer": dev.DEV_ISSUER},
            "upstreams": [{"name": "rec", "url": upstream.url, **settings}],
        }
    )
    app = create_app(config, store=MemorySessionStore(), streaming=False, dev_keys=dev.jwk_set(dev_key))
    client = stack.enter_context(TestClient(app, raise_server_exceptions=False))
    return Caller(client, dev.mint(dev_key, subject="alice", tenant="acme", audience=RESOURCE))


def test_a_missing_secret_for_a_2026_only_upstream_is_the_stable_credentials_error(
    upstream: RecordingUpstream, dev_key: Any, secrets: Any
) -> None:
    with contextlib.ExitStack() as stack:
        alice = _gateway(
            upstream, dev_key, stack, protocol="2026-07-28", auth={"type": "bearer", "secret": "tollway/absent"}
        )

        response = alice.modern("tools/call", {"name": "rec__echo", "arguments": {}})

    assert response.status_code == 502
    assert response.json()["error"] == {
        "code": c.INTERNAL_ERROR,
        "message": "Upstream 'rec' credentials are unavailable",
        "data": {"upstream": "rec"},
    }


@pytest.mark.parametrize("protocol", ["auto", "2026-07-28"])
def test_an_upstream_refusing_the_gateways_credentials_at_first_contact_is_reported_as_such(
    upstream: RecordingUpstream, dev_key: Any, secrets: Any, protocol: str
) -> None:
    secrets.create_secret(Name="tollway/rec", SecretString="revoked-secret")
    upstream.clear()
    upstream.refuse(10)
    try:
        with contextlib.ExitStack() as stack:
            alice = _gateway(
                upstream, dev_key, stack, protocol=protocol, auth={"type": "bearer", "secret": "tollway/rec"}
            )

            response = alice.modern("tools/call", {"name": "rec__echo", "arguments": {}})
    finally:
        upstream.refuse(0)

    assert response.json()["error"]["message"] == "Upstream 'rec' refused the gateway's credentials"


# --- 4. a JWKS document that is not a key set escapes the verifier ----------------------------------
@pytest.fixture(scope="module")
def broken_jwks() -> Iterator[str]:
    documents = {
        "empty": JSONResponse({"keys": []}),
        "no-keys": JSONResponse({}),
        "html": Response("<html>maintenance</html>", media_type="text/html"),
    }

    async def serve(request: Any) -> Response:
        return documents[request.path_params["name"]]

    with serve_in_thread(Starlette(routes=[Route("/{name}", serve)])) as base:
        yield base


@pytest.mark.parametrize("document", ["empty", "no-keys", "html"])
def test_a_jwks_that_is_not_a_key_set_is_an_invalid_token_like_an_unreachable_one(
    broken_jwks: str, document: str
) -> None:
    key = SigningKey("ES256")
    issuer = LocalIssuer(key)
    verifier = TokenVerifier(AuthConfig(issuer=issuer.issuer, jwks_url=f"{broken_jwks}/{document}"), RESOURCE)

    with pytest.raises(InvalidToken):
        verifier.verify(key.sign(issuer.claims(audience=RESOURCE)))


def test_a_gateway_whose_issuer_serves_an_empty_key_set_answers_401_not_an_internal_error(
    broken_jwks: str, upstream: RecordingUpstream
) -> None:
    key = SigningKey("ES256")
    issuer = LocalIssuer(key)
    config = parse_config(
        {
            "resource": RESOURCE,
            "auth": {"issuer": issuer.issuer, "jwks_url": f"{broken_jwks}/empty"},
            "upstreams": [{"name": "rec", "url": upstream.url}],
        }
    )
    with TestClient(create_app(config, store=MemorySessionStore(), streaming=False)) as client:
        response = Caller(client, key.sign(issuer.claims(audience=RESOURCE))).modern("tools/list")

    assert response.status_code == 401, response.text
    assert response.headers.get("www-authenticate") == INVALID_TOKEN
