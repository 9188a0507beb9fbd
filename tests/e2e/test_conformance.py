"""The official MCP conformance suite, run against the fixture upstream directly and through
the gateway: the gateway must pass every scored scenario the upstream passes by itself, and every
check must end the same way both ways (scored or not), apart from the gaps `KNOWN_GAPS` explains.

The gateway runs as `tollway dev` with authentication on (the dev issuer). The conformance CLI
cannot send headers, so scripts/conformance.py's `--token-cmd` runs it through a proxy that adds
a dev token from `tollway token`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from examples.upstreams._serve import spawn

pytestmark = [pytest.mark.e2e, pytest.mark.conformance]

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / ".tools" / "conformance" / "node_modules" / "@modelcontextprotocol" / "conformance"
REVISIONS = ("2025-11-25", "2026-07-28")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_suite(url: str, out: Path, env: dict[str, str] | None = None, *options: str) -> dict:
    subprocess.run(
        [sys.executable, "scripts/conformance.py", "--url", url, "--json", str(out), *options],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return json.loads(out.read_text())


KNOWN_GAPS: dict[tuple[str, str], str] = {}
"""(revision, scenario) -> why a check of it differs direct vs through the gateway. Remove an entry
once its checks are equal: the comparison below prints the ones that are."""


def _checks(report: dict, revision: str) -> dict[tuple[str, str], str]:
    """(scenario, check id) -> status, every scenario of the set, scored or not."""
    return {
        (s["name"], check): status
        for s in report["sets"][revision]["scenarios"]
        for check, status in s.get("check_results", {}).items()
    }


def _counts(checks: dict[tuple[str, str], str]) -> str:
    return " ".join(f"{status.lower()}={n}" for status, n in sorted(Counter(checks.values()).items()))


def _scored(report: dict, revision: str) -> dict[str, str]:
    return {s["name"]: s["status"] for s in report["sets"][revision]["scenarios"] if s["scored"]}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    if not (SUITE / "package.json").exists():
        pytest.fail("conformance suite not installed: run scripts/install_conformance.sh (make test does)")
    tmp = tmp_path_factory.mktemp("conformance")
    with spawn("tests.fixtures.conformance_upstream") as upstream_url:
        direct = _run_suite(upstream_url, tmp / "direct.json")
        port = _free_port()
        config = tmp / "gateway.yaml"
        config.write_text(
            f"resource: http://127.0.0.1:{port}/mcp\n"
            f"upstreams:\n  - name: fixture\n    url: {upstream_url}\n    prefix: ''\n"
        )
        env = {**os.environ, "POWERTOOLS_LOG_LEVEL": "WARNING", "TOLLWAY_HOME": str(tmp / "home")}
        env.pop("AWS_ENDPOINT_URL_DYNAMODB", None)
        gateway = subprocess.Popen(
            [sys.executable, "-m", "tollway.cli", "dev", "--config", str(config), "--port", str(port)],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_healthy(f"http://127.0.0.1:{port}/healthz", gateway)
            unauthenticated = httpx.post(f"http://127.0.0.1:{port}/mcp", json={}, timeout=5)
            assert unauthenticated.status_code == 401, "the gateway under test must enforce authentication"
            # The script sends the token itself (through its proxy): the suite's CLI cannot.
            token_cmd = f"{sys.executable} -m tollway.cli token --sub conformance --tenant qa"
            through = _run_suite(f"http://127.0.0.1:{port}/mcp", tmp / "gateway.json", env, "--token-cmd", token_cmd)
        finally:
            gateway.terminate()
            gateway.wait(timeout=15)
    return direct, through


def _wait_healthy(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"gateway exited with {proc.returncode} before it was healthy")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail("gateway did not become healthy within 60 s")


@pytest.mark.parametrize("revision", REVISIONS)
def test_gateway_passes_every_scored_scenario_its_upstream_passes(
    reports: tuple[dict, dict], revision: str, run_summary: list[str]
) -> None:
    direct, through = reports
    direct_scored, gateway_scored = _scored(direct, revision), _scored(through, revision)
    passed_directly = {name for name, status in direct_scored.items() if status == "passed"}
    lost = sorted(name for name in passed_directly if gateway_scored.get(name) != "passed")
    run_summary.append(
        f"conformance {revision}: direct {len(passed_directly)}/{len(direct_scored)} passed, "
        f"through gateway {sum(s == 'passed' for s in gateway_scored.values())}/{len(gateway_scored)} passed"
    )
    assert passed_directly, "the fixture upstream passed nothing: the suite did not run"
    assert lost == [], f"scenarios that pass directly but fail through the gateway: {lost}"


@pytest.mark.parametrize("revision", REVISIONS)
def test_every_check_runs_through_the_gateway_as_it_runs_directly(
    reports: tuple[dict, dict], revision: str, run_summary: list[str]
) -> None:
    """Check by check, every status equal, apart from the gaps `KNOWN_GAPS` names and explains."""
    direct, through = (_checks(report, revision) for report in reports)
    differing = sorted(k for k in direct.keys() | through.keys() if direct.get(k) != through.get(k))
    unexplained = [k for k in differing if (revision, k[0]) not in KNOWN_GAPS]
    closed = sorted(k for k in KNOWN_GAPS if k[0] == revision and not any(d[0] == k[1] for d in differing))
    run_summary.append(
        f"conformance {revision} checks: direct {_counts(direct)}; through gateway {_counts(through)}; "
        f"{len(differing)} differ ({len(differing) - len(unexplained)} known gaps)"
    )
    run_summary.extend(
        f"  {revision} {scenario} / {check}: direct {direct.get((scenario, check), 'not run')}, "
        f"gateway {through.get((scenario, check), 'not run')}"
        for scenario, check in differing
    )
    run_summary.extend(f"  {revision} {scenario}: now equal, remove it from KNOWN_GAPS" for _, scenario in closed)
    assert direct, "the suite reported no checks: it did not run"
    assert unexplained == [], f"checks that differ through the gateway: {unexplained}"
