"""The gateway's own credentials for an upstream, and what of the caller's request reaches it.

Secrets live in an in-process Secrets Manager (moto); the upstream is a recording MCP server
(`recorder`) and the OAuth token endpoint a local one that counts what it issues, both on
127.0.0.1. Callers authenticate with a dev-issuer token; that token must never be seen upstream.
Credentials that cannot be had, or that the upstream refuses, are each one stable error, for an
upstream of either era and from the very first contact.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.auth import dev
from tollway.config import parse_config
from tollway.http import create_app
from tollway.secrets import secrets_provider
from tollway.store.sessions import MemorySessionStore

from tests.fixtures.recording_upstream import Caller, RecordingUpstream, TokenEndpoint
from tests.unit.wire import assert_http_error

RESOURCE = "https://gateway.example.com/mcp"
ECHO = {"name": "rec__echo", "arguments": {"text": "hi"}}
CLIENT = {"client_id": "tollway-gateway", "client_secret": "client-secret-value"}
UNAVAILABLE = {
    "code": c.INTERNAL_ERROR,
    "message": "Upstream 'rec' credentials are unavailable",
    "data": {"upstream": "rec"},
}


@pytest.fixture
def secrets() -> Iterator[Any]:
    """An empty Secrets Manager; the gateway's secret cache (its Powertools provider) is emptied
    around each test."""
    with mock_aws():
        secrets_provider.cache_clear()
        yield boto3.client("secretsmanager")
        secrets_provider.cache_clear()


@pytest.fixture
def start(recorder: RecordingUpstream, dev_key: Any) -> Iterator[Callable[..., Caller]]:
    """A fresh gateway whose one upstream `rec` has the given settings; returns alice of acme."""
    with contextlib.ExitStack() as stack:

        def start(**settings: Any) -> Caller:
            config = parse_config(
                {
                    "resource": RESOURCE,
                    "auth": {"issuer": dev.DEV_ISSUER},
                    "upstreams": [{"name": "rec", "url": recorder.url, **settings}],
                }
            )
            app = create_app(config, store=MemorySessionStore(), streaming=False, dev_keys=dev.jwk_set(dev_key))
            client = stack.enter_context(TestClient(app, raise_server_exceptions=False))
            return Caller(client, dev.mint(dev_key, subject="alice", tenant="acme", audience=RESOURCE))

        yield start


@pytest.fixture
def token_endpoint() -> Iterator[TokenEndpoint]:
    with TokenEndpoint(**CLIENT).running() as endpoint:
        yield endpoint


def _ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert result.get("isError") is not True, result
    return result


def _assert_never_seen(recorder: RecordingUpstream, caller: Caller) -> None:
    assert caller.token
    assert caller.token not in recorder.everything_seen()


def _authorizations(recorder: RecordingUpstream) -> set[str | None]:
    return {r.headers.get("authorization") for r in recorder.requests}


# --- static secrets --------------------------------------------------------------------------------
def test_a_bearer_secret_is_sent_as_the_authorization_header(
    start: Callable[..., Caller], secrets: Any, recorder: RecordingUpstream
) -> None:
    secrets.create_secret(Name="tollway/rec", SecretString="upstream-bearer-secret")
    alice = start(auth={"type": "bearer", "secret": "tollway/rec"})

    _ok(alice.modern("tools/call", ECHO))

    assert recorder.calls()
    assert _authorizations(recorder) == {"Bearer upstream-bearer-secret"}
    _assert_never_seen(recorder, alice)


def test_a_header_secret_is_sent_in_the_named_header_and_nothing_in_authorization(
    start: Callable[..., Caller], secrets: Any, recorder: RecordingUpstream
) -> None:
    secrets.create_secret(Name="tollway/rec-key", SecretString="upstream-api-key")
    alice = start(auth={"type": "header", "header": "X-Api-Key", "secret": "tollway/rec-key"})

    _ok(alice.modern("tools/call", ECHO))

    assert recorder.calls()
    assert {r.headers.get("x-api-key") for r in recorder.requests} == {"upstream-api-key"}
    assert _authorizations(recorder) == {None}
    _assert_never_seen(recorder, alice)


def test_an_upstream_without_credentials_gets_none_of_the_callers(
    start: Callable[..., Caller], recorder: RecordingUpstream
) -> None:
    alice = start()
    alice_headers = alice.headers
    alice.headers = lambda **extra: {  # type: ignore[method-assign]
        **alice_headers(**extra),
        "cookie": "session=caller-cookie",
        "x-api-key": "caller-api-key",
        "x-tollway-tenant": "globex",
        "x-tollway-subject": "root",
    }

    _ok(alice.modern("tools/call", ECHO))
    seen = recorder.everything_seen()

    assert recorder.calls()
    assert _authorizations(recorder) == {None}
    for leaked in ("caller-cookie", "caller-api-key", "globex", "root"):
        assert leaked not in seen
    _assert_never_seen(recorder, alice)


def test_the_callers_token_is_not_forwarded_in_a_2025_session_either(
    start: Callable[..., Caller], secrets: Any, recorder: RecordingUpstream
) -> None:
    secrets.create_secret(Name="tollway/rec", SecretString="upstream-bearer-secret")
    alice = start(auth={"type": "bearer", "secret": "tollway/rec"}, protocol="legacy")
    session = alice.open_session()

    _ok(alice.legacy("tools/call", ECHO, session=session))
    assert alice.delete(session).status_code == 204

    assert [r.method for r in recorder.requests if r.method != "initialize"][-2:] == ["tools/call", "DELETE"]
    assert _authorizations(recorder) == {"Bearer upstream-bearer-secret"}
    _assert_never_seen(recorder, alice)


# --- identity headers --------------------------------------------------------------------------------
def test_identity_headers_carry_the_callers_tenant_and_subject(
    start: Callable[..., Caller], recorder: RecordingUpstream
) -> None:
    alice = start(identity_headers=True)

    result = _ok(alice.modern("tools/call", {"name": "rec__whoami", "arguments": {}}))

    (call,) = recorder.calls()
    assert (call.headers["x-tollway-tenant"], call.headers["x-tollway-subject"]) == ("acme", "alice")
    assert result["content"][0]["text"] == "alice"
    _assert_never_seen(recorder, alice)


def test_identity_headers_sent_by_the_caller_are_replaced_by_the_verified_ones(
    start: Callable[..., Caller], recorder: RecordingUpstream
) -> None:
    alice = start(identity_headers=True)
    spoofed = alice.headers(mcp_protocol_version="2026-07-28", mcp_method="tools/call", mcp_name="rec__whoami")
    spoofed.update({"x-tollway-tenant": "globex", "x-tollway-subject": "root"})
    meta = {
        c.META_PROTOCOL_VERSION: "2026-07-28",
        c.META_CLIENT_CAPABILITIES: {},
        c.META_CLIENT_INFO: {"name": "spoofer", "version": "1"},
    }
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "rec__whoami", "_meta": meta}}

    result = _ok(alice.client.post("/mcp", json=body, headers=spoofed))

    (call,) = recorder.calls()
    assert (call.headers["x-tollway-tenant"], call.headers["x-tollway-subject"]) == ("acme", "alice")
    assert result["content"][0]["text"] == "alice"


def test_without_identity_headers_the_upstream_learns_nothing_of_the_caller(
    start: Callable[..., Caller], recorder: RecordingUpstream
) -> None:
    alice = start()

    _ok(alice.modern("tools/call", ECHO))

    (call,) = recorder.calls()
    assert "x-tollway-tenant" not in call.headers
    assert "x-tollway-subject" not in call.headers


# --- OAuth client credentials ---------------------------------------------------------------------
def _oauth(start: Callable[..., Caller], token_endpoint: TokenEndpoint, secrets: Any, **auth: Any) -> Caller:
    secrets.create_secret(Name="tollway/rec-client", SecretString=json.dumps(CLIENT))
    return start(
        auth={
            "type": "oauth_client_credentials",
            "secret": "tollway/rec-client",
            "token_url": token_endpoint.url,
            **auth,
        }
    )


def test_a_client_credentials_token_is_fetched_once_and_reused(
    start: Callable[..., Caller], secrets: Any, token_endpoint: TokenEndpoint, recorder: RecordingUpstream
) -> None:
    alice = _oauth(start, token_endpoint, secrets, scope="mcp.read mcp.call")

    _ok(alice.modern("tools/call", ECHO))
    _ok(alice.modern("tools/call", ECHO))

    assert token_endpoint.requests == [
        {"grant_type": "client_credentials", **CLIENT, "scope": "mcp.read mcp.call"},
    ]
    assert len(recorder.calls()) == 2
    assert _authorizations(recorder) == {"Bearer upstream-token-1"}
    _assert_never_seen(recorder, alice)
    assert alice.token not in json.dumps([token_endpoint.headers, token_endpoint.requests])


def test_a_client_credentials_token_is_refreshed_a_minute_before_it_expires(
    start: Callable[..., Caller], secrets: Any, token_endpoint: TokenEndpoint, recorder: RecordingUpstream
) -> None:
    token_endpoint.expires_in = 61  # usable for one more second
    alice = _oauth(start, token_endpoint, secrets)

    _ok(alice.modern("tools/call", ECHO))
    time.sleep(1.05)
    _ok(alice.modern("tools/call", ECHO))

    assert len(token_endpoint.requests) == 2
    assert [c.headers["authorization"] for c in recorder.calls()] == [
        "Bearer upstream-token-1",
        "Bearer upstream-token-2",
    ]


def test_an_upstream_refusing_the_token_makes_the_gateway_fetch_a_new_one(
    start: Callable[..., Caller], secrets: Any, token_endpoint: TokenEndpoint, recorder: RecordingUpstream
) -> None:
    alice = _oauth(start, token_endpoint, secrets)
    _ok(alice.modern("tools/call", ECHO))
    recorder.refuse(1)

    refused = alice.modern("tools/call", ECHO)
    retried = alice.modern("tools/call", ECHO)

    error = assert_http_error(refused, 502, c.INTERNAL_ERROR, request_id=1)
    assert error["message"] == "Upstream 'rec' refused the gateway's credentials"
    _ok(retried)
    assert len(token_endpoint.requests) == 2
    assert recorder.calls()[-1].headers["authorization"] == "Bearer upstream-token-2"


# --- credentials that cannot be had ---------------------------------------------------------------
def _assert_unavailable(response: Any, recorder: RecordingUpstream) -> None:
    error = assert_http_error(response, 502, c.INTERNAL_ERROR, request_id=1)
    assert error == UNAVAILABLE
    assert recorder.requests == []


def test_a_missing_secret_is_a_stable_error_and_nothing_is_sent_upstream(
    start: Callable[..., Caller], secrets: Any, recorder: RecordingUpstream
) -> None:
    alice = start(auth={"type": "bearer", "secret": "tollway/never-created"})

    first = alice.modern("tools/call", ECHO)
    again = alice.modern("tools/call", ECHO)

    _assert_unavailable(first, recorder)
    _assert_unavailable(again, recorder)
    assert "never-created" not in first.text


def test_a_missing_client_secret_is_the_same_stable_error(
    start: Callable[..., Caller], secrets: Any, token_endpoint: TokenEndpoint, recorder: RecordingUpstream
) -> None:
    alice = start(
        auth={"type": "oauth_client_credentials", "secret": "tollway/absent", "token_url": token_endpoint.url}
    )

    _assert_unavailable(alice.modern("tools/call", ECHO), recorder)
    assert token_endpoint.requests == []


def test_a_missing_secret_for_a_2026_only_upstream_is_the_stable_credentials_error(
    start: Callable[..., Caller], secrets: Any
) -> None:
    alice = start(protocol="2026-07-28", auth={"type": "bearer", "secret": "tollway/absent"})

    response = alice.modern("tools/call", {"name": "rec__echo", "arguments": {}})

    assert response.status_code == 502
    assert response.json()["error"] == UNAVAILABLE


@pytest.mark.parametrize("protocol", ["auto", "2026-07-28"])
def test_an_upstream_refusing_the_gateways_credentials_at_first_contact_is_reported_as_such(
    start: Callable[..., Caller], secrets: Any, recorder: RecordingUpstream, protocol: str
) -> None:
    secrets.create_secret(Name="tollway/rec", SecretString="revoked-secret")
    recorder.refuse(10)
    alice = start(protocol=protocol, auth={"type": "bearer", "secret": "tollway/rec"})

    response = alice.modern("tools/call", {"name": "rec__echo", "arguments": {}})

    assert response.json()["error"]["message"] == "Upstream 'rec' refused the gateway's credentials"


@pytest.mark.parametrize(
    "secret",
    [
        "not json",
        json.dumps({"client_id": "tollway-gateway"}),
        json.dumps([1, 2]),
        json.dumps({**CLIENT, "client_secret": "wrong"}),
    ],
    ids=["not JSON", "no client_secret", "not an object", "refused by the token endpoint"],
)
def test_client_credentials_that_do_not_work_are_the_same_stable_error(
    start: Callable[..., Caller], secrets: Any, token_endpoint: TokenEndpoint, recorder: RecordingUpstream, secret: str
) -> None:
    secrets.create_secret(Name="tollway/rec-client", SecretString=secret)
    alice = start(
        auth={"type": "oauth_client_credentials", "secret": "tollway/rec-client", "token_url": token_endpoint.url}
    )

    response = alice.modern("tools/call", ECHO)

    _assert_unavailable(response, recorder)
    assert "wrong" not in response.text
