"""Audit sinks without AWS: PutLogEvents batches stay within the API's limits, and a record a sink
cannot take reaches stdout instead of being lost."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tollway.context import AuditFacts
from tollway.telemetry import audit
from tollway.telemetry.audit import AuditLog, CloudWatchSink, FileSink


class RecordingLogs:
    """Stands in for a boto3 logs client: keeps each put's events (or refuses every put)."""

    class exceptions:
        class ResourceAlreadyExistsException(Exception):
            pass

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.puts: list[list[dict[str, Any]]] = []

    def create_log_stream(self, **_: Any) -> None:
        raise self.exceptions.ResourceAlreadyExistsException()

    def put_log_events(self, *, logEvents: list[dict[str, Any]], **_: Any) -> None:
        if self.refuse:
            raise ConnectionError("endpoint unreachable")
        self.puts.append(logEvents)


def test_records_held_for_an_invocation_are_put_in_order_in_batches_within_the_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(audit, "_PUT_MAX_EVENTS", 3)
    logs = RecordingLogs()
    log = AuditLog(CloudWatchSink("/g", client=logs))

    with log.batch():
        for n in range(7):
            log.write({"audit": 1, "n": n})
        assert logs.puts == []  # nothing leaves before the invocation ends

    assert [len(batch) for batch in logs.puts] == [3, 3, 1]
    assert [json.loads(e["message"])["n"] for batch in logs.puts for e in batch] == list(range(7))


def test_a_batch_is_cut_before_it_passes_the_byte_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "_PUT_MAX_BYTES", 1000)
    events = [{"timestamp": 1, "message": "x" * 400} for _ in range(5)]

    batches = list(audit._batches(events))

    assert [len(batch) for batch in batches] == [2, 2, 1]  # 2 x (400 + 26) <= 1000 < 3 x 426


def test_records_the_log_group_refuses_are_printed_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    log = AuditLog(CloudWatchSink("/g", client=RecordingLogs(refuse=True)))

    with log.batch():
        log.write({"audit": 1, "n": 1})
        log.write({"audit": 1, "n": 2})

    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"audit"')]
    assert printed == [{"audit": 1, "n": 1}, {"audit": 1, "n": 2}]


def test_a_record_the_file_cannot_take_is_printed_to_stdout(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    class Broken(FileSink):
        def write(self, line: str, at_ms: int) -> None:  # as a full or vanished disk does
            raise OSError(28, "No space left on device")

    log = AuditLog(Broken(str(tmp_path / "audit" / "audit.jsonl")))
    log.write({"audit": 1, "n": 3})

    assert '{"audit":1,"n":3}' in capsys.readouterr().out


def test_the_file_sink_appends_one_json_line_per_record(tmp_path: Any) -> None:
    path = tmp_path / "nested" / "audit.jsonl"
    log = AuditLog(FileSink(str(path)))

    log.write({"audit": 1, "n": 1})
    log.write({"audit": 1, "n": 2, "text": "é"})

    assert path.read_text(encoding="utf-8") == '{"audit":1,"n":1}\n{"audit":1,"n":2,"text":"é"}\n'
    assert log.where == str(path)


def test_a_misspelt_audit_fact_fails_instead_of_going_unrecorded() -> None:
    facts = AuditFacts()
    facts.outcome = "ok"

    with pytest.raises(AttributeError):
        facts.outcom = "ok"  # type: ignore[attr-defined]
    assert (facts.outcome, facts.decision, facts.units) == ("ok", "allowed", 0)
