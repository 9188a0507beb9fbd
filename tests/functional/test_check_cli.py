"""`tollway check [--config F] [--probe]`: what an operator reads, and its exit status.

Offline: a valid config prints one `ok:` line; an invalid one prints one line per problem and
exits 1, including what only building the gateway finds (an invalid JMESPath projection). With
`--probe`, each upstream is reached with the gateway's own client: the recording upstream
(2026-07-28, two tools), the poisoned demo upstream (a real process: its poisoned tools are
reported as withheld), a drifted pin in (moto) DynamoDB, and a URL nobody listens on.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tollway.cli import main
from tollway.store.pins import DynamoPinStore

from examples.upstreams import _serve
from tests.conftest import config_data
from tests.fixtures.recording_upstream import RecordingUpstream

REPO_ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ["add_numbers", "lookup_word", "summarize_notes"]
"""The poisoned upstream's tools with high-severity findings (blocked by the default policy)."""


@pytest.fixture(autouse=True)
def _no_dynamodb_unless_asked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unless a test asks for moto, the pin store's DynamoDB is a closed port on 127.0.0.1."""
    if "fresh_dynamodb" in request.fixturenames:
        return
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")


def write(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = main(["check", *argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


@pytest.fixture(scope="module")
def poisoned_url() -> Iterator[str]:
    with _serve.spawn("examples.upstreams.poisoned", cwd=REPO_ROOT, lifetime=300, stderr=subprocess.DEVNULL) as url:
        yield url


# --- offline ---------------------------------------------------------------------------------------
def test_a_valid_config_is_ok_with_its_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = config_data({"a": "http://a.example/mcp", "b": "http://b.example/mcp"}, tenants={"acme": {}, "*": {}})
    path = write(tmp_path, data)

    code, out, err = run(capsys, "--config", path)

    assert code == 0, err
    assert out == [f"ok: {path}: 2 upstreams, 2 tenants, 0 virtual servers, 0 quota plans"]


def test_an_invalid_config_prints_one_line_per_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = config_data({"a": "ftp://a.example/mcp"})
    data["auth"]["bogus"] = True
    data["upstreams"][0]["timeout_seconds"] = 0
    path = write(tmp_path, data)

    code, out, err = run(capsys, "--config", path)

    assert code == 1
    assert out == []
    assert err.splitlines() == [
        f"tollway: {path} is invalid:",
        "  auth.bogus: unknown key",
        "  upstreams.0.url: Value error, must be an http:// or https:// URL",
        "  upstreams.0.timeout_seconds: Input should be greater than 0",
    ]


def test_what_only_building_the_gateway_finds_is_refused_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path, config_data({"a": "http://a.example/mcp"}, masking={"tools": {"a__x": {"projection": "[[["}}})
    )

    code, _, err = run(capsys, "--config", path)

    assert code == 1
    assert err == "tollway: masking.tools.a__x.projection: not a valid JMESPath expression\n"


def test_a_config_without_an_issuer_is_refused_as_the_deployed_gateway_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = config_data({"a": "http://a.example/mcp"})
    data["auth"] = {}
    code, _, err = run(capsys, "--config", write(tmp_path, data))

    assert code == 1
    assert err.startswith("tollway: auth.issuer and auth.jwks_url are required")


def test_a_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--config", str(tmp_path / "absent.yaml"))

    assert (code, out) == (1, [])
    assert err == f"tollway: config file {tmp_path / 'absent.yaml'} cannot be read\n"


# --- --probe --------------------------------------------------------------------------------------
def test_probe_prints_each_upstreams_era_and_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], recorder: RecordingUpstream
) -> None:
    path = write(tmp_path, config_data({"rec": recorder.url}))

    code, out, err = run(capsys, "--config", path, "--probe")

    assert code == 0, err
    assert out[1:] == ["rec: 2026-07-28, 2 tools", "pins: not checked (DynamoDB table TollwayTable unreachable)"]
    assert recorder.calls() == []  # a probe lists; it calls no tool


def test_probe_reports_the_poisoned_tools_the_gate_would_withhold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], poisoned_url: str
) -> None:
    path = write(tmp_path, config_data({"poisoned": poisoned_url}))

    code, out, _ = run(capsys, "--config", path, "--probe")

    assert code == 1
    assert out[1].startswith("poisoned: 2026-07-28, 7 tools")
    withheld = [line.split(":")[0].split()[-1] for line in out if line.startswith("  withheld tool ")]
    assert sorted(withheld) == BLOCKED
    assert all(": poisoned: " in line for line in out if line.startswith("  withheld tool "))
    assert "  sanitized tool search_docs: oversized_description (medium)" in out  # published, cleaned


def test_probe_reports_a_definition_that_drifted_from_its_pin(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    recorder: RecordingUpstream,
    fresh_dynamodb: Any,
) -> None:
    pins = DynamoPinStore()
    pins.pin("rec", "tool", "echo", "0" * 64, "fiona")
    path = write(tmp_path, config_data({"rec": recorder.url}))

    code, out, _ = run(capsys, "--config", path, "--probe")

    assert code == 1
    assert out[1:] == [
        "rec: 2026-07-28, 2 tools",
        "  withheld tool echo: changed since it was approved (drift)",
        "pins: checked",
    ]
    assert pins.get_all("rec")[("tool", "echo")].seen_hash is None  # a check writes nothing
    assert ("tool", "whoami") not in pins.get_all("rec")


def test_an_unreachable_upstream_is_one_line_with_its_reason_and_no_traceback(
    tmp_path: Path, dead_url: str, recorder: RecordingUpstream
) -> None:
    path = write(tmp_path, config_data({"gone": dead_url, "rec": recorder.url}))

    done = subprocess.run(
        [sys.executable, "-m", "tollway.cli", "check", "--config", path, "--probe"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert done.stdout.splitlines()[1:3] == [
        "gone: unreachable (UpstreamUnavailable: Upstream 'gone' is unavailable)",
        "rec: 2026-07-28, 2 tools",
    ]
    assert "Traceback" not in done.stdout + done.stderr
