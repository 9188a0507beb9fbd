"""Every path needs a token except the public ones the app names: health, the protected-resource
metadata and (under `tollway dev`) the dev issuer's JWKS. A path nobody declared is refused like
/mcp, so a route added later cannot be forgotten."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from tollway.auth.dev import DEV_ISSUER, jwk_set, signing_key
from tollway.config import parse_config
from tollway.http import create_app
from tollway.store import Stores

from tests.unit.wire import assert_http_error

RESOURCE = "http://127.0.0.1:8080/mcp"


async def _jwks(request: Request) -> Response:
    return JSONResponse({"keys": []})


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    config = parse_config(
        {
            "resource": RESOURCE,
            "auth": {"issuer": DEV_ISSUER},
            "upstreams": [{"name": "support", "url": "http://127.0.0.1:9/mcp"}],
        }
    )
    app = create_app(
        config,
        stores=Stores.memory(),
        dev_keys=jwk_set(signing_key(tmp_path / "key.pem")),
        public_routes=[Route("/.well-known/jwks.json", _jwks, methods=["GET"])],
    )
    return TestClient(app, base_url="http://127.0.0.1:8080")


@pytest.mark.parametrize(
    "path",
    [
        "/healthz",
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/jwks.json",
    ],
)
def test_the_public_paths_answer_without_a_token(client: TestClient, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 200, response.text
    assert "www-authenticate" not in response.headers


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/mcp"),
        ("GET", "/admin/usage"),
        ("GET", "/admin/definitions/pending"),
        ("GET", "/admin/sessions"),  # no such route (yet): refused before anyone can learn that
        ("GET", "/metrics"),
        ("GET", "/healthz/../admin/usage"),
        ("GET", "/HEALTHZ"),
    ],
)
def test_every_other_path_needs_a_token_even_one_nobody_declared(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path)

    assert_http_error(response, 401, -32600, message="Unauthorized")
    challenge = response.headers["www-authenticate"]
    assert challenge == 'Bearer resource_metadata="http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp"'
