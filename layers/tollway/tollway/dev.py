"""`tollway dev`: the same Starlette app as on Lambda, served by uvicorn on 127.0.0.1.

DynamoDB comes from an embedded moto server (tables created from template.yaml's own
declarations) unless AWS_ENDPOINT_URL_DYNAMODB points elsewhere; the embedded server also takes
approval events (EventBridge) unless AWS_ENDPOINT_URL_EVENTBRIDGE is set; demo upstreams named in
the config's `dev.launch` are started on their URLs' ports and stopped on exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollway.auth.dev import DEV_ISSUER, jwk_set, jwks, signing_key
from tollway.config import GatewayConfig, config_source, config_ttl, load_config
from tollway.errors import ConfigError
from tollway.store.table import LOCAL_AWS_DEFAULTS

HOST = "127.0.0.1"
LOCAL_TABLE = "TollwayTable"


def run_dev(config_path: str | None, port: int) -> int:
    import uvicorn

    source = config_source(config_path)
    config = local_config(load_config(source))
    dev_keys, public_routes, token_hint = None, [], None
    if config.auth.issuer == DEV_ISSUER:
        # No issuer configured: trust the local dev issuer (its key made once in .tollway/).
        key = signing_key()
        dev_keys = jwk_set(key)
        document = jwks(key)

        async def serve_jwks(request: Request) -> Response:
            return JSONResponse(document)

        public_routes = [Route("/.well-known/jwks.json", serve_jwks, methods=["GET"])]
        command = os.path.relpath(sys.argv[0]) if os.path.basename(sys.argv[0]) == "tollway" else "tollway"
        token_hint = f'{command} token --sub alice --tenant acme --scope "finance"' + (
            f" --config {config_path}" if config_path else ""
        )
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    with contextlib.ExitStack() as stack:
        table = stack.enter_context(dynamodb())
        for name, module in config.dev.launch.items():
            stack.enter_context(launch_upstream(module, config.upstream(name).url))
        from tollway.http import create_app
        from tollway.live import LiveGateway
        from tollway.store import Stores

        stores = Stores.dynamo()

        def build(changed: GatewayConfig, previous: Any) -> Any:
            return create_app(
                local_config(changed),
                stores=stores,
                streaming=True,
                dev_keys=dev_keys,
                public_routes=public_routes,
                previous=previous,
            )

        # The same live config as on Lambda: edit the file and the change applies within the TTL.
        app = LiveGateway(source, build, ttl=config_ttl())
        print(f"Tollway gateway: http://{HOST}:{port}/mcp", flush=True)
        print(f"  upstreams: {', '.join(f'{u.name} ({u.url})' for u in config.upstreams)}", flush=True)
        print(f"  DynamoDB:  {table}", flush=True)
        print(f"  audit:     {app.state.audit.where} (read it with `tollway audit`)", flush=True)
        if token_hint:
            print(f"  auth:      dev issuer {DEV_ISSUER!r} (JWKS at http://{HOST}:{port}/.well-known/jwks.json)")
            print(f"  token:     {token_hint}", flush=True)
            print("             send it as 'Authorization: Bearer <token>'", flush=True)
        elif config.auth.allow_anonymous:
            print("  auth:      OFF (auth.allow_anonymous)", flush=True)
        else:
            print(f"  auth:      issuer {config.auth.issuer}", flush=True)
        uvicorn.run(app, host=HOST, port=port, log_level="warning", timeout_graceful_shutdown=2)
    return 0


def local_config(config: GatewayConfig) -> GatewayConfig:
    """What `tollway dev` changes in any config it serves: loopback-only Host and Origin lists
    unless the config sets its own, and the dev issuer when the config names no issuer."""
    http = config.http
    if http.allowed_hosts is None:
        # DNS rebinding defence: the local server answers only to loopback names.
        http = http.model_copy(update={"allowed_hosts": [f"{HOST}:*", "localhost:*", "[::1]:*"]})
    if http.allowed_origins is None:
        http = http.model_copy(update={"allowed_origins": [f"http://{HOST}:*", "http://localhost:*", "http://[::1]:*"]})
    config = config.model_copy(update={"http": http})
    if not config.auth.allow_anonymous and config.auth.issuer in (None, DEV_ISSUER):
        config = config.model_copy(update={"auth": config.auth.model_copy(update={"issuer": DEV_ISSUER})})
    return config


@contextlib.contextmanager
def dynamodb() -> Iterator[str]:
    """Yield a description of the DynamoDB in use, starting an embedded one if needed."""
    from tollway.store.tables import ensure_tables, find_template

    os.environ.setdefault("TOLLWAY_TABLE", LOCAL_TABLE)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
    server = None
    if not endpoint:
        from moto.server import ThreadedMotoServer

        for key, value in LOCAL_AWS_DEFAULTS.items():
            os.environ.setdefault(key, value)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access lines
        server = ThreadedMotoServer(ip_address=HOST, port=_free_port(), verbose=False)
        server.start()
        endpoint = f"http://{HOST}:{server._port}"
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint
        # Approval events go to the same embedded moto (EventBridge), never to a real account.
        os.environ.setdefault("AWS_ENDPOINT_URL_EVENTBRIDGE", endpoint)
    import boto3

    ensure_tables(boto3.client("dynamodb"), find_template(), {"TollwayTable": os.environ["TOLLWAY_TABLE"]})
    try:
        yield f"{endpoint} ({'embedded moto' if server else 'external'}), table {os.environ['TOLLWAY_TABLE']}"
    finally:
        if server is not None:
            server.stop()


@contextlib.contextmanager
def launch_upstream(module: str, url: str, timeout: float = 30.0) -> Iterator[None]:
    """Run `python -m module --port N` for a demo upstream and wait until it says `ready`."""
    parts = urlsplit(url)
    if parts.hostname not in (HOST, "localhost") or parts.port is None:
        raise ConfigError(f"dev.launch needs a loopback URL with a port, got {url}")
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(parts.port)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        _wait_ready(proc, module, timeout)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_ready(proc: subprocess.Popen[str], module: str, timeout: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([proc.stdout], [], [], remaining)
        if not readable:
            break
        line = proc.stdout.readline()
        if not line:
            raise ConfigError(f"demo upstream {module} exited before it was ready (is its port free?)")
        if line.startswith("ready "):
            return
    raise ConfigError(f"demo upstream {module} did not start within {timeout:.0f} s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])
