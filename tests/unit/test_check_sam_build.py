"""scripts/check_sam_build.py: what `make build` refuses to call deployable.

The layer's bytecode matters for cold start (Lambda's /opt is read-only, so modules without .pyc
are compiled at every cold start): it must be CPython 3.13's, unchecked-hash, and complete.
"""

from __future__ import annotations

import importlib.util
import py_compile
import sys
from pathlib import Path

import pytest
from tollway.config import json_config

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("check_sam_build", ROOT / "scripts" / "check_sam_build.py")
check_sam_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_sam_build)

MODULES = ("tollway/__init__.py", "tollway/http.py", "yaml/__init__.py", "uvicorn/__init__.py")
AARCH64_ELF = b"\x7fELF\x02\x01" + bytes(12) + (183).to_bytes(2, "little")


@pytest.fixture
def build(tmp_path: Path) -> Path:
    site = tmp_path / "TollwayLayer" / "python"
    for module in MODULES:
        (site / module).parent.mkdir(parents=True, exist_ok=True)
        (site / module).write_text("VALUE = 1\n")
    core = site / "pydantic_core" / "_pydantic_core.cpython-313-aarch64-linux-gnu.so"
    core.parent.mkdir()
    core.write_bytes(AARCH64_ELF)
    (tmp_path / "GatewayFunction").mkdir()
    (tmp_path / "GatewayFunction" / "app.py").write_text("")
    streaming = tmp_path / "StreamingGatewayFunction"
    streaming.mkdir()
    (streaming / "streaming.py").write_text("")
    (streaming / "run.sh").write_text("#!/bin/bash\n")
    (streaming / "run.sh").chmod(0o755)
    bundled = json_config((ROOT / "functions" / "gateway" / "gateway.yaml").read_text(), "gateway.yaml")
    for function in ("GatewayFunction", "StreamingGatewayFunction"):
        (tmp_path / function / "gateway.yaml").write_text(bundled)  # as functions/gateway/Makefile writes it
    return tmp_path


def _write_313_pyc(site: Path, module: str, flags: int = 1) -> None:
    source = site / module
    pyc = source.parent / "__pycache__" / f"{source.stem}.cpython-313.pyc"
    pyc.parent.mkdir(exist_ok=True)
    pyc.write_bytes(check_sam_build.PY313_MAGIC + flags.to_bytes(4, "little") + bytes(8) + b"code")


def _run(build: Path, *flags: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = check_sam_build.main([*flags, str(build)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_layer_without_bytecode_passes_with_a_note_unless_bytecode_is_expected(build, capsys) -> None:
    code, out, _ = _run(build, capsys=capsys)
    assert code == 0
    assert "ships no bytecode: Lambda compiles every module at each cold start" in out

    code, _, err = _run(build, "--expect-bytecode", capsys=capsys)
    assert code == 1
    assert "no .pyc files although a CPython 3.13 was found to compile them" in err


def test_complete_unchecked_hash_313_bytecode_passes(build, capsys) -> None:
    site = build / "TollwayLayer" / "python"
    for module in MODULES:
        _write_313_pyc(site, module)
    code, out, err = _run(build, "--expect-bytecode", capsys=capsys)
    assert (code, err) == (0, "")
    assert "4 modules compiled for CPython 3.13" in out
    assert "OK" in out


def test_host_bytecode_is_refused(build, capsys) -> None:
    site = build / "TollwayLayer" / "python"
    py_compile.compile(str(site / "tollway" / "http.py"), doraise=True)  # the test runner's Python
    host_tag = sys.implementation.cache_tag
    code, _, err = _run(build, capsys=capsys)
    assert code == 1
    if host_tag != check_sam_build.PY313_TAG:
        assert f"tollway/__pycache__/http.{host_tag}.pyc (bytecode of the build host's Python)" in err


def test_timestamp_bytecode_is_refused(build, capsys) -> None:
    # Timestamp .pyc make the loader stat every source; a zip's rounded mtimes can also void them.
    site = build / "TollwayLayer" / "python"
    for module in MODULES:
        _write_313_pyc(site, module, flags=0)
    code, _, err = _run(build, "--expect-bytecode", capsys=capsys)
    assert code == 1
    assert "is not unchecked-hash CPython 3.13 bytecode" in err


def test_partial_bytecode_is_refused(build, capsys) -> None:
    site = build / "TollwayLayer" / "python"
    _write_313_pyc(site, "tollway/__init__.py")
    code, _, err = _run(build, capsys=capsys)
    assert code == 1
    assert "3 modules without bytecode" in err


def test_the_streaming_function_needs_an_executable_run_sh_and_uvicorn_in_the_layer(build, capsys) -> None:
    (build / "StreamingGatewayFunction" / "run.sh").chmod(0o644)
    (build / "TollwayLayer" / "python" / "uvicorn" / "__init__.py").unlink()
    code, _, err = _run(build, capsys=capsys)
    assert code == 1
    assert "StreamingGatewayFunction: run.sh is not executable" in err
    assert "python/uvicorn is missing" in err


def test_a_config_bundled_as_yaml_or_missing_is_refused(build, capsys) -> None:
    source = ROOT / "functions" / "gateway" / "gateway.yaml"
    (build / "GatewayFunction" / "gateway.yaml").write_text(source.read_text())  # a plain copy
    (build / "StreamingGatewayFunction" / "gateway.yaml").unlink()

    code, _, err = _run(build, capsys=capsys)

    assert code == 1
    assert "GatewayFunction: gateway.yaml is not bundled as the JSON of functions/gateway/gateway.yaml" in err
    assert "StreamingGatewayFunction: gateway.yaml is missing" in err


def test_the_entry_points_in_the_repository_are_what_the_build_check_expects() -> None:
    gateway = ROOT / "functions" / "gateway"
    for files in check_sam_build.FUNCTIONS.values():
        for name in files:
            assert (gateway / name).is_file(), name
    assert (gateway / check_sam_build.EXECUTABLE).stat().st_mode & 0o111
