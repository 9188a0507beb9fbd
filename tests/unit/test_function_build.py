"""functions/gateway/Makefile, as `sam build` runs it for each gateway function: the files as they
are, each config as the JSON form the function reads without PyYAML; a config that is not YAML
fails the build."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tollway.cli import main
from tollway.config import json_config

SOURCE = Path(__file__).resolve().parents[2] / "functions" / "gateway"
FUNCTIONS = ("GatewayFunction", "StreamingGatewayFunction")


def _build(
    tmp_path: Path, function: str, python: str = sys.executable
) -> tuple[subprocess.CompletedProcess[str], Path]:
    scratch = tmp_path / "scratch"  # sam runs make in a copy of the CodeUri
    if not scratch.exists():
        shutil.copytree(SOURCE, scratch, ignore=shutil.ignore_patterns("__pycache__"))
    artifacts = tmp_path / function
    artifacts.mkdir()
    done = subprocess.run(
        ["make", "--no-print-directory", f"build-{function}", f"ARTIFACTS_DIR={artifacts}", f"PYTHON={python}"],
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done, artifacts


@pytest.mark.parametrize("function", FUNCTIONS)
def test_the_function_gets_its_files_and_its_config_as_json(tmp_path: Path, function: str) -> None:
    done, artifacts = _build(tmp_path, function)

    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in artifacts.iterdir()) == ["app.py", "gateway.yaml", "run.sh", "streaming.py"]
    assert (artifacts / "run.sh").stat().st_mode & 0o111
    source = (SOURCE / "gateway.yaml").read_text()
    bundled = (artifacts / "gateway.yaml").read_text()
    assert bundled == json_config(source, "gateway.yaml")
    assert yaml.safe_load(bundled) == yaml.safe_load(source)  # still the same YAML document


def test_without_tollway_the_config_is_bundled_as_written_with_a_warning(tmp_path: Path) -> None:
    bare = tmp_path / "python-without-site-packages"
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    bare.chmod(0o755)

    done, artifacts = _build(tmp_path, "GatewayFunction", python=str(bare))

    assert done.returncode == 0, done.stderr
    assert "cannot import tollway" in done.stderr
    assert (artifacts / "gateway.yaml").read_text() == (SOURCE / "gateway.yaml").read_text()


def test_a_config_that_is_not_yaml_fails_the_build(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    shutil.copytree(SOURCE, scratch, ignore=shutil.ignore_patterns("__pycache__"))
    (scratch / "gateway.yaml").write_text("resource: https://gateway.example.com/mcp\nupstreams: [\n")

    done, _ = _build(tmp_path, "GatewayFunction")

    assert done.returncode != 0
    assert "gateway.yaml is not valid YAML at line 3" in done.stderr


def test_compile_config_prints_the_json_for_a_parameter_store_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile-config", str(SOURCE / "gateway.yaml"), "-"]) == 0

    printed = capsys.readouterr().out
    assert printed == json_config((SOURCE / "gateway.yaml").read_text(), "gateway.yaml")


def test_compile_config_names_a_file_it_cannot_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile-config", str(tmp_path / "nope.yaml"), "-"]) == 2

    assert capsys.readouterr().err.strip() == f"tollway: config file {tmp_path / 'nope.yaml'} cannot be read"
