"""`tollway sessions …`, `tollway upstreams list` and the other admin commands, in both modes:

- with `--url` and `--token` (or TOLLWAY_URL / TOLLWAY_TOKEN) they call the admin API of a
  gateway served by uvicorn on 127.0.0.1 (real HTTP);
- without, they read and write the DynamoDB table themselves (moto, the table from template.yaml).

Either way an operator sees the same lines; failures are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tollway import spec as c
from tollway.auth.dev import DEV_ISSUER, jwk_set, mint
from tollway.cli import main
from tollway.config import parse_config
from tollway.context import Session, UpstreamSession
from tollway.http import create_app
from tollway.store import Stores
from tollway.store.pins import DynamoPinStore
from tollway.store.sessions import DynamoSessionStore

from tests.fixtures.recording_upstream import RecordingUpstream, serve_in_thread

RESOURCE = "https://gateway.example.com/mcp"
HEADER = "ID\tSUBJECT\tCLIENT\tCREATED\tLAST USED\tUPSTREAM SESSIONS"

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """`tollway …` in-process: (exit status, stdout, stderr)."""
    for name in ("TOLLWAY_URL", "TOLLWAY_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main(list(argv))
        out, err = capsys.readouterr()
        # The gateway serving these tests runs in this process: its structured log lines are not the command's.
        err = "".join(line for line in err.splitlines(keepends=True) if not line.startswith('{"level"'))
        return status, out, err

    return run


def rows(out: str) -> list[list[str]]:
    lines = out.splitlines()
    assert lines[0] == HEADER
    return [line.split("\t") for line in lines[1:]]


# --- over HTTP ---------------------------------------------------------------------------------------
class Served:
    def __init__(self, base: str, key: ec.EllipticCurvePrivateKey) -> None:
        self.base = base
        self.key = key

    def token(self, subject: str, tenant: str, scope: str = "") -> str:
        return mint(self.key, subject=subject, tenant=tenant, audience=RESOURCE, scopes=scope)

    def admin(self) -> str:
        return self.token("olivia", "ops", "tollway:admin")

    def open_session(self, token: str, client: str) -> str:
        """A 2025-era client: initialize, then one tool call (which opens the upstream session)."""
        headers = {"authorization": f"Bearer {token}", "accept": "application/json, text/event-stream"}
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": client, "version": "3"},
            },
        }
        opened = httpx.post(f"{self.base}/mcp", json=init, headers=headers, timeout=10)
        assert opened.status_code == 200, opened.text
        headers |= {c.SESSION_ID_HEADER: opened.headers[c.SESSION_ID_HEADER], c.PROTOCOL_VERSION_HEADER: "2025-11-25"}
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "rec__echo", "arguments": {}}}
        assert httpx.post(f"{self.base}/mcp", json=call, headers=headers, timeout=10).status_code == 200
        return opened.headers[c.SESSION_ID_HEADER]


@pytest.fixture
def served(recorder: RecordingUpstream, dev_key: ec.EllipticCurvePrivateKey) -> Iterator[Served]:
    """A gateway (memory stores) on 127.0.0.1 in front of the recorder, spoken to as a 2025 server."""
    config = parse_config(
        {
            "resource": RESOURCE,
            "auth": {"issuer": DEV_ISSUER},
            "upstreams": [{"name": "rec", "url": recorder.url, "protocol": "legacy"}],
            "masking": {"enabled": False},
        }
    )
    app = create_app(config, stores=Stores.memory(), streaming=False, dev_keys=jwk_set(dev_key))
    with serve_in_thread(app, lifetime=120) as base:
        yield Served(base, dev_key)


def test_sessions_list_and_end_through_the_admin_api(cli: Run, served: Served, recorder: RecordingUpstream) -> None:
    session = served.open_session(served.token("alice", "acme"), "support-bot")
    served.open_session(served.token("bob", "globex"), "globex-agent")
    upstream_sid = recorder.calls("tools/call")[0].headers[c.SESSION_ID_HEADER]
    remote = ("--url", served.base + "/mcp", "--token", served.admin())

    status, out, err = cli("sessions", "list", "--tenant", "acme", *remote)

    assert (status, err) == (0, "")
    [row] = rows(out)
    assert row[:3] == [session, "alice", "support-bot 3"]
    assert row[3].endswith("Z") and row[3] <= row[4]
    assert row[5] == "rec"

    status, out, err = cli("sessions", "end", session, *remote)

    assert (status, err) == (0, "")
    assert out == f"ended session {session} of acme/alice (upstream sessions: rec)\n"
    assert [r.headers[c.SESSION_ID_HEADER] for r in recorder.requests if r.method == "DELETE"][-1] == upstream_sid
    assert rows(cli("sessions", "list", "--tenant", "acme", *remote)[1]) == []
    assert cli("sessions", "end", session, *remote) == (1, "", "tollway: no such session (404)\n")


def test_the_url_and_token_may_come_from_the_environment(
    cli: Run, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = served.open_session(served.token("carol", "initech"), "env-agent")
    monkeypatch.setenv("TOLLWAY_URL", served.base)
    monkeypatch.setenv("TOLLWAY_TOKEN", served.admin())

    status, out, _ = cli("sessions", "list", "--tenant", "initech", "--format", "json")

    assert status == 0
    assert '"id": "' + session + '"' in out and '"name": "env-agent"' in out


def test_upstreams_list_through_the_admin_api_shows_this_instances_view(
    cli: Run, served: Served, recorder: RecordingUpstream
) -> None:
    served.open_session(served.token("dave", "acme"), "probe-agent")

    status, out, err = cli("upstreams", "list", "--url", served.base, "--token", served.admin())

    assert status == 0
    assert err == "tollway: era, health and tools as observed by this instance of the gateway\n"
    lines = out.splitlines()
    assert lines[0] == "NAME\tHOST\tPROTOCOL\tERA\tCIRCUIT\tTOOLS\tAPPROVED\tPENDING\tDRIFTED"
    name, host, protocol, era, circuit, tools, approved, pending, drifted = lines[1].split("\t")
    assert (name, protocol, era, circuit) == ("rec", "legacy", "2025", "closed")
    assert host == recorder.url.removeprefix("http://").removesuffix("/mcp")
    # The catalog holds both tools; the one call pinned (trust on first use) only the tool it used.
    assert (tools, approved, pending, drifted) == ("2", "1", "0", "0")


def test_the_existing_admin_commands_use_the_same_switch(cli: Run, served: Served) -> None:
    served.open_session(served.token("erin", "acme"), "pending-agent")
    remote = ("--url", served.base, "--token", served.admin())

    assert cli("upstream", "pending", *remote) == (0, "nothing awaits approval\n", "")
    status, out, _ = cli(
        "usage", "report", "--month", time.strftime("%Y-%m", time.gmtime()), "--format", "csv", *remote
    )
    assert status == 0
    assert out.startswith("month,") and ",acme," in out


@pytest.mark.parametrize(
    ("token_of", "expected"),
    [
        (
            lambda s: "not-a-jwt",
            "tollway: the gateway refused the token (401 Unauthorized): expired, or not one it trusts\n",
        ),
        (lambda s: s.token("alice", "acme", "mcp:tools"), "tollway: the token lacks the admin scope (403 Forbidden)\n"),
    ],
)
def test_a_refused_token_is_one_line_and_exit_1(
    cli: Run, served: Served, token_of: Callable[[Served], str], expected: str
) -> None:
    assert cli("sessions", "list", "--tenant", "acme", "--url", served.base, "--token", token_of(served)) == (
        1,
        "",
        expected,
    )


def test_a_gateway_that_is_not_there_is_one_line_and_exit_1(cli: Run, dead_url: str) -> None:
    base = dead_url.removesuffix("/mcp")

    assert cli("upstreams", "list", "--url", base, "--token", "t") == (
        1,
        "",
        f"tollway: cannot connect to the gateway at {base}\n",
    )


def test_a_url_without_a_token_is_refused_with_exit_2(cli: Run) -> None:
    assert cli("sessions", "list", "--tenant", "acme", "--url", "http://127.0.0.1:9") == (
        2,
        "",
        "tollway: --url and --token go together (or TOLLWAY_URL and TOLLWAY_TOKEN)\n",
    )


# --- straight to DynamoDB ---------------------------------------------------------------------------------
@pytest.fixture
def gateway_yaml(tmp_path: Path, recorder: RecordingUpstream) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"resource: {RESOURCE}\nupstreams: [{{name: rec, url: '{recorder.url}', protocol: legacy}}]\n")
    return path


def store_session(client: Any, table: str, session_id: str, tenant: str, subject: str, **upstreams: str) -> None:
    """A session item as the gateway writes it."""
    now = int(time.time())
    DynamoSessionStore(table, client).create(
        Session(
            id=session_id,
            tenant=tenant,
            subject=subject,
            protocol_version="2025-11-25",
            client_info={"name": "direct-agent", "version": "9"},
            client_capabilities={},
            expires_at=now + 3600,
            upstreams={name: UpstreamSession(sid, "2025-11-25") for name, sid in upstreams.items()},
            created_at=now,
            used_at=now,
        )
    )


def test_sessions_list_and_end_straight_from_dynamodb(
    cli: Run, fresh_dynamodb: Any, table_name: str, gateway_yaml: Path, recorder: RecordingUpstream, audit_trail: Any
) -> None:
    store_session(fresh_dynamodb, table_name, "sess-a", "acme", "alice", rec="upstream-sid-a")
    store_session(fresh_dynamodb, table_name, "sess-b", "acme-labs", "bob")

    status, out, err = cli("sessions", "list", "--tenant", "acme")

    assert (status, err) == (0, "")
    [row] = rows(out)
    assert (row[0], row[1], row[2], row[5]) == ("sess-a", "alice", "direct-agent 9", "rec")

    status, out, err = cli("sessions", "end", "sess-a", "--by", "olivia", "--config", str(gateway_yaml))

    assert (status, err) == (0, "")
    assert out == "ended session sess-a of acme/alice (upstream sessions: rec)\n"
    [record] = audit_trail.since()
    assert (record["type"], record["action"], record["target"], record["subject"]) == (
        "admin",
        "sessions.end",
        "acme/alice",
        "cli/olivia",
    )
    assert [(r.method, r.headers[c.SESSION_ID_HEADER]) for r in recorder.requests] == [("DELETE", "upstream-sid-a")]
    assert rows(cli("sessions", "list", "--tenant", "acme")[1]) == []
    assert [r[0] for r in rows(cli("sessions", "list", "--tenant", "acme-labs")[1])] == ["sess-b"]
    assert cli("sessions", "end", "sess-a", "--config", str(gateway_yaml)) == (
        1,
        "",
        "tollway: no such session (it ended, expired, or never existed)\n",
    )


def test_a_direct_listing_follows_every_page(cli: Run, fresh_dynamodb: Any, table_name: str) -> None:
    for n in range(53):  # more than one page of 50
        store_session(fresh_dynamodb, table_name, f"sess-{n:02d}", "big", f"user-{n}")

    status, out, _ = cli("sessions", "list", "--tenant", "big", "--table", table_name)

    assert status == 0
    assert sorted(r[0] for r in rows(out)) == [f"sess-{n:02d}" for n in range(53)]


def test_upstreams_list_straight_from_dynamodb_has_pins_but_no_health(
    cli: Run, fresh_dynamodb: Any, table_name: str, gateway_yaml: Path
) -> None:
    pins = DynamoPinStore(table_name, fresh_dynamodb)
    pins.approve("rec", "tool", "echo", "a" * 64, "olivia")
    pins.propose("rec", "tool", "whoami", "b" * 64)

    status, out, err = cli("upstreams", "list", "--config", str(gateway_yaml))

    assert status == 0
    assert err == "tollway: era, health and tools are known only to a running gateway (use --url and --token)\n"
    assert out.splitlines()[1].split("\t")[2:] == ["legacy", "-", "-", "-", "1", "1", "0"]


def test_a_table_that_does_not_exist_is_one_line_and_exit_1(cli: Run, fresh_dynamodb: Any) -> None:
    status, out, err = cli("sessions", "list", "--tenant", "acme", "--table", "no-such-table")

    assert (status, out) == (1, "")
    assert err.startswith("tollway: cannot use DynamoDB table no-such-table: ")
    assert err.count("\n") == 1 and "Traceback" not in err
