"""The issuer's key set as a running gateway fetches it over real HTTP: rotation, caching, fetches
counted, and a key set that cannot be had.

pyjwt's `PyJWKClient` caches the key set for `auth.jwks_cache_seconds` and refreshes it for an
unknown `kid` at most once per `auth.jwks_refresh_cooldown`, counted from the last successful
fetch (the first fetch included). The cooldown here is short so that passing it is cheap.
A JWKS URL nobody answers, or a document that is not a key set (empty, without `keys`, HTML),
refuses the token like any invalid one: the caller gets 401 `invalid_token`, never an internal error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.auth.verifier import InvalidToken, TokenVerifier
from tollway.config import AuthConfig, parse_config
from tollway.http import create_app
from tollway.store.sessions import MemorySessionStore

from tests.fixtures.recording_upstream import Caller, LocalIssuer, RecordingUpstream, SigningKey, serve_in_thread
from tests.unit.wire import assert_http_error

RESOURCE = "https://gateway.example.com/mcp"
INVALID_TOKEN = (
    'Bearer resource_metadata="https://gateway.example.com/.well-known/oauth-protected-resource/mcp", '
    'error="invalid_token"'
)
COOLDOWN = 1.0
ECHO = {"name": "rec__echo", "arguments": {}}
FLOOD = 50


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(SigningKey("ES256")).running() as issuer:
        yield issuer


@pytest.fixture
def start(recorder: RecordingUpstream, issuer: LocalIssuer) -> Iterator[Callable[..., TestClient]]:
    """A fresh gateway (a cold Lambda instance) trusting `issuer`; `auth` settings override."""
    with contextlib.ExitStack() as stack:

        def start(**auth: Any) -> TestClient:
            config = parse_config(
                {
                    "resource": RESOURCE,
                    "auth": {
                        "issuer": issuer.issuer,
                        "jwks_url": issuer.jwks_url,
                        "jwks_refresh_cooldown": COOLDOWN,
                        **auth,
                    },
                    "upstreams": [{"name": "rec", "url": recorder.url}],
                }
            )
            app = create_app(config, store=MemorySessionStore(), streaming=False)
            return stack.enter_context(TestClient(app, raise_server_exceptions=False))

        yield start


def _token(issuer: LocalIssuer, key: SigningKey) -> str:
    return key.sign(issuer.claims(audience=RESOURCE))


def _call(client: TestClient, token: str) -> Any:
    return Caller(client, token).modern("tools/call", ECHO)


def _assert_refused(response: Any) -> None:
    assert response.headers["www-authenticate"] == INVALID_TOKEN
    assert_http_error(response, 401, c.INVALID_REQUEST, message="Unauthorized")


def _past_cooldown() -> None:
    time.sleep(COOLDOWN + 0.05)


def test_a_key_added_by_a_rotation_is_used_without_a_restart(
    start: Callable[..., TestClient], issuer: LocalIssuer
) -> None:
    client = start()
    k1, k2 = issuer.keys[0], SigningKey("ES256")
    assert _call(client, _token(issuer, k1)).status_code == 200
    issuer.publish(k1, k2)
    _past_cooldown()

    with_k2 = _call(client, _token(issuer, k2))
    with_k1 = _call(client, _token(issuer, k1))
    again_k2 = _call(client, _token(issuer, k2))

    assert (with_k2.status_code, with_k1.status_code, again_k2.status_code) == (200, 200, 200)
    assert issuer.fetches == 2


def test_a_rotation_to_only_the_new_key_is_followed(start: Callable[..., TestClient], issuer: LocalIssuer) -> None:
    client = start()
    k1, k2 = issuer.keys[0], SigningKey("ES256")
    assert _call(client, _token(issuer, k1)).status_code == 200
    issuer.publish(k2)
    _past_cooldown()

    response = _call(client, _token(issuer, k2))

    assert response.status_code == 200, response.text
    assert issuer.fetches == 2


def test_a_new_key_within_the_cooldown_of_the_last_fetch_is_refused_until_it_passes(
    start: Callable[..., TestClient], issuer: LocalIssuer
) -> None:
    client = start()
    k1, k2 = issuer.keys[0], SigningKey("ES256")
    assert _call(client, _token(issuer, k1)).status_code == 200
    issuer.publish(k1, k2)

    too_soon = _call(client, _token(issuer, k2))
    fetches_too_soon = issuer.fetches
    _past_cooldown()
    later = _call(client, _token(issuer, k2))

    _assert_refused(too_soon)
    assert fetches_too_soon == 1
    assert later.status_code == 200, later.text
    assert issuer.fetches == 2


def test_a_withdrawn_key_works_until_the_cached_key_set_expires(
    start: Callable[..., TestClient], issuer: LocalIssuer
) -> None:
    client = start(jwks_cache_seconds=1, jwks_refresh_cooldown=1)
    k1, k2 = issuer.keys[0], SigningKey("ES256")
    assert _call(client, _token(issuer, k1)).status_code == 200
    issuer.publish(k2)

    while_cached = _call(client, _token(issuer, k1))
    time.sleep(1.05)
    after_expiry = _call(client, _token(issuer, k1))
    new_key = _call(client, _token(issuer, k2))

    assert while_cached.status_code == 200
    _assert_refused(after_expiry)
    assert new_key.status_code == 200, new_key.text
    assert issuer.fetches == 2


def test_a_cached_key_set_keeps_valid_tokens_working_while_the_issuer_is_down(
    recorder: RecordingUpstream,
) -> None:
    key = SigningKey("ES256")
    with contextlib.ExitStack() as running:
        issuer = running.enter_context(LocalIssuer(key).running())
        config = parse_config(
            {
                "resource": RESOURCE,
                "auth": {"issuer": issuer.issuer, "jwks_url": issuer.jwks_url},
                "upstreams": [{"name": "rec", "url": recorder.url}],
            }
        )
        with TestClient(create_app(config, store=MemorySessionStore(), streaming=False)) as client:
            assert _call(client, _token(issuer, key)).status_code == 200
            running.close()  # the issuer goes away

            response = _call(client, _token(issuer, key))

    assert response.status_code == 200, response.text


def _random_kid_token(issuer: LocalIssuer) -> str:
    return jwt.encode(
        issuer.claims(audience=RESOURCE), issuer.keys[0].private, algorithm="ES256", headers={"kid": uuid.uuid4().hex}
    )


async def _flood(client: TestClient, tokens: list[str]) -> list[httpx.Response]:
    """Send every token at once, as concurrent callers of one warm instance would."""
    transport = httpx.ASGITransport(app=client.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        callers = [Caller(client, token) for token in tokens]
        requests = [
            http.post(
                "/mcp",
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": ECHO},
                headers=caller.headers(mcp_protocol_version="2025-11-25"),
            )
            for caller in callers
        ]
        return await asyncio.gather(*requests)


def test_a_flood_of_unknown_kids_costs_at_most_one_jwks_fetch(
    start: Callable[..., TestClient], issuer: LocalIssuer, recorder: RecordingUpstream
) -> None:
    client = start()
    assert _call(client, _token(issuer, issuer.keys[0])).status_code == 200
    _past_cooldown()
    recorder.clear()
    before = issuer.fetches

    answers = asyncio.run(_flood(client, [_random_kid_token(issuer) for _ in range(FLOOD)]))

    assert [a.status_code for a in answers] == [401] * FLOOD
    assert {a.headers["www-authenticate"] for a in answers} == {INVALID_TOKEN}
    assert issuer.fetches - before <= 1
    assert recorder.requests == []
    assert _call(client, _token(issuer, issuer.keys[0])).status_code == 200


def test_unknown_kids_right_after_a_fetch_cause_no_fetch_at_all(
    start: Callable[..., TestClient], issuer: LocalIssuer
) -> None:
    client = start(jwks_refresh_cooldown=30)
    assert _call(client, _token(issuer, issuer.keys[0])).status_code == 200

    answers = [_call(client, _random_kid_token(issuer)) for _ in range(FLOOD)]

    assert [a.status_code for a in answers] == [401] * FLOOD
    assert issuer.fetches == 1


# --- a key set that cannot be had --------------------------------------------------------------------
@pytest.fixture(scope="module")
def broken_jwks() -> Iterator[str]:
    """`<base>/<name>`: a JWKS URL whose document is not a key set."""
    documents = {
        "empty": JSONResponse({"keys": []}),
        "no-keys": JSONResponse({}),
        "html": Response("<html>maintenance</html>", media_type="text/html"),
    }

    async def serve(request: Any) -> Response:
        return documents[request.path_params["name"]]

    with serve_in_thread(Starlette(routes=[Route("/{name}", serve)])) as base:
        yield base


def test_an_unreachable_jwks_refuses_the_token() -> None:
    key = SigningKey("ES256")
    issuer = LocalIssuer(key)
    verifier = TokenVerifier(AuthConfig(issuer=issuer.issuer, jwks_url="http://127.0.0.1:9/jwks.json"), RESOURCE)

    with pytest.raises(InvalidToken) as refused:
        verifier.verify(_token(issuer, key))

    assert refused.value.reason == "JWKS unreachable"


@pytest.mark.parametrize("document", ["empty", "no-keys", "html"])
def test_a_jwks_that_is_not_a_key_set_is_an_invalid_token_like_an_unreachable_one(
    broken_jwks: str, document: str
) -> None:
    key = SigningKey("ES256")
    issuer = LocalIssuer(key)
    verifier = TokenVerifier(AuthConfig(issuer=issuer.issuer, jwks_url=f"{broken_jwks}/{document}"), RESOURCE)

    with pytest.raises(InvalidToken):
        verifier.verify(_token(issuer, key))


def test_a_gateway_whose_issuer_serves_an_empty_key_set_answers_401_not_an_internal_error(
    broken_jwks: str, recorder: RecordingUpstream
) -> None:
    key = SigningKey("ES256")
    issuer = LocalIssuer(key)
    config = parse_config(
        {
            "resource": RESOURCE,
            "auth": {"issuer": issuer.issuer, "jwks_url": f"{broken_jwks}/empty"},
            "upstreams": [{"name": "rec", "url": recorder.url}],
        }
    )
    with TestClient(create_app(config, store=MemorySessionStore(), streaming=False)) as client:
        response = Caller(client, _token(issuer, key)).modern("tools/list")

    assert response.status_code == 401, response.text
    assert response.headers.get("www-authenticate") == INVALID_TOKEN
