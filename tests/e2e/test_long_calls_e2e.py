"""Long calls as they happen: a 60-second tool whose progress and log messages reach the client while
it runs, through `tollway dev` and through the streaming deployment's Lambda entry point run the
way Lambda runs it (functions/gateway/run.sh, with the function's environment from template.yaml:
uvicorn serving streaming.py, as the Lambda Web Adapter would reach it), with the official SDK
client in both eras; and the entry point's answers to an SSE-accepting client, a JSON-only one,
and a call that outlives its invocation; and a tool that asks the user mid-call, through both.

The upstreams are tests/fixtures/slow_upstream.py (`slow`; `long_task`: progress and a log message
every few seconds) and the conformance fixture (`ask`: tools that elicit). The four 60-second calls
run side by side: the module takes about a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import boto3
import httpx
import pytest
import yaml
from mcp.client import Client
from mcp_types import ElicitRequestParams, ElicitResult, LoggingMessageNotificationParams, TextContent
from moto.server import ThreadedMotoServer
from tollway import spec as c
from tollway.store.tables import ensure_tables, find_template

from tests.e2e.conftest import (
    HOST,
    REPO_ROOT,
    START_TIMEOUT,
    STOP_TIMEOUT,
    GatewayProcess,
    UpstreamProcess,
    _gateway_env,
    _tail,
    free_port,
    gateway_config,
    running,
)
from tests.unit.cfn import Deploy, template

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

MODES = ("legacy", "2026-07-28")
CALL_SECONDS = 60.0
EVERY = 5.0
STEPS = round(CALL_SECONDS / EVERY)
UPSTREAM_TIMEOUT = 120  # the mounts' timeout_seconds: longer than the call
TABLE = "tollway-streaming-e2e"
RUN_SH = REPO_ROOT / "functions" / "gateway" / "run.sh"


# --- the streaming entry point, run as Lambda runs it ------------------------------------------------
def function_environment() -> dict[str, str]:
    """StreamingGatewayFunction's environment as template.yaml deploys it (Globals and its own),
    less what names AWS resources or an issuer: this gateway is anonymous and local."""
    issuer = "https://issuer.example.com"
    deploy = Deploy(
        template(), ApiMode="streaming", TokenIssuer=issuer, JwksUrl=f"{issuer}/jwks", TokenAudience="api://x"
    )
    env = deploy.environment("StreamingGatewayFunction")
    return {k: v for k, v in env.items() if not k.startswith("TOLLWAY_AUTH_") and k != "TOLLWAY_RESOURCE"}


@dataclass
class StreamingEntryPoint:
    """functions/gateway/run.sh as the Lambda Web Adapter starts it, on AWS_LWA_PORT."""

    config: dict[str, Any]
    workdir: Path
    port: int
    dynamodb: str
    proc: subprocess.Popen[str] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/mcp"

    @property
    def log(self) -> Path:
        return self.workdir / "entry-point.log"

    @property
    def audit_file(self) -> Path:
        return self.workdir / "audit.jsonl"

    def audit_record(self, request_id: str) -> dict[str, Any]:
        """The audit record of one request, as it stands now."""
        lines = self.audit_file.read_text().splitlines() if self.audit_file.exists() else []
        records = [json.loads(line) for line in lines]
        [record] = [r for r in records if r.get("request_id") == request_id]
        return record

    def start(self) -> None:
        config_path = self.workdir / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        self.env = {
            **_gateway_env(self.workdir / "home"),
            **function_environment(),
            # What Lambda and the deploy would supply: the function's name, the table, the config.
            "AWS_LAMBDA_FUNCTION_NAME": "tollway-StreamingGatewayFunction",
            "AWS_LWA_PORT": str(self.port),
            "TOLLWAY_CONFIG": str(config_path),
            "TOLLWAY_TABLE": TABLE,
            "TOLLWAY_AUDIT_FILE": str(self.audit_file),
            "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            # The runtime's `python` is this environment's.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [str(RUN_SH)], env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, text=True
            )

    def wait_ready(self) -> None:
        """The adapter's readiness check: GET AWS_LWA_READINESS_CHECK_PATH until it answers."""
        assert self.proc is not None
        path = self.env["AWS_LWA_READINESS_CHECK_PATH"]
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"run.sh exited with {self.proc.returncode}:\n{_tail(self.log)}")
            try:
                if httpx.get(f"http://{HOST}:{self.port}{path}", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(f"run.sh did not answer {path} within {START_TIMEOUT:.0f} s:\n{_tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        self.proc = None


@dataclass
class Targets:
    local: GatewayProcess
    lambda_entry: StreamingEntryPoint

    def url(self, target: str) -> str:
        return self.local.url if target == "local" else self.lambda_entry.url


def _mount(upstream: UpstreamProcess, asking: UpstreamProcess) -> list[dict[str, Any]]:
    return [
        {"name": "slow", "url": upstream.url, "prefix": "slow", "timeout_seconds": UPSTREAM_TIMEOUT},
        {"name": "ask", "url": asking.url, "prefix": "ask"},
    ]


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Targets]:
    workdir = tmp_path_factory.mktemp("long-calls")
    upstream = UpstreamProcess("tests.fixtures.slow_upstream", workdir / "upstream.log")
    asking = UpstreamProcess("tests.fixtures.conformance_upstream", workdir / "asking.log")  # tools that ask
    local_port, lambda_port = free_port(), free_port()
    local = GatewayProcess(
        gateway_config(local_port, auth={"allow_anonymous": True}, upstreams=_mount(upstream, asking)),
        workdir / "local",
        local_port,
    )
    local.workdir.mkdir()
    moto = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        dynamodb = f"http://{host}:{port}"
        client = boto3.client(
            "dynamodb",
            endpoint_url=dynamodb,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        ensure_tables(client, find_template(REPO_ROOT), {"TollwayTable": TABLE})
        entry = StreamingEntryPoint(
            gateway_config(lambda_port, auth={"allow_anonymous": True}, upstreams=_mount(upstream, asking)),
            workdir / "lambda",
            lambda_port,
            dynamodb,
        )
        entry.workdir.mkdir()
        with running(local, [upstream, asking]):
            try:
                entry.start()
                entry.wait_ready()
                yield Targets(local, entry)
            finally:
                entry.stop()
    finally:
        moto.stop()


# --- a 60-second call, four times at once ------------------------------------------------------------
@dataclass
class Observed:
    target: str
    mode: str
    progress: list[tuple[float, float]] = field(default_factory=list)
    """(seconds since the call started, progress value) as each notification arrived."""
    logs: list[tuple[float, str]] = field(default_factory=list)
    ended: float = 0.0
    text: str = ""


async def _long_call(targets: Targets, target: str, mode: str) -> Observed:
    seen = Observed(target, mode)
    started = time.monotonic()

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        seen.progress.append((time.monotonic() - started, value))

    async def on_log(params: LoggingMessageNotificationParams) -> None:
        seen.logs.append((time.monotonic() - started, str(params.data)))

    # At 2026-07-28 log messages are sent only to requests that opt in with a log level.
    opt_in = {"log_level": "info"} if mode != "legacy" else {}
    async with Client(targets.url(target), mode=mode, logging_callback=on_log, **opt_in) as session:
        started = time.monotonic()
        result = await session.call_tool(
            "slow__long_task",
            {"seconds": CALL_SECONDS, "every": EVERY},
            read_timeout_seconds=CALL_SECONDS * 2,
            progress_callback=on_progress,
        )
    seen.ended = time.monotonic() - started
    block = result.content[0]
    assert isinstance(block, TextContent)
    seen.text = block.text
    return seen


async def test_progress_and_logs_of_a_60_second_call_arrive_while_it_runs(
    targets: Targets, run_summary: list[str]
) -> None:
    observed: list[Observed] = []

    async def one(target: str, mode: str) -> None:
        observed.append(await _long_call(targets, target, mode))

    with anyio.fail_after(CALL_SECONDS * 3):
        async with anyio.create_task_group() as group:
            for target in ("local", "lambda"):
                for mode in MODES:
                    group.start_soon(one, target, mode)

    assert len(observed) == 4
    for seen in observed:
        where = f"{seen.target}/{seen.mode}"
        assert seen.text == f"done after {CALL_SECONDS:g} s", where
        assert [value for _, value in seen.progress] == [float(step) for step in range(1, STEPS + 1)], where
        assert [text for _, text in seen.logs] == [f"step {k} of {STEPS} done" for k in range(1, STEPS + 1)], where
        arrivals = [at for at, _ in seen.progress]
        # As they happen: the first long before the call ends, the rest spread over the call (the
        # upstream sends one every EVERY seconds), each before the result.
        assert arrivals[0] < CALL_SECONDS / 3, (where, arrivals)
        assert arrivals[-1] - arrivals[0] > CALL_SECONDS / 2, (where, arrivals)
        assert seen.logs[0][0] < CALL_SECONDS / 3, (where, seen.logs)
        assert max(arrivals) <= seen.ended, where
        run_summary.append(
            f"long call {where}: {len(arrivals)} progress notifications received at "
            f"{', '.join(f'{at:.1f}' for at in arrivals)} s; result at {seen.ended:.1f} s"
        )


# --- the streaming entry point over plain HTTP ----------------------------------------------------------
def _modern_call(arguments: dict[str, Any], request_id: int = 1) -> tuple[dict[str, Any], dict[str, str]]:
    meta = {
        c.META_PROTOCOL_VERSION: "2026-07-28",
        c.META_CLIENT_CAPABILITIES: {},
        c.META_CLIENT_INFO: {"name": "long-calls-e2e", "version": "1"},
        "progressToken": "p1",
    }
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "slow__long_task", "arguments": arguments, "_meta": meta},
    }
    headers = {
        c.PROTOCOL_VERSION_HEADER: "2026-07-28",
        c.METHOD_HEADER: "tools/call",
        c.NAME_HEADER: "slow__long_task",
        "content-type": "application/json",
    }
    return body, headers


def _events(chunks: list[tuple[float, bytes]]) -> list[tuple[float, dict[str, Any]]]:
    """The SSE events of a body, each with the time its last byte arrived."""
    events, buffer = [], b""
    for at, chunk in chunks:
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            data = [line[5:].strip() for line in block.split(b"\n") if line.startswith(b"data:")]
            if data:
                events.append((at, json.loads(b"\n".join(data))))
    return events


def test_an_sse_client_of_the_entry_point_gets_each_event_as_it_is_sent(targets: Targets) -> None:
    body, headers = _modern_call({"seconds": 3, "every": 1})
    chunks: list[tuple[float, bytes]] = []
    started = time.monotonic()
    with httpx.Client(timeout=30) as client:
        accept = f"{c.CONTENT_TYPE_JSON}, {c.CONTENT_TYPE_SSE}"
        with client.stream("POST", targets.lambda_entry.url, json=body, headers={**headers, "accept": accept}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith(c.CONTENT_TYPE_SSE)
            for chunk in r.iter_raw():
                chunks.append((time.monotonic() - started, chunk))

    events = _events(chunks)
    progress = [(at, e["params"]["progress"]) for at, e in events if e.get("method") == "notifications/progress"]
    assert [value for _, value in progress] == [1, 2, 3]
    assert events[-1][1]["result"]["content"][0]["text"] == "done after 3 s"
    # Not held back until the end: the first progress arrives a second or more before the result.
    assert events[-1][0] - progress[0][0] >= 1.0, events


def test_a_json_only_client_of_the_entry_point_gets_the_whole_answer_as_json(targets: Targets) -> None:
    body, headers = _modern_call({"seconds": 1, "every": 0.5})
    answer = httpx.post(
        targets.lambda_entry.url, json=body, headers={**headers, "accept": c.CONTENT_TYPE_JSON}, timeout=30
    )

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(c.CONTENT_TYPE_JSON)
    assert answer.json()["result"]["content"][0]["text"] == "done after 1 s"
    # The request's audit record was written before the answer's end left (a Lambda instance may
    # be frozen as soon as the response is complete).
    record = targets.lambda_entry.audit_record(answer.headers["x-request-id"])
    assert (record["method"], record["outcome"], record["status"]) == ("tools/call", "ok", 200)


def test_a_call_that_outlives_its_invocation_is_answered_with_a_timeout_error_before_it_ends(
    targets: Targets,
) -> None:
    # The adapter sends the invocation's context, deadline in epoch milliseconds, with each request.
    deadline_ms = int((time.time() + 4) * 1000)
    context = {"request_id": "e2e", "deadline": deadline_ms, "invoked_function_arn": "arn:aws:lambda:x"}
    body, headers = _modern_call({"seconds": 30, "every": 1}, request_id=9)
    started = time.monotonic()
    answer = httpx.post(
        targets.lambda_entry.url,
        json=body,
        headers={**headers, "accept": c.CONTENT_TYPE_JSON, "x-amzn-lambda-context": json.dumps(context)},
        timeout=60,
    )
    elapsed = time.monotonic() - started

    error = answer.json()["error"]
    assert (answer.json()["id"], error["code"]) == (9, c.REQUEST_TIMEOUT)
    assert error["message"] == "Upstream 'slow' timed out"
    assert elapsed < 15  # the invocation's end (4 s, less the gateway's margin), not the call's (30 s)
    record = targets.lambda_entry.audit_record(answer.headers["x-request-id"])
    assert (record["outcome"], record["status"]) == ("timeout", 504)


# --- a question mid-call ------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["local", "lambda"])
@pytest.mark.parametrize(
    ("mode", "tool"),
    [("legacy", "ask__test_elicitation"), ("2026-07-28", "ask__test_input_required_result_elicitation")],
    ids=["legacy-relayed-request", "2026-07-28-input-required"],
)
async def test_a_tool_that_asks_the_user_mid_call_gets_the_answer(
    targets: Targets, target: str, mode: str, tool: str
) -> None:
    """2025 era: the upstream's elicitation/create is relayed on the call's stream and the answer
    routed back to its upstream session; 2026-07-28: the input_required round trip."""
    questions: list[str] = []

    async def answer(context: Any, params: ElicitRequestParams) -> ElicitResult:
        questions.append(params.message)
        content = {"username": "ada", "email": "ada@example.com"} if mode == "legacy" else {"name": "Ada"}
        return ElicitResult(action="accept", content=content)

    with anyio.fail_after(30):
        async with Client(targets.url(target), mode=mode, read_timeout_seconds=15, elicitation_callback=answer) as s:
            result = await s.call_tool(tool, {"message": "Who are you?"} if mode == "legacy" else {})

    block = result.content[0]
    assert isinstance(block, TextContent)
    assert not result.is_error, block.text
    if mode == "legacy":
        assert questions == ["Who are you?"]
        assert block.text.startswith("User response: action=accept")
        assert block.text.endswith('content={"username": "ada", "email": "ada@example.com"}')
    else:
        assert questions == ["What is your name?"]
        assert block.text == "Hello, Ada!"
