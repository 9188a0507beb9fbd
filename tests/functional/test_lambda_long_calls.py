"""A call longer than API Gateway's HTTP API allows (30 s) on the buffered deployment: the gateway
answers a JSON-RPC timeout error itself, at http.buffered_deadline_seconds, instead of leaving
the caller API Gateway's bare 503/504. The streaming deployment's long calls: tests/e2e/test_long_calls_e2e.py."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tollway import spec as c
from tollway.config import GatewayConfig, parse_config
from tollway.protocol import endpoint
from tollway.telemetry import logger

from examples.upstreams import _serve
from tests.conftest import config_data
from tests.functional.lambda_harness import REPO_ROOT, LambdaGateway, _environment

CAP = 1.5  # seconds: the cap under test, short so the test is
UPSTREAM_LIFETIME = 300.0


@pytest.fixture(scope="module")
def slow_url() -> Iterator[str]:
    with _serve.spawn("tests.fixtures.slow_upstream", lifetime=UPSTREAM_LIFETIME) as url:
        yield url


@pytest.fixture(scope="module")
def buffered(start_gateway: Callable[[GatewayConfig], LambdaGateway], slow_url: str) -> LambdaGateway:
    # The upstream's own timeout is longer: what ends the call is the buffered deployment's cap.
    data = config_data({"slow": slow_url}, http={"buffered_deadline_seconds": CAP})
    data["upstreams"][0]["timeout_seconds"] = 60
    return start_gateway(parse_config(data))


@pytest.mark.parametrize("era", ["modern", "session"])
def test_a_call_past_the_buffered_cap_is_answered_with_a_json_rpc_timeout_error(
    buffered: LambdaGateway, era: str
) -> None:
    params = {"name": "slow__long_task", "arguments": {"seconds": 10, "every": 1}}
    started = time.monotonic()
    if era == "modern":
        answer = buffered.modern("tools/call", params, request_id=7)
    else:
        answer = buffered.legacy("tools/call", params, session=buffered.initialize(), request_id=7)
    elapsed = time.monotonic() - started

    # The answer's last message (a 2025 client accepting SSE gets the progress sent so far first).
    final = answer.final()
    assert final["id"] == 7
    assert (final["error"]["code"], final["error"]["message"]) == (c.REQUEST_TIMEOUT, "Upstream 'slow' timed out")
    assert answer.status == (504 if era == "modern" else 200)
    # Answered at the cap, long before the 10 s call (or API Gateway's 30 s) would have ended.
    assert elapsed < 8


def test_a_call_within_the_cap_is_answered_whole(buffered: LambdaGateway) -> None:
    answer = buffered.modern("tools/call", {"name": "slow__long_task", "arguments": {"seconds": 0.3, "every": 0.1}})

    assert answer.status == 200 and answer.content_type == c.CONTENT_TYPE_JSON
    assert answer.result()["content"][0]["text"] == "done after 0.3 s"


# --- the streaming deployment's entry point (functions/gateway/streaming.py) --------------------------
STREAMING_PATH = REPO_ROOT / "functions" / "gateway" / "streaming.py"


def test_the_streaming_entry_point_writes_the_audit_record_before_the_answer_ends(
    moto_dynamodb: Any, table_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lambda may freeze the instance once the streamed answer is complete: the invocation's audit
    records must be written (one flush) before its last byte is sent, not after. Its log lines
    carry the invocation's request id, from the Lambda Web Adapter's header."""
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(config_data({"slow": "http://127.0.0.1:9/mcp"})))  # never reached
    env = {"TOLLWAY_CONFIG": str(config), "TOLLWAY_TABLE": table_name, "AWS_LAMBDA_FUNCTION_NAME": "streaming"}
    spec = importlib.util.spec_from_file_location("tollway_streaming_entry_point", STREAMING_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with _environment({**env, "TOLLWAY_RESPONSE_MODE": "stream"}):
        spec.loader.exec_module(module)
    events: list[str] = []

    class Sink:
        def write(self, line: str, at_ms: int) -> None:
            events.append(f"record {json.loads(line)['status']}")

        def flush(self) -> None:
            events.append("flush")

    module.gateway.state.audit.sink = Sink()
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {'  # cut short: a 400
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/mcp",
        "raw_path": b"/mcp",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"accept", b"application/json"),
            (b"x-amzn-lambda-context", json.dumps({"request_id": "invocation-1", "deadline": 0}).encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
        "scheme": "http",
        "http_version": "1.1",
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            events.append("end of answer")

    monkeypatch.setattr(endpoint, "_BEHIND_ADAPTER", True)  # as under the adapter (AWS_LWA_INVOKE_MODE)
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(logger.registered_formatter)  # the function log's JSON lines
    logger.addHandler(handler)
    try:
        asyncio.run(module.app(scope, receive, send))
    finally:
        logger.handlers.remove(handler)

    assert events.index("record 400") < events.index("flush") < events.index("end of answer")
    logged = [json.loads(line) for line in lines.getvalue().splitlines()]
    [access] = [line for line in logged if line.get("message") == "request"]
    assert (access["status"], access["function_request_id"]) == (400, "invocation-1")
