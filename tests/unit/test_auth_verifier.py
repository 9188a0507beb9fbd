"""The token verifier and the identity it yields, without a network: keys come from a static
key set (a JWKS fetched over HTTP is tested in tests/functional/test_jwks_rotation.py). Also the
configurations a gateway refuses to start with (authentication fails closed).

`InvalidToken.reason` is what an operator reads in the log; callers never see it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt import PyJWKSet
from jwt.algorithms import ECAlgorithm
from starlette.testclient import TestClient
from tollway.auth import dev
from tollway.auth.middleware import principal_from_claims
from tollway.auth.verifier import InvalidToken, TokenVerifier
from tollway.config import AuthConfig, GatewayConfig, load_config, parse_config
from tollway.errors import ConfigError
from tollway.http import build_verifier, create_app
from tollway.store.sessions import MemorySessionStore

AUDIENCE = "https://gateway.example.com/mcp"
ISSUER = "https://issuer.example.com/"
KID = "key-1"
UPSTREAM = {"name": "support", "url": "http://127.0.0.1:9/mcp"}


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_set(*keys: tuple[ec.EllipticCurvePrivateKey, str]) -> PyJWKSet:
    return PyJWKSet.from_dict(
        {"keys": [{**ECAlgorithm.to_jwk(k.public_key(), as_dict=True), "kid": kid, "use": "sig"} for k, kid in keys]}
    )


def _verifier(key: ec.EllipticCurvePrivateKey, **auth: Any) -> TokenVerifier:
    return TokenVerifier(AuthConfig(issuer=ISSUER, **auth), AUDIENCE, jwks=_key_set((key, KID)))


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "iat": now, "exp": now + 300, "tenant_id": "acme"}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(key: ec.EllipticCurvePrivateKey, kid: str | None = KID, **overrides: Any) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(_claims(**overrides), key, algorithm="ES256", headers=headers)


def _reason(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(token)
    return refused.value.reason


# --- what the verifier accepts -----------------------------------------------------------------
def test_a_valid_token_yields_its_claims(key: ec.EllipticCurvePrivateKey) -> None:
    claims = _verifier(key).verify(_sign(key, scope="mcp:tools"))

    assert (claims["sub"], claims["tenant_id"], claims["scope"]) == ("alice", "acme", "mcp:tools")


def test_the_audience_may_be_one_of_several(key: ec.EllipticCurvePrivateKey) -> None:
    claims = _verifier(key).verify(_sign(key, aud=["https://other.example", AUDIENCE]))

    assert AUDIENCE in claims["aud"]


def test_clock_skew_within_the_leeway_is_tolerated(key: ec.EllipticCurvePrivateKey) -> None:
    now = int(time.time())
    verifier = _verifier(key, leeway_seconds=30)

    assert verifier.verify(_sign(key, exp=now - 10))
    assert verifier.verify(_sign(key, nbf=now + 10))


# --- what it refuses, and the reason it logs ----------------------------------------------------
def test_a_token_over_the_size_limit_is_refused_before_it_is_parsed(key: ec.EllipticCurvePrivateKey) -> None:
    verifier = _verifier(key, max_token_bytes=1024)
    small = _sign(key)
    large = _sign(key, padding="x" * 1024)

    assert len(small) < 1024 < len(large)
    assert verifier.verify(small)
    assert _reason(verifier, large) == "token exceeds the size limit"
    assert _reason(verifier, "!" * 1025) == "token exceeds the size limit"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "eyJhbGciOiJFUzI1NiJ9", "....."])
def test_a_token_that_is_not_a_jwt_is_malformed(key: ec.EllipticCurvePrivateKey, token: str) -> None:
    assert _reason(_verifier(key), token) == "malformed token"


def test_an_algorithm_outside_the_allow_list_is_refused_even_with_a_good_signature(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    verifier = _verifier(key, algorithms=["RS256"])

    assert _reason(verifier, _sign(key)) == "algorithm 'ES256' not allowed"


def test_an_unsigned_token_is_refused_for_its_algorithm(key: ec.EllipticCurvePrivateKey) -> None:
    token = jwt.encode(_claims(), None, algorithm="none", headers={"kid": KID})

    assert _reason(_verifier(key), token) == "algorithm 'none' not allowed"


def test_a_token_without_a_kid_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    assert _reason(_verifier(key), _sign(key, kid=None)) == "token has no kid"


def test_a_kid_that_is_not_a_string_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    header = {"alg": "ES256", "typ": "JWT", "kid": 7}
    signing_input = ".".join(jwt.utils.base64url_encode(json.dumps(p).encode()).decode() for p in (header, _claims()))
    signature = ECAlgorithm(ECAlgorithm.SHA256).sign(signing_input.encode(), key)
    token = f"{signing_input}.{jwt.utils.base64url_encode(signature).decode()}"

    assert _reason(_verifier(key), token) == "malformed token"


def test_a_kid_not_in_the_key_set_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    assert _reason(_verifier(key), _sign(key, kid="key-2")) == "unknown kid"


def test_a_signature_by_another_key_under_a_known_kid_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())

    assert _reason(_verifier(key), _sign(other)) == "InvalidSignatureError"


def test_each_key_of_the_set_verifies_only_its_own_kid(key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    verifier = TokenVerifier(AuthConfig(issuer=ISSUER), AUDIENCE, jwks=_key_set((key, KID), (other, "key-2")))

    assert verifier.verify(_sign(other, kid="key-2"))
    assert _reason(verifier, _sign(other, kid=KID)) == "InvalidSignatureError"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (lambda: {"iss": "https://evil.example/"}, "InvalidIssuerError"),
        (lambda: {"aud": "https://other.example/mcp"}, "InvalidAudienceError"),
        # Times are taken when the test runs, not when it is collected (a long run in between
        # would turn "in two minutes" into the past).
        (lambda: {"exp": int(time.time()) - 120}, "ExpiredSignatureError"),
        (lambda: {"nbf": int(time.time()) + 120}, "ImmatureSignatureError"),
        (lambda: {"iat": int(time.time()) + 120}, "ImmatureSignatureError"),
        (lambda: {"exp": None}, "MissingRequiredClaimError"),
        (lambda: {"iss": None}, "MissingRequiredClaimError"),
        (lambda: {"aud": None}, "MissingRequiredClaimError"),
        (lambda: {"exp": "tomorrow"}, "DecodeError"),
    ],
    ids=[
        "issuer",
        "audience",
        "expired",
        "not yet valid",
        "issued in the future",
        "no exp",
        "no iss",
        "no aud",
        "bad exp",
    ],
)
def test_a_token_failing_a_registered_claim_check_is_refused(
    key: ec.EllipticCurvePrivateKey, overrides: Callable[[], dict[str, Any]], reason: str
) -> None:
    assert _reason(_verifier(key, leeway_seconds=30), _sign(key, **overrides())) == reason


def test_configured_required_claims_must_be_present(key: ec.EllipticCurvePrivateKey) -> None:
    verifier = _verifier(key, required_claims=["jti", "client_id"])

    assert _reason(verifier, _sign(key, jti="t-1")) == "MissingRequiredClaimError"
    assert verifier.verify(_sign(key, jti="t-1", client_id="app"))


def test_a_verifier_without_a_key_source_refuses_every_token(key: ec.EllipticCurvePrivateKey) -> None:
    verifier = TokenVerifier(AuthConfig(issuer=ISSUER), AUDIENCE)

    assert _reason(verifier, _sign(key)) == "no JWKS configured"


# --- from claims to a principal ------------------------------------------------------------------
def _gateway_config(**auth: Any) -> GatewayConfig:
    return parse_config(
        {"resource": AUDIENCE, "auth": {"issuer": ISSUER, "jwks_url": ISSUER, **auth}, "upstreams": [UPSTREAM]}
    )


def test_scopes_are_the_union_of_scope_and_scp() -> None:
    principal = principal_from_claims(
        {"sub": "alice", "tenant_id": "acme", "scope": "a b", "scp": ["c", "b", 7]}, _gateway_config()
    )

    assert principal.scopes == {"a", "b", "c"}


def test_scp_may_also_be_a_space_separated_string() -> None:
    principal = principal_from_claims({"sub": "alice", "tenant_id": "acme", "scp": "a b"}, _gateway_config())

    assert principal.scopes == {"a", "b"}


def test_tenant_and_roles_come_from_the_configured_claims() -> None:
    config = _gateway_config(tenant_claim="custom:tenant", roles_claim="cognito:groups")
    claims = {"sub": "alice", "custom:tenant": "acme", "tenant_id": "globex", "cognito:groups": ["admin", "ops"]}

    principal = principal_from_claims(claims, config)

    assert (principal.tenant, principal.roles) == ("acme", {"admin", "ops"})


def test_a_token_without_a_tenant_gets_the_default_tenant_when_one_is_set() -> None:
    principal = principal_from_claims({"sub": "alice"}, _gateway_config(default_tenant="public"))

    assert principal.tenant == "public"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"tenant_id": "acme"}, "token has no usable subject"),
        ({"sub": "", "tenant_id": "acme"}, "token has no usable subject"),
        ({"sub": 42, "tenant_id": "acme"}, "token has no usable subject"),
        ({"sub": "alice"}, "token has no usable tenant"),
        ({"sub": "alice", "tenant_id": ["acme", "globex"]}, "token has no usable tenant"),
        ({"sub": "alice", "tenant_id": 7}, "token has no usable tenant"),
    ],
)
def test_a_token_without_a_usable_subject_or_tenant_is_refused(claims: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidToken) as refused:
        principal_from_claims(claims, _gateway_config())

    assert refused.value.reason == reason


# --- configurations the gateway refuses to start with --------------------------------------------
def _config(auth: dict[str, Any]) -> GatewayConfig:
    return parse_config({"resource": AUDIENCE, "auth": auth, "upstreams": [UPSTREAM]})


def _start(config: GatewayConfig, **kwargs: Any) -> Any:
    return create_app(config, store=MemorySessionStore(), streaming=False, **kwargs)


def test_the_dev_issuer_is_refused_without_dev_keys() -> None:
    with pytest.raises(ConfigError, match="local development issuer"):
        _start(_config({"issuer": dev.DEV_ISSUER}))


def test_the_dev_issuer_is_refused_even_with_a_jwks_url() -> None:
    with pytest.raises(ConfigError, match="local development issuer"):
        _start(_config({"issuer": dev.DEV_ISSUER, "jwks_url": "https://issuer.example.com/jwks.json"}))


def test_a_jwks_cache_lifespan_of_zero_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        _start(_config({"issuer": ISSUER, "jwks_url": f"{ISSUER}jwks.json", "jwks_cache_seconds": 0}))


def test_a_deployment_cannot_switch_the_dev_issuer_on_through_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"resource: {AUDIENCE}\nauth:\n  issuer: {ISSUER}\n  jwks_url: {ISSUER}jwks\nupstreams:\n")
    path.write_text(path.read_text() + "  - name: support\n    url: http://127.0.0.1:9/mcp\n")
    monkeypatch.setenv("TOLLWAY_AUTH_ISSUER", dev.DEV_ISSUER)

    with pytest.raises(ConfigError, match="local development issuer"):
        _start(load_config(str(path)))


def test_the_dev_issuer_with_dev_keys_verifies_dev_tokens(tmp_path: Path) -> None:
    key = dev.signing_key(tmp_path / "key.pem")
    verifier = build_verifier(_config({"issuer": dev.DEV_ISSUER}), dev.jwk_set(key))
    token = dev.mint(key, subject="dev", tenant="acme", audience=AUDIENCE)

    assert verifier is not None
    assert verifier.verify(token)["sub"] == "dev"


def test_no_issuer_is_refused_unless_anonymous_access_is_asked_for() -> None:
    with pytest.raises(ConfigError, match="authentication fails closed"):
        _start(_config({}))


def test_an_issuer_without_a_jwks_url_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"auth\.jwks_url is required"):
        _start(_config({"issuer": ISSUER}))


def test_anonymous_access_must_be_asked_for_and_then_no_token_is_needed() -> None:
    config = _config({"allow_anonymous": True})
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "unit", "version": "1"},
    }
    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "notifications/cancelled",
    }

    with TestClient(_start(config)) as client:
        response = client.post(
            "/mcp",
            json={"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"_meta": meta}},
            headers=headers,
        )

    assert build_verifier(config, None) is None
    assert response.status_code == 202
    assert "www-authenticate" not in response.headers


def test_an_issuer_wins_over_allow_anonymous() -> None:
    config = _config({"issuer": ISSUER, "jwks_url": f"{ISSUER}jwks", "allow_anonymous": True})

    assert isinstance(build_verifier(config, None), TokenVerifier)


# --- tokens that passed are remembered ---------------------------------------------------------
def test_a_token_that_passed_is_remembered_and_one_that_failed_is_not(key: ec.EllipticCurvePrivateKey) -> None:
    verifier = _verifier(key)
    good, expired = _sign(key), _sign(key, exp=int(time.time()) - 120)

    assert verifier.remembered(good) is None
    claims = verifier.verify(good)
    with pytest.raises(InvalidToken):
        verifier.verify(expired)

    assert verifier.remembered(good) == claims
    assert verifier.remembered(expired) is None
    assert verifier.remembered(good + "x") is None  # another token, even one character off


def test_a_remembered_token_is_forgotten_when_it_expires_or_the_jwks_cache_would_have(
    key: ec.EllipticCurvePrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = _verifier(key, jwks_cache_seconds=60)
    soon, later = _sign(key, exp=int(time.time()) + 30), _sign(key, exp=int(time.time()) + 3600)
    verifier.verify(soon)
    verifier.verify(later)
    now = time.time()

    monkeypatch.setattr(time, "time", lambda: now + 31)
    assert (verifier.remembered(soon), verifier.remembered(later) is not None) == (None, True)
    monkeypatch.setattr(time, "time", lambda: now + 61)
    assert verifier.remembered(later) is None


def test_remembered_tokens_are_bounded(key: ec.EllipticCurvePrivateKey, monkeypatch: pytest.MonkeyPatch) -> None:
    from tollway.auth import verifier as module

    monkeypatch.setattr(module, "REMEMBERED_TOKENS", 3)
    verifier = _verifier(key)
    tokens = [_sign(key, sub=f"agent-{i}") for i in range(4)]
    for token in tokens:
        verifier.verify(token)

    assert [verifier.remembered(t) is not None for t in tokens] == [False, True, True, True]
