"""Finance reads a month's usage from the gateway's own table: `tollway usage report` and
GET /admin/usage, over a DynamoDB table built from template.yaml (moto) and filled by
the ledger's writes exactly as the quota policy makes them (a charge per admitted call, its
outcome added after; a refusal's count added).

Two tenants whose names share a prefix (acme, acme-labs) call two tools over several days,
with errors and refused calls, plus calls on the last day before and the first day after the
month. Every figure finance sees must add up to these calls, to the unit.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient
from tollway import spec as c
from tollway.auth.dev import DEV_ISSUER, jwk_set, mint
from tollway.cli import main
from tollway.config import GatewayConfig, parse_config
from tollway.finance.report import CSV_COLUMNS
from tollway.http import create_app
from tollway.store import Stores
from tollway.store.ledger import Charge, DynamoLedger, Ledger, Scope
from tollway.store.sessions import MemorySessionStore
from tollway.store.table import key
from tollway.store.usage import UsageReader

from tests.unit.wire import assert_http_error

TABLE = "tollway-usage-report"
MONTH = "2026-11"
RESOURCE = "https://gateway.example.com/mcp"
CHALLENGE = 'Bearer resource_metadata="https://gateway.example.com/.well-known/oauth-protected-resource/mcp"'
FORECAST, LOOKUP = "finance__run_forecast", "support__lookup_customer"
PER_CALL = 2.463995487307739e-06
"""Estimated cost of one request with the default cost model (USD)."""

# tenant, tool, day, units, error, rejected, latency_ms
CALLS: list[tuple[str, str, str, int, bool, bool, float]] = [
    ("acme", FORECAST, "2026-10-31", 10, False, False, 70),  # the month before: not in the report
    ("acme", FORECAST, "2026-11-02", 10, False, False, 120),
    ("acme", FORECAST, "2026-11-02", 10, True, False, 80),
    ("acme", FORECAST, "2026-11-02", 10, False, False, 100),
    ("acme", LOOKUP, "2026-11-02", 1, False, False, 20),
    ("acme", LOOKUP, "2026-11-02", 1, False, False, 30),
    ("acme", FORECAST, "2026-11-03", 0, False, True, 0),
    ("acme", FORECAST, "2026-11-03", 0, False, True, 0),
    ("acme", LOOKUP, "2026-11-03", 1, True, False, 15),
    ("acme", LOOKUP, "2026-11-30", 1, False, False, 25),
    ("acme", LOOKUP, "2026-12-01", 1, False, False, 30),  # the month after: not in the report
    ("acme-labs", FORECAST, "2026-11-01", 10, False, False, 90),
    ("acme-labs", LOOKUP, "2026-11-02", 1, False, False, 10),
    ("acme-labs", LOOKUP, "2026-11-02", 1, True, False, 10),
    ("acme-labs", LOOKUP, "2026-11-02", 1, False, False, 10),
    ("acme-labs", LOOKUP, "2026-11-02", 1, False, False, 10),
    ("acme-labs", LOOKUP, "2026-11-02", 0, False, True, 0),
]


def expected(tenant: str | None = None) -> dict[str, dict[str, int]]:
    """Per tenant: what the recorded calls of MONTH add up to, counted here, not by the report."""
    sums: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(("calls", "units", "errors", "rejected"), 0))
    for who, _tool, day, units, error, rejected, _latency in CALLS:
        if not day.startswith(MONTH) or tenant not in (None, who):
            continue
        if rejected:
            sums[who]["rejected"] += 1
        else:
            sums[who]["calls"] += 1
            sums[who]["units"] += units
            sums[who]["errors"] += int(error)
    return dict(sums)


def test_the_expected_figures_are_what_the_calls_above_say() -> None:
    assert expected() == {
        "acme": {"calls": 7, "units": 34, "errors": 2, "rejected": 2},
        "acme-labs": {"calls": 5, "units": 14, "errors": 1, "rejected": 1},
    }


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def table_name() -> str:
    return TABLE


@pytest.fixture(scope="module")
def dynamodb(moto_dynamodb: Any) -> Any:
    """The module's moto DynamoDB, its table holding CALLS (read-only below)."""
    record_calls(DynamoLedger(TABLE, moto_dynamodb))
    return moto_dynamodb


def record_calls(ledger: Ledger) -> None:
    for tenant, tool, day, units, error, rejected, latency in CALLS:
        scope = Scope(key("USAGE", tenant), tenant=tenant)
        if rejected:
            ledger.add(scope, day, {f"r:{tool}": 1})
            continue
        when = datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC).timestamp()
        ledger.charge(Charge(scope, 1, units, {f"c:{tool}": 1, f"u:{tool}": units}), when)
        ledger.add(scope, day, {f"l:{tool}": round(latency), **({f"e:{tool}": 1} if error else {})})


@pytest.fixture
def operations(dynamodb: Any) -> Iterator[list[tuple[str, str | None]]]:
    """Every DynamoDB operation the table's client sends from now on: (name, IndexName)."""
    seen: list[tuple[str, str | None]] = []

    def before_call(model: Any, params: dict[str, Any], **_: Any) -> None:
        body = json.loads(params.get("body") or b"{}")
        seen.append((model.name, body.get("IndexName")))

    dynamodb.meta.events.register("before-call.dynamodb.*", before_call)
    yield seen
    dynamodb.meta.events.unregister("before-call.dynamodb.*", before_call)


@pytest.fixture
def gateway_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "resource: https://gateway.example.com/mcp\n"
        "upstreams: [{name: support, url: 'http://127.0.0.1:9/mcp'}]\n"
        "finance:\n"
        "  cost_model: {api_gateway_per_million_requests: 3.5, log_bytes_per_call: 0}\n"
    )
    return path


@pytest.fixture
def cli(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """`tollway …` in-process against the moto table: (exit status, stdout, stderr)."""
    monkeypatch.setenv("TOLLWAY_TABLE", TABLE)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main(list(argv))
        out, err = capsys.readouterr()
        return status, out, err

    return run


def csv_sums(text: str) -> dict[str, dict[str, int]]:
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    sums: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(("calls", "units", "errors", "rejected"), 0))
    for line in reader:
        assert line["month"] == MONTH and line["day"].startswith(MONTH), line
        for column in sums[line["tenant"]]:
            sums[line["tenant"]][column] += int(line[column])
    return dict(sums)


def json_sums(data: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {t["tenant"]: {k: t[k] for k in ("calls", "units", "errors", "rejected")} for t in data["tenants"]}


# --- the CLI ---------------------------------------------------------------------------------------
def test_the_csv_report_adds_up_to_the_recorded_calls_per_tenant(
    cli: Callable[..., tuple[int, str, str]], gateway_yaml: Path
) -> None:
    status, out, err = cli("usage", "report", "--month", MONTH, "--format", "csv", "--config", str(gateway_yaml))

    assert (status, err) == (0, "")
    assert csv_sums(out) == expected()
    assert out.count("\n") == 1 + 7  # header + one line per tenant, day and tool with usage


def test_the_json_report_adds_up_to_the_recorded_calls_per_tenant_and_in_total(
    cli: Callable[..., tuple[int, str, str]], gateway_yaml: Path
) -> None:
    status, out, _ = cli("usage", "report", "--month", MONTH, "--format", "json", "--config", str(gateway_yaml))
    data = json.loads(out)

    assert status == 0
    assert (data["month"], data["tenant"]) == (MONTH, None)
    assert json_sums(data) == expected()
    assert {k: data["totals"][k] for k in ("calls", "units", "errors", "rejected")} == {
        "calls": 12,
        "units": 48,
        "errors": 3,
        "rejected": 3,
    }
    acme = data["tenants"][0]
    assert [(t["tool"], t["units"]) for t in acme["tools"]] == [(FORECAST, 30), (LOOKUP, 4)]
    assert [(d["day"], d["calls"], d["rejected"]) for d in acme["days"]] == [
        ("2026-11-02", 5, 0),
        ("2026-11-03", 1, 2),
        ("2026-11-30", 1, 0),
    ]
    assert acme["avg_latency_ms"] == 55.7  # 390 ms over 7 calls


def test_the_table_report_shows_each_tenants_totals_and_estimated_cost(
    cli: Callable[..., tuple[int, str, str]], gateway_yaml: Path
) -> None:
    status, out, _ = cli("usage", "report", "--month", MONTH, "--config", str(gateway_yaml))
    lines = out.splitlines()
    summary = lines[lines.index("All tenants") + 1 : lines.index("All tenants") + 5]

    assert status == 0
    assert lines[0] == "Tollway usage 2026-11 (all tenants, UTC days)"
    # The config's prices: API Gateway $3.50 per million, no log bytes.
    per_million = 3.5 + 0.2 + 0.013 * 13.3334 + 0.625  # API, Lambda requests, 13 ms at 1 GB, one write
    assert f"Estimated AWS cost: ${per_million:.6f} per million calls" in out
    assert [line.split() for line in summary] == [
        ["Tenant", "Calls", "Units", "Errors", "Cancelled", "Rejected", "Avg", "ms", "Est.", "USD"],
        ["acme", "7", "34", "2", "0", "2", "55.7", f"{9 * per_million / 1e6:.6f}"],
        ["acme-labs", "5", "14", "1", "0", "1", "26.0", f"{6 * per_million / 1e6:.6f}"],
        ["Total", "12", "48", "3", "0", "3", "43.3", f"{15 * per_million / 1e6:.6f}"],
    ]


def test_a_report_for_one_tenant_never_shows_another_tenants_usage(
    cli: Callable[..., tuple[int, str, str]], gateway_yaml: Path
) -> None:
    for tenant in ("acme", "acme-labs"):
        status, out, _ = cli("usage", "report", "--month", MONTH, "--tenant", tenant, "--format", "csv")
        assert status == 0
        assert csv_sums(out) == expected(tenant)

    status, out, _ = cli("usage", "report", "--month", MONTH, "--tenant", "acme", "--format", "json")
    assert json.loads(out)["tenant"] == "acme"
    assert json_sums(json.loads(out)) == {"acme": expected()["acme"]}
    status, out, _ = cli("usage", "report", "--month", MONTH, "--tenant", "acme", "--config", str(gateway_yaml))
    assert "acme-labs" not in out
    assert out.splitlines()[0] == "Tollway usage 2026-11 (tenant acme, UTC days)"


def test_a_month_without_usage_is_an_empty_report_not_an_error(cli: Callable[..., tuple[int, str, str]]) -> None:
    status, out, _ = cli("usage", "report", "--month", "2026-09", "--format", "csv")

    assert (status, out) == (0, ",".join(CSV_COLUMNS) + "\n")


@pytest.mark.parametrize("month", ["2026-13", "11-2026", "2026-11-01", "nov"])
def test_a_month_that_is_not_yyyy_mm_is_refused_with_exit_status_2(
    cli: Callable[..., tuple[int, str, str]], month: str
) -> None:
    status, out, err = cli("usage", "report", "--month", month)

    assert (status, out) == (2, "")
    assert err == f"tollway: --month must be YYYY-MM, e.g. 2026-11 (got {month!r})\n"


def test_without_a_readable_config_the_default_prices_are_used_and_said_on_stderr(
    cli: Callable[..., tuple[int, str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no gateway.yaml here
    status, out, err = cli("usage", "report", "--month", MONTH, "--format", "json")

    assert status == 0
    assert "default cost model" in err
    assert json.loads(out)["cost_per_million_calls"] == round(PER_CALL * 1e6, 8)
    assert json.loads(out)["totals"]["estimated_cost_usd"] == round(15 * PER_CALL, 8)


def test_a_config_named_with_config_must_be_readable(cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    status, out, err = cli("usage", "report", "--month", MONTH, "--config", str(tmp_path / "missing.yaml"))

    assert (status, out) == (2, "")
    assert err == f"tollway: config file {tmp_path / 'missing.yaml'} cannot be read\n"


def test_the_command_reads_a_local_dynamodb_named_by_aws_endpoint_url_dynamodb(
    dynamodb_server: tuple[str, Any], tollway_in_a_fresh_shell: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """As beside `tollway dev`: its embedded DynamoDB is a moto server on 127.0.0.1, and the
    command runs from a fresh shell, with no AWS credentials or region of its own."""
    _, client = dynamodb_server
    record_calls(DynamoLedger("TollwayTable", client))

    done = tollway_in_a_fresh_shell("usage", "report", "--month", MONTH, "--format", "csv")

    assert done.returncode == 0, done.stderr
    assert csv_sums(done.stdout) == expected()
    assert "default cost model" in done.stderr  # no gateway.yaml in tmp_path


# --- the admin endpoint ----------------------------------------------------------------------------
def admin_config(**finance: Any) -> GatewayConfig:
    return parse_config(
        {
            "resource": RESOURCE,
            "auth": {"issuer": DEV_ISSUER},
            "upstreams": [{"name": "support", "url": "http://127.0.0.1:9/mcp"}],
            **({"finance": finance} if finance else {}),
        }
    )


@pytest.fixture
def admin(dynamodb: Any, dev_key: ec.EllipticCurvePrivateKey) -> Iterator[TestClient]:
    stores = Stores(MemorySessionStore(), DynamoLedger(TABLE, dynamodb))
    app = create_app(admin_config(), stores=stores, streaming=False, dev_keys=jwk_set(dev_key))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def bearer(key: ec.EllipticCurvePrivateKey, scopes: str = "tollway:admin", tenant: str = "ops") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(key, subject='fiona', tenant=tenant, audience=RESOURCE, scopes=scopes)}"}


def test_an_admin_gets_the_months_json_report_for_every_tenant(
    admin: TestClient, dev_key: ec.EllipticCurvePrivateKey
) -> None:
    response = admin.get("/admin/usage", params={"month": MONTH}, headers=bearer(dev_key))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert json_sums(response.json()) == expected()
    assert response.json()["totals"]["units"] == 48


def test_an_admin_gets_the_csv_report_as_a_download(admin: TestClient, dev_key: ec.EllipticCurvePrivateKey) -> None:
    response = admin.get("/admin/usage", params={"month": MONTH, "format": "csv"}, headers=bearer(dev_key))

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="tollway-usage-2026-11.csv"'
    assert csv_sums(response.text) == expected()


def test_an_admin_report_for_one_tenant_holds_only_that_tenants_rows(
    admin: TestClient, dev_key: ec.EllipticCurvePrivateKey
) -> None:
    response = admin.get(
        "/admin/usage", params={"month": MONTH, "tenant": "acme", "format": "csv"}, headers=bearer(dev_key)
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == 'attachment; filename="tollway-usage-2026-11-acme.csv"'
    assert csv_sums(response.text) == expected("acme")
    data = admin.get("/admin/usage", params={"month": MONTH, "tenant": "acme-labs"}, headers=bearer(dev_key)).json()
    assert (data["tenant"], json_sums(data)) == ("acme-labs", expected("acme-labs"))


def test_without_a_token_the_admin_endpoint_answers_401_with_the_mcp_challenge(admin: TestClient) -> None:
    response = admin.get("/admin/usage", params={"month": MONTH})
    mcp = admin.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})

    assert_http_error(response, 401, c.INVALID_REQUEST, message="Unauthorized")
    assert response.headers["www-authenticate"] == CHALLENGE == mcp.headers["www-authenticate"]


@pytest.mark.parametrize(
    "authorization",
    ["Bearer not-a-jwt", "Basic ZmlvbmE6c2VjcmV0", "Bearer "],
)
def test_a_token_that_fails_verification_answers_401_invalid_token(admin: TestClient, authorization: str) -> None:
    response = admin.get("/admin/usage", params={"month": MONTH}, headers={"Authorization": authorization})

    assert_http_error(response, 401, c.INVALID_REQUEST, message="Unauthorized")
    assert response.headers["www-authenticate"] in (CHALLENGE, f'{CHALLENGE}, error="invalid_token"')
    assert "acme" not in response.text


def test_a_token_from_another_key_answers_401_invalid_token(admin: TestClient) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    response = admin.get("/admin/usage", params={"month": MONTH}, headers=bearer(stranger))

    assert_http_error(response, 401, c.INVALID_REQUEST, message="Unauthorized")
    assert response.headers["www-authenticate"] == f'{CHALLENGE}, error="invalid_token"'


def test_a_token_without_the_admin_scope_answers_403_insufficient_scope(
    admin: TestClient, dev_key: ec.EllipticCurvePrivateKey
) -> None:
    response = admin.get("/admin/usage", params={"month": MONTH}, headers=bearer(dev_key, "mcp:tools", tenant="acme"))

    error = assert_http_error(response, 403, c.INVALID_REQUEST, message="Forbidden: insufficient scope")
    assert error["data"] == {"requiredScopes": ["tollway:admin"]}
    assert response.headers["www-authenticate"] == f'{CHALLENGE}, error="insufficient_scope", scope="tollway:admin"'


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"month": "2026-13"}, "Bad Request: month must be YYYY-MM"),
        ({"month": "2026-1"}, "Bad Request: month must be YYYY-MM"),
        ({}, "Bad Request: month is required (YYYY-MM)"),
        ({"month": MONTH, "format": "xlsx"}, "Bad Request: format must be json, csv or table"),
        ({"month": MONTH, "tenant": ""}, "Bad Request: tenant must be given once, not empty"),
    ],
)
def test_a_bad_query_answers_400_with_a_stable_message(
    admin: TestClient, dev_key: ec.EllipticCurvePrivateKey, params: dict[str, str], message: str
) -> None:
    response = admin.get("/admin/usage", params=params, headers=bearer(dev_key))

    assert_http_error(response, 400, c.INVALID_REQUEST, message=message)


def test_a_month_given_twice_answers_400(admin: TestClient, dev_key: ec.EllipticCurvePrivateKey) -> None:
    response = admin.get("/admin/usage?month=2026-11&month=2026-10", headers=bearer(dev_key))

    assert_http_error(response, 400, c.INVALID_REQUEST, message="Bad Request: month must be given once, not empty")


def test_the_admin_scope_is_the_one_the_config_names(dynamodb: Any, dev_key: ec.EllipticCurvePrivateKey) -> None:
    stores = Stores(MemorySessionStore(), DynamoLedger(TABLE, dynamodb))
    app = create_app(admin_config(admin_scope="billing:read"), stores=stores, dev_keys=jwk_set(dev_key))
    with TestClient(app, raise_server_exceptions=False) as client:
        refused = client.get("/admin/usage", params={"month": MONTH}, headers=bearer(dev_key, "tollway:admin"))
        allowed = client.get("/admin/usage", params={"month": MONTH}, headers=bearer(dev_key, "billing:read"))

    assert refused.status_code == 403
    assert refused.headers["www-authenticate"].endswith('scope="billing:read"')
    assert allowed.status_code == 200 and json_sums(allowed.json()) == expected()


def test_an_unauthenticated_gateway_never_serves_usage(dynamodb: Any) -> None:
    config = parse_config(
        {"resource": RESOURCE, "auth": {"allow_anonymous": True}, "upstreams": [{"name": "s", "url": "http://x/mcp"}]}
    )
    stores = Stores(MemorySessionStore(), DynamoLedger(TABLE, dynamodb))
    with TestClient(create_app(config, stores=stores), raise_server_exceptions=False) as client:
        response = client.get("/admin/usage", params={"month": MONTH})

    assert_http_error(response, 403, c.INVALID_REQUEST, message="Forbidden: the admin API requires authentication")


def test_a_gateway_with_in_memory_usage_reports_what_it_recorded(dev_key: ec.EllipticCurvePrivateKey) -> None:
    stores = Stores.memory()
    record_calls(stores.ledger)
    app = create_app(admin_config(), stores=stores, dev_keys=jwk_set(dev_key))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/admin/usage", params={"month": MONTH, "format": "json"}, headers=bearer(dev_key))

    assert response.status_code == 200
    assert "finance__run_forecast" in response.text


def test_a_usage_store_failure_answers_503_without_detail(dynamodb: Any, dev_key: ec.EllipticCurvePrivateKey) -> None:
    # No such table: DynamoDB answers ResourceNotFoundException.
    stores = Stores(MemorySessionStore(), DynamoLedger("missing", dynamodb))
    app = create_app(admin_config(), stores=stores, dev_keys=jwk_set(dev_key))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/admin/usage", params={"month": MONTH}, headers=bearer(dev_key))

    error = assert_http_error(response, 503, c.INTERNAL_ERROR, message="Usage store unavailable")
    assert error["data"] == {"retryable": True}
    assert "missing" not in response.text and "ResourceNotFound" not in response.text


# --- how the table is read -------------------------------------------------------------------------
def test_an_every_tenant_report_queries_the_by_month_index_and_never_scans(
    admin: TestClient, dev_key: ec.EllipticCurvePrivateKey, operations: list[tuple[str, str | None]]
) -> None:
    response = admin.get("/admin/usage", params={"month": MONTH}, headers=bearer(dev_key))

    assert response.status_code == 200
    assert operations == [("Query", "ByMonth"), ("BatchGetItem", None)]  # the month's entries, then its items


def test_a_one_tenant_report_queries_the_by_month_index_whatever_its_shards(
    admin: TestClient, dev_key: ec.EllipticCurvePrivateKey, operations: list[tuple[str, str | None]]
) -> None:
    response = admin.get("/admin/usage", params={"month": MONTH, "tenant": "acme"}, headers=bearer(dev_key))

    assert response.status_code == 200
    assert operations == [("Query", "ByMonth"), ("BatchGetItem", None)]


def test_a_tenant_whose_name_prefixes_another_never_receives_its_rows(dynamodb: Any) -> None:
    store = UsageReader(DynamoLedger(TABLE, dynamodb))

    assert {row.tenant for row in store.month(MONTH, "acme")} == {"acme"}
    assert {row.tenant for row in store.month(MONTH, "acme-labs")} == {"acme-labs"}
    assert store.month(MONTH, "acm") == []
    assert store.month(MONTH, "globex") == []
