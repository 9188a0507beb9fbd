"""Lambda entry point for the MCP endpoint: Mangum over the same Starlette app `tollway dev` serves."""

from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum
from tollway.config import load_config
from tollway.http import create_app
from tollway.telemetry import logger, metrics

# Built once per instance; warm invocations reuse config, connections and caches.
app = create_app(load_config())
_asgi = Mangum(app, lifespan="off")


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict, context: LambdaContext) -> dict:
    return _asgi(event, context)
