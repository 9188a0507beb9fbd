"""What one audit record costs per call: its bytes (CloudWatch Logs ingests each event plus 26
bytes) and the CPU to digest the masked arguments and result, build the record and hand it to
the CloudWatch sink (kept in memory until the invocation's one PutLogEvents call, whose network
time is not measured here)."""

from __future__ import annotations

import json
import time
from typing import Any

from tollway.context import AuditFacts, Principal
from tollway.telemetry.audit import AuditLog, CloudWatchSink, digest, mcp_record

INGEST_DOLLARS_PER_GB = 0.50
"""CloudWatch Logs standard ingestion, us-east-1."""
EVENT_OVERHEAD_BYTES = 26
ARGUMENTS = {"card_number": "************4242", "amount": 129.5, "currency": "EUR"}
RESULT = {
    "content": [
        {
            "type": "text",
            "text": json.dumps({"region": "EMEA", "months": [{"m": i, "rev": 1e6 + i} for i in range(90)]}),
        }
    ],
    "isError": False,
}


def _record(facts: AuditFacts) -> dict[str, Any]:
    return mcp_record(
        facts,
        request_id="0f8fad5bd9cb469fa16570867728950e",
        principal=Principal(subject="agent-7f3a", tenant="acme"),
        client_info={"name": "claude-code", "version": "2.1.0"},
        era="2026-07-28",
        status=200,
        ms=41.3,
        request_bytes=412,
        response_bytes=len(json.dumps(RESULT)),
    )


def _facts(**values: Any) -> AuditFacts:
    facts = AuditFacts()
    for name, value in values.items():
        setattr(facts, name, value)
    return facts


def _allowed() -> AuditFacts:
    return _facts(
        method="tools/call",
        public_name="finance__validate_transaction",
        upstream="finance",
        upstream_name="validate_transaction",
        outcome="ok",
        units=1,
        upstream_ms=37.9,
        arguments_sha256=digest(ARGUMENTS),
        result_sha256=digest(RESULT),
    )


def bench_audit(runs: int = 20000) -> None:
    allowed = json.dumps(_record(_allowed()), separators=(",", ":"))
    denied_facts = _facts(
        method="tools/call",
        public_name="finance__download_statement",
        upstream="finance",
        upstream_name="download_statement",
        decision="denied",
        rule="not in the tenant's tools",
    )
    denied = json.dumps(_record(denied_facts), separators=(",", ":"))
    log = AuditLog(CloudWatchSink("/tollway/bench/audit", client=object()))

    started = time.process_time()
    with log.batch():
        for _ in range(runs):
            facts = _allowed()
            log.write(_record(facts))
        log.sink._events.clear()  # type: ignore[attr-defined]  # no network: the put is not measured
    per_record_us = (time.process_time() - started) / runs * 1e6

    started = time.process_time()
    for _ in range(runs):
        digest(ARGUMENTS)
        digest(RESULT)
    digests_us = (time.process_time() - started) / runs * 1e6

    ingested = len(allowed) + EVENT_OVERHEAD_BYTES
    dollars_per_million = ingested * 1e6 / 1e9 * INGEST_DOLLARS_PER_GB
    print("10. audit record per call (tollway.telemetry.audit; CPU time, this host)")
    print(f"   allowed tools/call record: {len(allowed)} bytes; denied: {len(denied)} bytes")
    print(
        f"   CloudWatch Logs ingestion: {ingested} bytes per call -> ${dollars_per_million:.3f} per million calls "
        f"at ${INGEST_DOLLARS_PER_GB}/GB"
    )
    print(f"   CPU per record, digests + build + JSON + hand to the sink: {per_record_us:.1f} us (mean of {runs})")
    print(f"   of which the two SHA-256 digests ({len(json.dumps(RESULT))}-byte result): {digests_us:.1f} us")
    print("   plus one PutLogEvents call per invocation (network; not measured here)\n")
