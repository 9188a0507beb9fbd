"""An admin inspects and ends 2025-era sessions through the Lambda handler (API Gateway v2 events,
moto DynamoDB built from template.yaml), and lists the upstreams as one instance sees them.

The gateway trusts an RS256 issuer whose JWKS is served on 127.0.0.1 and fronts one recording
upstream spoken to as a 2025-era server, so each client session that calls a tool holds an
upstream session whose end (an HTTP DELETE) the upstream records. Admins are global: the admin
of tenant `ops` lists and ends sessions of `acme` and `globex`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.config import parse_config
from tollway.http import create_app
from tollway.store import Stores
from tollway.store.pins import MemoryPinStore

from tests.conftest import RESOURCE
from tests.fixtures.recording_upstream import LocalIssuer, RecordingUpstream, SigningKey
from tests.functional.lambda_harness import MODERN, Answer, LambdaGateway, assert_lambda_error, load_event
from tests.unit.wire import assert_http_error

ADMIN_SCOPE = "tollway:admin"
ECHO = {"name": "rec__echo", "arguments": {"text": "hi"}}


@pytest.fixture(scope="module")
def table_name() -> str:
    return "tollway-admin-sessions"


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(SigningKey("RS256")).running(lifetime=600) as issuer:
        yield issuer


@pytest.fixture(scope="module")
def lam(start_gateway: Callable[..., LambdaGateway], recorder: RecordingUpstream, issuer: LocalIssuer) -> LambdaGateway:
    config = parse_config(
        {
            "resource": RESOURCE,
            "auth": {"issuer": issuer.issuer, "jwks_url": issuer.jwks_url},
            "upstreams": [{"name": "rec", "url": recorder.url, "protocol": "legacy"}],
            "masking": {"enabled": False},
        }
    )
    return start_gateway(config)


def token(issuer: LocalIssuer, subject: str, tenant: str, scope: str = "") -> dict[str, str]:
    signed = issuer.keys[0].sign(issuer.claims(audience=RESOURCE, subject=subject, tenant=tenant, scope=scope))
    return {"authorization": f"Bearer {signed}"}


def admin(issuer: LocalIssuer) -> dict[str, str]:
    return token(issuer, "olivia", "ops", ADMIN_SCOPE)


def open_session(lam: LambdaGateway, headers: dict[str, str], client: str = "agent-under-test") -> str:
    body = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": client, "version": "2"}},
    }
    answer = lam.invoke(load_event("initialize", body=body, headers=headers))
    assert answer.status == 200, answer.body
    session = answer.headers[c.SESSION_ID_HEADER]
    notified = load_event("initialized_notification", headers={**headers, c.SESSION_ID_HEADER: session})
    assert lam.invoke(notified).status == 202
    return session


def admin_call(lam: LambdaGateway, method: str, path: str, headers: dict[str, str], **query: Any) -> Answer:
    """An admin API request as API Gateway delivers it (any route: `$default`)."""
    event = load_event("healthz", headers=headers)
    event["routeKey"] = event["requestContext"]["routeKey"] = "$default"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = method
    event["rawQueryString"] = urlencode(query)
    if query:
        event["queryStringParameters"] = {k: str(v) for k, v in query.items()}
    return lam.invoke(event)


def list_sessions(lam: LambdaGateway, headers: dict[str, str], **query: Any) -> Answer:
    return admin_call(lam, "GET", "/admin/sessions", headers, **query)


# --- listing ---------------------------------------------------------------------------------------
def test_an_admin_lists_only_the_named_tenants_sessions_with_who_which_client_when_and_upstreams(
    lam: LambdaGateway, issuer: LocalIssuer, recorder: RecordingUpstream
) -> None:
    alice = token(issuer, "alice", "acme")
    session = open_session(lam, alice, client="support-bot")
    assert lam.legacy("tools/call", ECHO, session=session, headers=alice).status == 200
    other = open_session(lam, token(issuer, "bob", "globex"), client="globex-agent")
    upstream_sid = recorder.calls("tools/call")[-1].headers[c.SESSION_ID_HEADER]

    lam.dynamodb_calls.clear()
    acme = list_sessions(lam, admin(issuer), tenant="acme")
    globex = list_sessions(lam, admin(issuer), tenant="globex")

    assert acme.status == 200, acme.body
    assert lam.dynamodb_calls == ["Query", "Query"], "one Query per page, never a Scan"
    assert acme.headers["cache-control"] == "no-store"
    rows = {row["id"]: row for row in acme.json()["sessions"]}
    assert other not in rows and session in rows
    row = rows[session]
    assert (row["tenant"], row["subject"], row["client"]) == ("acme", "alice", {"name": "support-bot", "version": "2"})
    assert row["protocolVersion"] == "2025-11-25"
    assert row["createdAt"] <= row["lastUsed"] < row["expiresAt"]
    assert row["createdAt"].endswith("Z") and len(row["createdAt"]) == len("2026-12-04T20:00:00Z")
    assert row["upstreamSessions"] == [{"upstream": "rec", "protocolVersion": "2025-11-25"}]
    assert upstream_sid not in acme.body, "an upstream session id is the gateway's credential there"
    assert {r["subject"] for r in acme.json()["sessions"]} == {"alice"}
    assert [(r["id"], r["subject"]) for r in globex.json()["sessions"]] == [(other, "bob")]
    assert globex.json()["sessions"][0]["upstreamSessions"] == []


def test_the_listing_pages_through_a_tenants_sessions_with_a_cursor(lam: LambdaGateway, issuer: LocalIssuer) -> None:
    carol = token(issuer, "carol", "paged")
    opened = {open_session(lam, carol) for _ in range(3)}

    first = list_sessions(lam, admin(issuer), tenant="paged", limit=2)
    second = list_sessions(lam, admin(issuer), tenant="paged", limit=2, cursor=first.json()["nextCursor"])

    assert len(first.json()["sessions"]) == 2
    assert "nextCursor" not in second.json()
    listed = [r["id"] for r in first.json()["sessions"] + second.json()["sessions"]]
    assert sorted(listed) == sorted(opened)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "Bad Request: tenant is required"),
        ({"tenant": ""}, "Bad Request: tenant must be given once, not empty"),
        ({"tenant": "acme", "limit": "0"}, "Bad Request: limit must be a number from 1 to 100"),
        ({"tenant": "acme", "limit": "many"}, "Bad Request: limit must be a number from 1 to 100"),
        ({"tenant": "acme", "cursor": "not-a-cursor"}, "Bad Request: cursor is not one this endpoint gave"),
    ],
)
def test_a_bad_listing_query_answers_400(
    lam: LambdaGateway, issuer: LocalIssuer, query: dict[str, str], message: str
) -> None:
    answer = list_sessions(lam, admin(issuer), **query)

    assert_lambda_error(answer, 400, c.INVALID_REQUEST, message=message)


# --- ending ----------------------------------------------------------------------------------------
def test_an_ended_session_answers_404_and_its_upstream_session_got_a_delete(
    lam: LambdaGateway, issuer: LocalIssuer, recorder: RecordingUpstream
) -> None:
    dave = token(issuer, "dave", "acme")
    session = open_session(lam, dave)
    assert lam.legacy("tools/call", ECHO, session=session, headers=dave).status == 200
    upstream_sid = recorder.calls("tools/call")[-1].headers[c.SESSION_ID_HEADER]

    seen = len(recorder.requests)
    ended = admin_call(lam, "DELETE", f"/admin/sessions/{quote(session)}", admin(issuer))
    next_use = lam.legacy("tools/list", session=session, headers=dave)
    again = admin_call(lam, "DELETE", f"/admin/sessions/{quote(session)}", admin(issuer))

    assert ended.status == 200, ended.body
    assert ended.json() == {"id": session, "tenant": "acme", "subject": "dave", "upstreamSessionsEnded": ["rec"]}
    assert [(r.method, r.headers[c.SESSION_ID_HEADER]) for r in recorder.requests[seen:]] == [("DELETE", upstream_sid)]
    assert_lambda_error(next_use, 404, c.INVALID_REQUEST, message="Session not found", request_id=1)
    assert session not in list_sessions(lam, admin(issuer), tenant="acme").body
    assert_lambda_error(again, 404, c.INVALID_REQUEST, message="Session not found")


def test_each_admin_request_leaves_one_audit_record_naming_the_admin_and_what_was_done(
    lam: LambdaGateway, issuer: LocalIssuer, audit_trail: Any
) -> None:
    gina = token(issuer, "gina", "acme")
    session = open_session(lam, gina)
    audit_trail.mark()

    list_sessions(lam, admin(issuer), tenant="acme")
    admin_call(lam, "DELETE", f"/admin/sessions/{session}", admin(issuer))
    admin_call(lam, "DELETE", f"/admin/sessions/{session}", admin(issuer))
    admin_call(lam, "GET", "/admin/upstreams", admin(issuer))
    records = [r for r in audit_trail.since() if r.get("type") == "admin"]

    assert [(r["action"], r.get("target"), r["outcome"], r["subject"]) for r in records] == [
        ("sessions.list", "acme", "ok", "olivia"),
        ("sessions.end", "acme/gina", "ok", "olivia"),
        ("sessions.end", None, "not_found", "olivia"),
        ("upstreams.list", None, "ok", "olivia"),
    ]
    assert session not in audit_trail.text(), "a session id is the client's to present: not in the trail"


def test_ending_an_unknown_or_malformed_session_id_answers_404(lam: LambdaGateway, issuer: LocalIssuer) -> None:
    for session_id in ("no-such-session", "x" * 200, quote("späť")):
        answer = admin_call(lam, "DELETE", f"/admin/sessions/{session_id}", admin(issuer))
        assert_lambda_error(answer, 404, c.INVALID_REQUEST, message="Session not found")


def test_a_client_ending_its_own_session_still_ends_its_upstream_session(
    lam: LambdaGateway, issuer: LocalIssuer, recorder: RecordingUpstream
) -> None:
    erin = token(issuer, "erin", "acme")
    session = open_session(lam, erin)
    assert lam.legacy("tools/call", ECHO, session=session, headers=erin).status == 200
    upstream_sid = recorder.calls("tools/call")[-1].headers[c.SESSION_ID_HEADER]

    seen = len(recorder.requests)
    deleted = lam.invoke(load_event("delete_session", headers={**erin, c.SESSION_ID_HEADER: session}))

    assert deleted.status == 204
    assert [(r.method, r.headers[c.SESSION_ID_HEADER]) for r in recorder.requests[seen:]] == [("DELETE", upstream_sid)]
    assert session not in list_sessions(lam, admin(issuer), tenant="acme").body


# --- who may ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "query"),
    [
        ("GET", "/admin/sessions", {"tenant": "acme"}),
        ("DELETE", "/admin/sessions/x", {}),
        ("GET", "/admin/upstreams", {}),
    ],
)
def test_without_the_admin_scope_403_and_without_a_token_401(
    lam: LambdaGateway, issuer: LocalIssuer, method: str, path: str, query: dict[str, str]
) -> None:
    alice = token(issuer, "alice", "acme", "mcp:tools")

    refused = admin_call(lam, method, path, alice, **query)
    anonymous = admin_call(lam, method, path, {}, **query)

    error = assert_lambda_error(refused, 403, c.INVALID_REQUEST, message="Forbidden: insufficient scope")
    assert error["data"] == {"requiredScopes": [ADMIN_SCOPE]}
    assert "alice" not in refused.body
    assert_lambda_error(anonymous, 401, c.INVALID_REQUEST, message="Unauthorized")


def test_the_admin_scope_is_global_an_admin_of_one_tenant_ends_another_tenants_session(
    lam: LambdaGateway, issuer: LocalIssuer
) -> None:
    frank = token(issuer, "frank", "globex")
    session = open_session(lam, frank)
    acme_admin = token(issuer, "quinn", "acme", ADMIN_SCOPE)

    listed = list_sessions(lam, acme_admin, tenant="globex")
    ended = admin_call(lam, "DELETE", f"/admin/sessions/{session}", acme_admin)

    assert session in [r["id"] for r in listed.json()["sessions"]]
    assert ended.status == 200 and ended.json()["tenant"] == "globex"


# --- upstreams -------------------------------------------------------------------------------------
@pytest.fixture
def instance(recorder: RecordingUpstream, dead_url: str, dev_key: Any) -> Iterator[tuple[TestClient, MemoryPinStore]]:
    """One in-process gateway (memory stores) in front of the recorder and a dead upstream whose
    circuit opens after one failure and stays open for the test."""
    from tollway.auth.dev import DEV_ISSUER, jwk_set

    config = parse_config(
        {
            "resource": RESOURCE,
            "auth": {"issuer": DEV_ISSUER},
            "upstreams": [
                {"name": "rec", "url": recorder.url},
                {
                    "name": "dead",
                    "url": dead_url,
                    "retries": 0,
                    "circuit": {"failure_threshold": 1, "recovery_seconds": 600},
                },
            ],
            "masking": {"enabled": False},
        }
    )
    stores = Stores.memory()
    app = create_app(config, stores=stores, streaming=False, dev_keys=jwk_set(dev_key))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, stores.pins  # type: ignore[misc]


def test_the_upstreams_listing_shows_a_tripped_breaker_era_tools_and_pins_without_secrets(
    instance: tuple[TestClient, MemoryPinStore], dev_key: Any, recorder: RecordingUpstream, dead_url: str
) -> None:
    from tollway.auth.dev import mint

    client, pins = instance
    pins.propose("dead", "tool", "later", "a" * 64)
    pins.approve("dead", "tool", "changed", "b" * 64, "olivia")
    pins.mark_drift("dead", "tool", "changed", "c" * 64)

    def bearer(scope: str) -> dict[str, str]:
        return {"authorization": f"Bearer {mint(dev_key, subject='s', tenant='ops', audience=RESOURCE, scopes=scope)}"}

    before = client.get("/admin/upstreams", headers=bearer(ADMIN_SCOPE)).json()
    meta = {
        c.META_PROTOCOL_VERSION: MODERN,
        c.META_CLIENT_CAPABILITIES: {},
        c.META_CLIENT_INFO: {"name": "a", "version": "1"},
    }
    listed = client.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}},
        headers={
            **bearer("mcp"),
            "accept": "application/json, text/event-stream",
            c.PROTOCOL_VERSION_HEADER: MODERN,
            c.METHOD_HEADER: "tools/list",
        },
    )
    after = client.get("/admin/upstreams", headers=bearer(ADMIN_SCOPE))

    assert [u["era"] for u in before["upstreams"]] == [None, None]
    assert [u["health"]["circuit"] for u in before["upstreams"]] == ["closed", "closed"]
    assert listed.status_code == 200, listed.text
    assert after.status_code == 200, after.text
    body = after.json()
    rec, dead = body["upstreams"]
    dead_port = dead_url.split(":")[2].split("/")[0]
    assert body["observedBy"] == "this instance"
    assert rec == {
        "name": "rec",
        "host": recorder.url.split("/")[2],
        "prefix": "rec",
        "protocol": "auto",
        "era": {"2026-07-28": True, "2025": None},
        "health": {"circuit": "closed", "consecutiveFailures": 0, "probeFailed": False, "observedBy": "this instance"},
        "tools": 2,
        "pins": {"approved": 2, "pending": 0, "drifted": 0},
    }
    assert dead["host"] == f"127.0.0.1:{dead_port}"
    assert dead["era"] is None
    assert dead["health"]["circuit"] == "open"
    assert dead["health"]["probeFailed"] is True
    assert dead["health"]["consecutiveFailures"] >= 1
    assert dead["pins"] == {"approved": 0, "pending": 1, "drifted": 1}
    assert "/mcp" not in after.text, "a URL (with its path or query) may carry a key: only the host is shown"


def test_the_upstreams_listing_needs_the_admin_scope(instance: tuple[TestClient, MemoryPinStore], dev_key: Any) -> None:
    from tollway.auth.dev import mint

    client, _ = instance
    plain = mint(dev_key, subject="s", tenant="acme", audience=RESOURCE, scopes="mcp")

    refused = client.get("/admin/upstreams", headers={"authorization": f"Bearer {plain}"})
    anonymous = client.get("/admin/upstreams")

    assert_http_error(refused, 403, c.INVALID_REQUEST, message="Forbidden: insufficient scope")
    assert_http_error(anonymous, 401, c.INVALID_REQUEST, message="Unauthorized")
    assert "rec" not in refused.text and json.loads(refused.text)["error"]["data"] == {"requiredScopes": [ADMIN_SCOPE]}
