"""`make bench` is not run by the suite (it takes minutes and prints figures, not verdicts), so
its in-process sections run here with a few iterations: a change to the code they drive breaks
this test, not the next person's bench run. So does taking the cold import's baseline from
history."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import bench.__main__ as bench_main
from bench.arguments import bench_arguments
from bench.audit import bench_audit
from bench.masking import bench_masking


def test_the_audit_section_builds_both_records(capsys: pytest.CaptureFixture[str]) -> None:
    bench_audit(runs=5)

    out = capsys.readouterr().out
    assert "allowed tools/call record: " in out and "denied: " in out
    assert "CPU per record" in out


def test_the_masking_section_masks_its_result(capsys: pytest.CaptureFixture[str]) -> None:
    bench_masking(runs=5)

    assert "masking a typical" in capsys.readouterr().out


def test_the_arguments_section_validates_and_refuses(capsys: pytest.CaptureFixture[str]) -> None:
    bench_arguments(runs=5)

    out = capsys.readouterr().out
    assert "valid arguments" in out and "refused arguments" in out


def test_the_goals_baseline_is_taken_from_history_as_it_shipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _repository_with_one_commit(tmp_path)
    monkeypatch.setattr(bench_main, "ROOT", tmp_path)
    monkeypatch.setattr(bench_main, "GOAL_BASELINE", old)
    (tmp_path / "layers" / "tollway" / "tollway" / "config.py").write_text("AS_TODAY = True\n")

    baseline = bench_main._goal_baseline(Path(sys.executable))

    assert baseline is not None
    assert (baseline / "functions" / "gateway" / "app.py").read_text() == "import tollway.config\n"
    # The commit's own code, not the work tree's.
    assert (baseline / "layer" / "tollway" / "config.py").read_text() == "AS_SHIPPED = True\n"
    # Compiled as the layer ships it, so its import is timed with bytecode like today's.
    assert list((baseline / "layer" / "tollway" / "__pycache__").glob("config.*.pyc"))


def test_a_clone_without_the_goals_baseline_is_told_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _repository_with_one_commit(tmp_path)
    monkeypatch.setattr(bench_main, "ROOT", tmp_path)
    monkeypatch.setattr(bench_main, "GOAL_BASELINE", "0" * 40)

    assert bench_main._goal_baseline(Path(sys.executable)) is None


def _repository_with_one_commit(root: Path) -> str:
    """A repository whose one commit holds a layer and an entry module; its hash."""
    (root / "layers" / "tollway" / "tollway").mkdir(parents=True)
    (root / "layers" / "tollway" / "tollway" / "__init__.py").write_text("")
    (root / "layers" / "tollway" / "tollway" / "config.py").write_text("AS_SHIPPED = True\n")
    (root / "functions" / "gateway").mkdir(parents=True)
    (root / "functions" / "gateway" / "app.py").write_text("import tollway.config\n")
    git = ["git", "-C", str(root), "-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    for step in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "baseline"]):
        subprocess.run([*git, *step], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
