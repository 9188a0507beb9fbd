"""Cross-site and DNS-rebinding requests are refused as such, before any token is looked at."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient
from tollway.auth.dev import DEV_ISSUER, jwk_set, signing_key
from tollway.config import parse_config
from tollway.http import create_app
from tollway.store.sessions import MemorySessionStore


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    config = parse_config(
        {
            "resource": "http://127.0.0.1:8080/mcp",
            "auth": {"issuer": DEV_ISSUER},
            "upstreams": [{"name": "support", "url": "http://127.0.0.1:9/mcp"}],
            "http": {"allowed_hosts": ["127.0.0.1:*"], "allowed_origins": ["http://localhost:*"]},
        }
    )
    app = create_app(config, store=MemorySessionStore(), dev_keys=jwk_set(signing_key(tmp_path / "key.pem")))
    return TestClient(app, base_url="http://127.0.0.1:8080")


def test_a_foreign_host_without_a_token_is_refused_as_a_foreign_host(client: TestClient) -> None:
    response = client.post("/mcp", json={}, headers={"host": "evil.example:8080"})

    assert response.status_code == 421
    assert "www-authenticate" not in response.headers
    assert response.json()["error"]["message"] == "Misdirected request: host not allowed"


def test_a_foreign_origin_without_a_token_is_refused_as_a_foreign_origin(client: TestClient) -> None:
    response = client.post("/mcp", json={}, headers={"origin": "https://evil.example"})

    assert response.status_code == 403
    assert "www-authenticate" not in response.headers
    assert response.json()["error"]["message"] == "Forbidden: origin not allowed"


def test_an_allowed_origin_without_a_token_gets_the_auth_challenge(client: TestClient) -> None:
    response = client.post("/mcp", json={}, headers={"origin": "http://localhost:6274"})

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer resource_metadata="')
