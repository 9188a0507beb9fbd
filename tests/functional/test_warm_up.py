"""A deployed instance's warm-up (tollway.live.warm_up): begun at init, it does what the first
request would otherwise do itself — the one DynamoDB client the stores share, the modules the
request path imports on first use, the JWKS — and a step that fails is left for the request.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from tollway.http import create_app
from tollway.live import LiveGateway, warm_up
from tollway.store import Stores
from tollway.store.table import DynamoClient

from tests.fixtures.recording_upstream import Caller, LocalIssuer, RecordingUpstream, SigningKey

RESOURCE = "https://gateway.example.com/mcp"
ECHO = {"name": "rec__echo", "arguments": {}}


@pytest.fixture
def no_dynamodb(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client can be created, never used: nothing answers on this endpoint."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(SigningKey("ES256")).running() as issuer:
        yield issuer


def _gateway(tmp_path: Path, recorder: RecordingUpstream, jwks_url: str, issuer: str, stores: Stores) -> LiveGateway:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"resource: {RESOURCE}\n"
        f"auth: {{issuer: '{issuer}', jwks_url: '{jwks_url}'}}\n"
        f"upstreams: [{{name: rec, url: '{recorder.url}'}}]\n"
    )
    return LiveGateway(str(config), lambda cfg, previous: create_app(cfg, stores=stores, streaming=False), ttl=0)


def test_the_warm_up_fetches_the_jwks_once_and_the_first_call_uses_it(
    tmp_path: Path, recorder: RecordingUpstream, issuer: LocalIssuer, fresh_dynamodb: object
) -> None:
    stores = Stores.dynamo()
    gateway = _gateway(tmp_path, recorder, issuer.jwks_url, issuer.issuer, stores)
    assert issuer.fetches == 0

    warm_up(gateway, stores)

    assert issuer.fetches == 1
    with TestClient(gateway.current, raise_server_exceptions=False) as client:
        reply = Caller(client, issuer.keys[0].sign(issuer.claims(audience=RESOURCE))).modern("tools/call", ECHO)
    assert reply.status_code == 200, reply.text
    assert "error" not in reply.json()
    assert issuer.fetches == 1  # the first request found the key set the warm-up fetched


@pytest.mark.usefixtures("no_dynamodb")
def test_the_warm_up_makes_the_one_client_every_store_shares_and_imports_first_use_modules(
    tmp_path: Path, recorder: RecordingUpstream, issuer: LocalIssuer
) -> None:
    stores = Stores.dynamo()
    gateway = _gateway(tmp_path, recorder, issuer.jwks_url, issuer.issuer, stores)

    warm_up(gateway, stores)

    made = stores.ledger._shared._client  # type: ignore[attr-defined]
    assert made is not None
    for store in (stores.sessions, stores.ledger, stores.pins, stores.approvals, stores.events):
        assert store.client is made  # type: ignore[attr-defined]
    assert "jsonschema.validators" in sys.modules


@pytest.mark.usefixtures("no_dynamodb")
def test_a_warm_up_step_that_fails_is_logged_and_leaves_the_rest_done(
    tmp_path: Path, recorder: RecordingUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    stores = Stores.dynamo()
    nobody = "http://127.0.0.1:9/jwks"  # nothing listens: the JWKS step fails
    gateway = _gateway(tmp_path, recorder, nobody, "https://issuer.example.com/", stores)

    warm_up(gateway, stores)  # does not raise

    assert stores.ledger._shared._client is not None  # type: ignore[attr-defined]
    failed = [r for r in caplog.records if r.getMessage() == "warm-up step failed"]
    assert [(r.step, r.error) for r in failed] == [("jwks", "PyJWKClientConnectionError")]  # type: ignore[attr-defined]


@pytest.mark.usefixtures("no_dynamodb")
def test_threads_that_ask_for_the_shared_client_at_once_get_one_client() -> None:
    shared = DynamoClient()
    start = threading.Barrier(8)
    got: list[object] = []

    def ask() -> None:
        start.wait()
        got.append(shared.get())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(got) == 8
    assert len({id(client) for client in got}) == 1
