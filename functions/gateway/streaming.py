"""Lambda entry point of the streaming deployment (API Gateway REST API, response streaming).

Python has no streaming Lambda handler, so `run.sh` serves this module with uvicorn and the AWS
Lambda Web Adapter layer (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap, AWS_LWA_INVOKE_MODE=
response_stream) turns each invocation into an HTTP request to it and streams the answer back
as it is written: SSE events reach the client as they happen. The app is the one app.py serves
(same config, stores and audit log); the invocation's deadline arrives as the adapter's
x-amzn-lambda-context header (tollway.protocol.endpoint).

What app.py's handler does around each invocation is done here around each request (one at a
time per instance on Lambda): log lines carry the invocation's keys (Powertools'
`inject_lambda_context` ones, from the adapter's header); audit records are held and written in
one call, then the metrics that are due printed, both before the answer's last byte leaves: the
invocation ends with the response, and a frozen instance must not hold a record back.
"""

from __future__ import annotations

import gc

gc.disable()  # until the instance is built: tollway.live.deployed() turns it on again

import os  # noqa: E402 (after the line above, so no import pays for cyclic collections)

import anyio.to_thread  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.types import Message, Receive, Scope, Send  # noqa: E402
from tollway.live import deployed  # noqa: E402
from tollway.protocol.endpoint import adapter_context  # noqa: E402
from tollway.telemetry import logger  # noqa: E402
from tollway.telemetry.metrics import flush_due  # noqa: E402

gateway = deployed()
_cold = [True]


def _log_keys(scope: Scope) -> None:
    """The keys Powertools' inject_lambda_context(clear_state=True) gives app.py's log lines."""
    context = adapter_context(Request(scope))
    logger.clear_state()
    logger.append_keys(
        cold_start=_cold[0],
        function_name=os.environ.get("AWS_LAMBDA_FUNCTION_NAME"),
        function_memory_size=os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
        function_arn=context.get("invoked_function_arn"),
        function_request_id=context.get("request_id"),
    )
    _cold[0] = _cold[0] and not context  # the adapter's readiness check carries no context


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":  # lifespan: the local server's shutdown writes pending usage
        await gateway(scope, receive, send)
        return
    _log_keys(scope)
    last: list[Message] = []

    async def send_all_but_the_end(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            last.append(message)
        else:
            await send(message)

    audit = gateway.state.audit
    try:
        with audit.batch():
            await gateway(scope, receive, send_all_but_the_end)
            await anyio.to_thread.run_sync(audit.sink.flush)
    finally:
        flush_due()  # what the batch's write counted (AuditWriteFailures), if due
    for message in last:
        await send(message)
