#!/bin/bash
# The streaming deployment's handler (template.yaml, StreamingGatewayFunction): the Lambda Web
# Adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap) runs this script, waits until the app answers
# on AWS_LWA_PORT (readiness: /healthz), then forwards each invocation to it as an HTTP request.
# The tollway layer's packages are in /opt/python; this directory (streaming.py) is the cwd.
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}/opt/python"
exec python -m uvicorn streaming:app --host 127.0.0.1 --port "${AWS_LWA_PORT:-8080}" \
    --no-access-log --log-level warning
