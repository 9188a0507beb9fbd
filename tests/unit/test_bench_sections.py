"""`make bench` is not run by the suite (it takes minutes and prints figures, not verdicts), so
its in-process sections run here with a few iterations: a change to the code they drive breaks
this test, not the next person's bench run."""

from __future__ import annotations

import pytest

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
