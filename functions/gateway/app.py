"""Lambda entry point of the buffered deployment (API Gateway HTTP API): Mangum over the same
Starlette app `tollway dev` serves. The streaming deployment's is streaming.py (run.sh).

X-Ray: the function is traced by Lambda (`Tracing: Active`). Powertools Tracer adds subsegments
but imports the X-Ray SDK (~0.5 s of cold start), so it is wired in only when TOLLWAY_TRACER=on.
"""

import gc

gc.disable()  # until the instance is built: tollway.live.deployed() turns it on again

import asyncio  # noqa: E402 (after the line above, so no import pays for cyclic collections)
import os  # noqa: E402
from typing import Any  # noqa: E402

import uvloop  # noqa: E402
from mangum import Mangum  # noqa: E402
from tollway.live import deployed  # noqa: E402
from tollway.telemetry import logger  # noqa: E402
from tollway.telemetry.metrics import flush_due  # noqa: E402

# Mangum runs every invocation on this thread's event loop: libuv's (uvloop) spent about a sixth
# less CPU per call than asyncio's own, in an A/B of this handler with every feature off.
asyncio.set_event_loop(uvloop.new_event_loop())

# Built once per instance; warm invocations reuse config, connections and caches. The config is
# read again every TOLLWAY_CONFIG_TTL_SECONDS and a valid change applied (tollway.live).
app = deployed()
_asgi = Mangum(app, lifespan="off")


# Metrics are printed by the app at the end of each request (tollway.telemetry.metrics), the same
# for this handler, the streaming entry point and the local server; once more after the batch.
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # The invocation's audit records go to their log group in one call, before the answer leaves.
    with app.state.audit.batch():
        reply = _asgi(event, context)
    flush_due()  # what the batch's write counted (AuditWriteFailures), if due
    return reply


if os.environ.get("TOLLWAY_TRACER") == "on":
    from aws_lambda_powertools import Tracer

    handler = Tracer().capture_lambda_handler(handler)
