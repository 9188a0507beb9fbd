"""Attacks on the gateway's identity stage, as a client would mount them over HTTP.

The gateway trusts an RS256 issuer whose JWKS is served over real HTTP on 127.0.0.1 (so
pyjwt's `PyJWKClient` fetches it for real), and fronts one recording upstream. Every refused
request gets the exact status, `WWW-Authenticate` challenge and JSON-RPC error a client would
see (no reason why), and the upstream's record proves that nothing got past the gateway.
The local development issuer (`dev_keys`) is attacked the same way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.auth import dev
from tollway.config import GatewayConfig, parse_config
from tollway.http import create_app
from tollway.store.sessions import MemorySessionStore

from tests.fixtures.recording_upstream import Caller, LocalIssuer, RecordingUpstream, SigningKey
from tests.unit.wire import assert_http_error

RESOURCE = "https://gateway.example.com/mcp"
METADATA_URL = "https://gateway.example.com/.well-known/oauth-protected-resource/mcp"
CHALLENGE = f'Bearer resource_metadata="{METADATA_URL}"'
INVALID_TOKEN = f'{CHALLENGE}, error="invalid_token"'
INVALID_REQUEST = f'{CHALLENGE}, error="invalid_request"'
SCOPES = "mcp:tools mcp:read"
LEEWAY = 30
UNAUTHORIZED = {"code": c.INVALID_REQUEST, "message": "Unauthorized"}
ECHO = {"name": "rec__echo", "arguments": {"text": "hello"}}


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(SigningKey("RS256")).running() as issuer:
        yield issuer


def _config(recorder: RecordingUpstream, auth: dict[str, Any]) -> GatewayConfig:
    return parse_config(
        {
            "resource": RESOURCE,
            "auth": {"required_scopes": SCOPES.split(), "leeway_seconds": LEEWAY, **auth},
            "upstreams": [{"name": "rec", "url": recorder.url}],
            "tenants": {"acme": {"tools": ["rec__echo"]}, "globex": {"upstreams": ["rec"]}},
        }
    )


@pytest.fixture(scope="module")
def store() -> MemorySessionStore:
    return MemorySessionStore()


@pytest.fixture(scope="module")
def client(recorder: RecordingUpstream, issuer: LocalIssuer, store: MemorySessionStore) -> Iterator[TestClient]:
    config = _config(recorder, {"issuer": issuer.issuer, "jwks_url": issuer.jwks_url})
    with TestClient(create_app(config, store=store, streaming=False), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def dev_client(recorder: RecordingUpstream, dev_key: Any) -> Iterator[TestClient]:
    config = _config(recorder, {"issuer": dev.DEV_ISSUER})
    app = create_app(config, store=MemorySessionStore(), streaming=False, dev_keys=dev.jwk_set(dev_key))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _token(issuer: LocalIssuer, key: SigningKey | None = None, **claims: Any) -> str:
    key = key or issuer.keys[0]
    return key.sign(issuer.claims(audience=RESOURCE, scope=SCOPES, **claims))


def _assert_refused(response: Any, challenge: str, recorder: RecordingUpstream) -> None:
    assert response.headers["www-authenticate"] == challenge
    error = assert_http_error(response, 401, c.INVALID_REQUEST, message="Unauthorized")
    assert error == UNAUTHORIZED
    assert recorder.requests == [], "a refused request reached the upstream"


# --- forged and broken tokens ---------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join((_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature)))


def _hs256_with_public_pem(issuer: LocalIssuer) -> str:
    """The classic key-confusion forgery: HMAC keyed with the issuer's public key PEM."""
    key = issuer.keys[0]
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    claims = issuer.claims(audience=RESOURCE, scope=SCOPES)
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _alg_none(issuer: LocalIssuer) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": issuer.keys[0].kid}
    return _unsigned(header, issuer.claims(audience=RESOURCE, scope=SCOPES))


def _signature_stripped(issuer: LocalIssuer) -> str:
    head, body, _ = _token(issuer).split(".")
    return f"{head}.{body}."


def _tamper(token: str, **changes: Any) -> str:
    """`token` with claims changed and its original signature kept."""
    head, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return f"{head}.{_b64(json.dumps({**claims, **changes}).encode())}.{signature}"


def _tampered(issuer: LocalIssuer) -> str:
    """A genuine token of tenant acme whose payload now says globex."""
    return _tamper(_token(issuer, tenant="acme"), tenant_id="globex")


def _signed_by_a_stranger_with_a_known_kid(issuer: LocalIssuer) -> str:
    stranger = SigningKey("RS256", kid=issuer.keys[0].kid)
    return _token(issuer, stranger)


def _embedded_jwk(issuer: LocalIssuer) -> str:
    """The signer's own public key carried in the header (`jwk`) must not be trusted."""
    stranger = SigningKey("RS256")
    claims = issuer.claims(audience=RESOURCE, scope=SCOPES)
    return stranger.sign(claims, headers={"jwk": stranger.jwk()})


ATTACKS: dict[str, Callable[[LocalIssuer], str]] = {
    "malformed": lambda issuer: "this-is.not-a.jwt",
    "not even three segments": lambda issuer: "garbage",
    "alg none": _alg_none,
    "alg none in capitals": lambda issuer: _unsigned(
        {"alg": "NONE", "kid": issuer.keys[0].kid}, issuer.claims(audience=RESOURCE, scope=SCOPES)
    ),
    "HS256 keyed with the public key PEM": _hs256_with_public_pem,
    "signature stripped": _signature_stripped,
    "signed by another key under a known kid": _signed_by_a_stranger_with_a_known_kid,
    "signer's key embedded in the header": _embedded_jwk,
    "no kid": lambda issuer: jwt.encode(
        issuer.claims(audience=RESOURCE, scope=SCOPES), issuer.keys[0].private, algorithm="RS256"
    ),
    "unknown kid": lambda issuer: _token(issuer, SigningKey("RS256")),
    "wrong issuer": lambda issuer: _token(issuer, iss="https://evil.example/"),
    "wrong audience": lambda issuer: _token(issuer, aud="https://other-gateway.example.com/mcp"),
    "audience list without the gateway": lambda issuer: _token(issuer, aud=["https://a.example", "https://b.example"]),
    "expired beyond the leeway": lambda issuer: _token(issuer, exp=int(time.time()) - LEEWAY - 60),
    "not yet valid beyond the leeway": lambda issuer: _token(issuer, nbf=int(time.time()) + LEEWAY + 60),
    "no expiry": lambda issuer: _token(issuer, exp=None),
    "no issuer claim": lambda issuer: _token(issuer, iss=None),
    "no subject": lambda issuer: _token(issuer, sub=None),
    "no tenant": lambda issuer: _token(issuer, tenant=None),
    "tampered payload": _tampered,
    "oversized (validly signed)": lambda issuer: _token(issuer, padding="x" * 9000),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_forged_or_unacceptable_token_is_refused_before_any_upstream(
    client: TestClient, issuer: LocalIssuer, recorder: RecordingUpstream, attack: str
) -> None:
    token = ATTACKS[attack](issuer)

    response = Caller(client, token).modern("tools/call", ECHO)

    _assert_refused(response, INVALID_TOKEN, recorder)


def test_a_token_in_the_jku_header_does_not_make_the_gateway_fetch_that_key_set(
    client: TestClient, issuer: LocalIssuer, recorder: RecordingUpstream
) -> None:
    stranger = SigningKey("RS256")
    with LocalIssuer(stranger).running() as evil:
        token = stranger.sign(issuer.claims(audience=RESOURCE, scope=SCOPES), headers={"jku": evil.jwks_url})

        response = Caller(client, token).modern("tools/call", ECHO)

        _assert_refused(response, INVALID_TOKEN, recorder)
        assert evil.fetches == 0


def test_the_refusal_says_nothing_about_why(client: TestClient, issuer: LocalIssuer) -> None:
    expired = Caller(client, _token(issuer, exp=int(time.time()) - 3600)).modern("tools/call", ECHO)
    forged = Caller(client, _alg_none(issuer)).modern("tools/call", ECHO)
    stranger = Caller(client, _token(issuer, iss="https://evil.example/")).modern("tools/call", ECHO)

    answers = {(r.status_code, r.headers["www-authenticate"], r.text) for r in (expired, forged, stranger)}
    assert len(answers) == 1


# --- no token, or a token where it must not be ----------------------------------------------------
@pytest.mark.parametrize(
    "authorization",
    [None, "Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer    ", "Token abc.def.ghi"],
    ids=["no header", "basic", "empty bearer", "blank bearer", "other scheme"],
)
def test_a_request_without_a_bearer_token_gets_the_bare_challenge(
    client: TestClient, recorder: RecordingUpstream, authorization: str | None
) -> None:
    caller = Caller(client, None, authorization=authorization)

    response = caller.modern("tools/call", ECHO)

    _assert_refused(response, CHALLENGE, recorder)


def test_two_authorization_headers_are_not_a_token(
    client: TestClient, issuer: LocalIssuer, recorder: RecordingUpstream
) -> None:
    valid = f"Bearer {_token(issuer)}"
    headers = [("content-type", "application/json"), ("accept", "application/json, text/event-stream")]
    headers += [("authorization", valid), ("authorization", valid)]

    response = client.post("/mcp", content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}), headers=headers)

    _assert_refused(response, CHALLENGE, recorder)


def test_no_session_can_be_opened_without_a_token(
    client: TestClient, store: MemorySessionStore, recorder: RecordingUpstream
) -> None:
    before = dict(store.sessions)

    response = Caller(client, None).initialize()

    _assert_refused(response, CHALLENGE, recorder)
    assert "mcp-session-id" not in response.headers
    assert store.sessions == before


@pytest.mark.parametrize("param", ["access_token", "token", "id_token"])
def test_a_token_in_the_query_string_is_refused_even_a_valid_one(
    client: TestClient, issuer: LocalIssuer, recorder: RecordingUpstream, param: str
) -> None:
    token = _token(issuer)

    alone = Caller(client, None).modern("tools/call", ECHO, url=f"/mcp?{param}={token}")
    with_header = Caller(client, token).modern("tools/call", ECHO, url=f"/mcp?{param}={token}")

    _assert_refused(alone, INVALID_REQUEST, recorder)
    _assert_refused(with_header, INVALID_REQUEST, recorder)


def test_the_challenge_points_at_metadata_served_without_a_token(client: TestClient, issuer: LocalIssuer) -> None:
    refused = Caller(client, None).modern("tools/list")
    metadata_path = METADATA_URL.removeprefix("https://gateway.example.com")

    metadata = client.get(metadata_path)

    assert refused.headers["www-authenticate"] == CHALLENGE
    assert metadata.status_code == 200
    assert metadata.json() == {
        "resource": RESOURCE,
        "authorization_servers": [issuer.issuer],
        "bearer_methods_supported": ["header"],
        "scopes_supported": SCOPES.split(),
        "resource_name": "tollway",
    }


# --- a valid token, and what it still may not do -----------------------------------------------
def test_a_valid_token_reaches_the_upstream_without_itself(
    client: TestClient, issuer: LocalIssuer, recorder: RecordingUpstream
) -> None:
    token = _token(issuer, tenant="acme")

    response = Caller(client, token).modern("tools/call", ECHO)

    assert response.status_code == 200, response.text
    assert response.json()["result"]["content"] == [{"type": "text", "text": '{"text": "hello"}'}]
    assert [r.method for r in recorder.calls()] == ["tools/call"]
    assert token not in recorder.everything_seen()


def test_scopes_may_come_as_an_scp_list(client: TestClient, issuer: LocalIssuer) -> None:
    token = issuer.keys[0].sign(issuer.claims(audience=RESOURCE, scp=SCOPES.split()))

    response = Caller(client, token).modern("tools/call", ECHO)

    assert response.status_code == 200, response.text


@pytest.mark.parametrize("scope", [None, "", "mcp:tools", "mcp:tools mcp:reader"])
def test_a_valid_token_without_the_required_scopes_gets_403_naming_them(
    client: TestClient, issuer: LocalIssuer, recorder: RecordingUpstream, scope: str | None
) -> None:
    token = issuer.keys[0].sign(issuer.claims(audience=RESOURCE, scope=scope))

    response = Caller(client, token).modern("tools/call", ECHO)

    assert response.headers["www-authenticate"] == f'{CHALLENGE}, error="insufficient_scope", scope="{SCOPES}"'
    error = assert_http_error(response, 403, c.INVALID_REQUEST, message="Forbidden: insufficient scope")
    missing = [s for s in SCOPES.split() if s not in (scope or "").split()]
    assert error == {
        "code": c.INVALID_REQUEST,
        "message": "Forbidden: insufficient scope",
        "data": {"requiredScopes": missing},
    }
    assert recorder.requests == []


def test_a_session_replayed_by_another_tenant_is_unknown(
    client: TestClient, issuer: LocalIssuer, recorder: RecordingUpstream
) -> None:
    alice = Caller(client, _token(issuer, subject="alice", tenant="acme"))
    mallory = Caller(client, _token(issuer, subject="mallory", tenant="globex"))
    session = alice.open_session()
    recorder.clear()

    replayed = mallory.legacy("tools/list", session=session)
    unknown = mallory.legacy("tools/list", session="no-such-session")

    assert_http_error(replayed, 404, c.INVALID_REQUEST, message="Session not found", request_id=1)
    assert (replayed.status_code, replayed.text) == (unknown.status_code, unknown.text)
    assert recorder.requests == []
    assert alice.legacy("tools/list", session=session).status_code == 200


def test_a_session_is_bound_to_its_subject_within_a_tenant(client: TestClient, issuer: LocalIssuer) -> None:
    alice = Caller(client, _token(issuer, subject="alice", tenant="acme"))
    bob = Caller(client, _token(issuer, subject="bob", tenant="acme"))
    session = alice.open_session()

    replayed = bob.legacy("tools/list", session=session)

    assert_http_error(replayed, 404, c.INVALID_REQUEST, message="Session not found", request_id=1)


def test_another_tenant_cannot_end_a_session(
    client: TestClient, issuer: LocalIssuer, store: MemorySessionStore
) -> None:
    alice = Caller(client, _token(issuer, subject="alice", tenant="acme"))
    mallory = Caller(client, _token(issuer, subject="mallory", tenant="globex"))
    session = alice.open_session()

    response = mallory.delete(session)

    assert_http_error(response, 404, c.INVALID_REQUEST, message="Session not found")
    assert session in store.sessions
    assert alice.legacy("tools/list", session=session).status_code == 200


@pytest.mark.parametrize("era", ["2026-07-28", "2025-11-25"])
def test_a_tool_outside_the_tenant_policy_is_answered_exactly_like_a_missing_tool(
    client: TestClient, issuer: LocalIssuer, recorder: RecordingUpstream, era: str
) -> None:
    acme = Caller(client, _token(issuer, tenant="acme"))
    session = acme.open_session() if era == "2025-11-25" else ""
    recorder.clear()

    def call(name: str) -> Any:
        params = {"name": name, "arguments": {}}
        return acme.modern("tools/call", params) if not session else acme.legacy("tools/call", params, session=session)

    denied, missing = call("rec__whoami"), call("nowhere__whoami")

    status = 400 if era == "2026-07-28" else 200
    assert_http_error(denied, status, c.INVALID_PARAMS, message="Unknown tool: rec__whoami", request_id=1)
    assert denied.status_code == missing.status_code
    assert denied.headers["content-type"] == missing.headers["content-type"]
    assert json.loads(denied.text.replace("rec__whoami", "nowhere__whoami")) == missing.json()
    assert recorder.calls() == []


def test_a_tool_outside_the_tenant_policy_is_not_listed(client: TestClient, issuer: LocalIssuer) -> None:
    acme = Caller(client, _token(issuer, tenant="acme"))
    globex = Caller(client, _token(issuer, tenant="globex"))

    acme_tools = [t["name"] for t in acme.modern("tools/list").json()["result"]["tools"]]
    globex_tools = [t["name"] for t in globex.modern("tools/list").json()["result"]["tools"]]

    assert acme_tools == ["rec__echo"]
    assert globex_tools == ["rec__echo", "rec__whoami"]


def test_a_tenant_without_a_policy_sees_and_reaches_nothing(
    client: TestClient, issuer: LocalIssuer, recorder: RecordingUpstream
) -> None:
    initech = Caller(client, _token(issuer, tenant="initech"))

    listed = initech.modern("tools/list")
    called = initech.modern("tools/call", ECHO)

    assert listed.json()["result"]["tools"] == []
    assert_http_error(called, 400, c.INVALID_PARAMS, message="Unknown tool: rec__echo", request_id=1)
    assert recorder.calls() == []


# --- the local development issuer --------------------------------------------------------------
def _dev_token(key: Any, **kwargs: Any) -> str:
    return dev.mint(key, subject="dev-user", tenant="acme", audience=RESOURCE, scopes=SCOPES, **kwargs)


def test_a_dev_token_is_accepted_by_the_dev_gateway(
    dev_client: TestClient, dev_key: Any, recorder: RecordingUpstream
) -> None:
    response = Caller(dev_client, _dev_token(dev_key)).modern("tools/call", ECHO)

    assert response.status_code == 200, response.text
    assert len(recorder.calls()) == 1


DEV_ATTACKS: dict[str, Callable[[Any, Path], str]] = {
    "another machine's dev key": lambda key, tmp: _dev_token(dev.signing_key(tmp / "other.pem")),
    "expired": lambda key, tmp: _dev_token(key, ttl=-3600),
    "wrong audience": lambda key, tmp: dev.mint(
        key, subject="u", tenant="acme", audience="https://x/mcp", scopes=SCOPES
    ),
    "wrong issuer": lambda key, tmp: _dev_token(key, issuer="https://issuer.test.invalid/"),
    "alg none": lambda key, tmp: _unsigned(
        {"alg": "none", "kid": dev.key_id(key)}, jwt.decode(_dev_token(key), options={"verify_signature": False})
    ),
    "tampered payload": lambda key, tmp: _tamper(_dev_token(key), sub="root"),
}


@pytest.mark.parametrize("attack", list(DEV_ATTACKS))
def test_the_dev_gateway_refuses_forged_dev_tokens(
    dev_client: TestClient, dev_key: Any, recorder: RecordingUpstream, tmp_path: Path, attack: str
) -> None:
    token = DEV_ATTACKS[attack](dev_key, tmp_path)

    response = Caller(dev_client, token).modern("tools/call", ECHO)

    _assert_refused(response, INVALID_TOKEN, recorder)


def test_a_dev_token_is_refused_by_a_gateway_trusting_a_real_issuer(
    client: TestClient, dev_key: Any, recorder: RecordingUpstream
) -> None:
    response = Caller(client, _dev_token(dev_key)).modern("tools/call", ECHO)

    _assert_refused(response, INVALID_TOKEN, recorder)
