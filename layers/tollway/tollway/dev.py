"""`tollway dev`: the same Starlette app as on Lambda, served by uvicorn on 127.0.0.1.

DynamoDB comes from an embedded moto server (tables created from template.yaml's own
declarations) unless AWS_ENDPOINT_URL_DYNAMODB points elsewhere; the embedded server also takes
approval events (EventBridge) unless AWS_ENDPOINT_URL_EVENTBRIDGE is set; demo upstreams named in
the config's `dev.launch` are started on their URLs' ports and stopped on exit. Once the port
accepts connections, the banner is printed and dev.json is published in the state directory
(`tollway.local_state`), so the other commands find this gateway from any shell; it is
withdrawn on exit (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollway.auth.dev import DEV_ISSUER, jwk_set, jwks, signing_key
from tollway.config import GatewayConfig, config_source, config_ttl, load_config
from tollway.errors import CommandError, ConfigError
from tollway.local_state import RunningDev, publish_dev, state_dir, withdraw_dev
from tollway.store.table import LOCAL_AWS_DEFAULTS

HOST = "127.0.0.1"
LOCAL_TABLE = "TollwayTable"
DEFAULT_PORT = 8080
LOOPBACK = frozenset((HOST, "localhost", "::1"))
JWKS_PATH = "/.well-known/jwks.json"
ISSUER_METADATA_PATH = "/.well-known/oauth-authorization-server"


def run_dev(config_path: str | None, port: int) -> int:
    from tollway.telemetry import use_log_format

    use_log_format(sys.stderr)
    source = config_source(config_path)
    config, dev_issuer = local_config(load_config(source), port)
    # SIGTERM (as from `kill` or a test's teardown) ends like Ctrl-C: demo upstreams stopped,
    # dev.json withdrawn. uvicorn re-raises the signal it caught once it has shut down.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    # Bound before anything starts, so a clash is one line at once, not after the upstreams.
    listener = listen(port, "the gateway", f"pick another: make dev PORT={port + 1}, or tollway dev --port {port + 1}")
    launches = demo_upstreams(config, source)
    dev_keys, public_routes = None, []
    if dev_issuer:
        dev_keys, public_routes = _dev_issuer_routes(config)
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    with contextlib.ExitStack() as stack:
        stack.callback(listener.close)
        endpoint, table, described = stack.enter_context(dynamodb())
        for module, upstream_port in launches:
            stack.enter_context(launch_upstream(module, upstream_port))
        from tollway.http import create_app
        from tollway.live import LiveGateway
        from tollway.store import Stores

        stores = Stores.dynamo()

        def build(changed: GatewayConfig, previous: Any) -> Any:
            served, served_by_dev_issuer = local_config(changed, port)
            return create_app(
                served,
                stores=stores,
                streaming=True,
                # The dev keys only while the config leaves the issuer to `tollway dev`.
                dev_keys=dev_keys if served_by_dev_issuer else None,
                public_routes=public_routes,
                previous=previous,
            )

        # The same live config as on Lambda: edit the file and the change applies within the TTL.
        app = LiveGateway(source, build, ttl=config_ttl())
        dev = RunningDev(
            pid=os.getpid(),
            gateway=f"http://{HOST}:{port}/mcp",
            issuer=config.auth.issuer if dev_issuer else None,
            audience=config.audience,
            dynamodb=endpoint,
            table=table,
            config=source if source.startswith("ssm:") else os.path.abspath(source),
            audit_file=app.state.audit.file,
        )

        def started() -> None:
            publish_dev(dev)
            stack.callback(withdraw_dev, dev.pid)
            print(banner(config, dev, described, app.state.audit.where), flush=True)

        serve(app, listener, on_started=started)
    return 0


def local_config(config: GatewayConfig, port: int) -> tuple[GatewayConfig, bool]:
    """The config as `tollway dev` serves it on `port`, and whether it is the dev issuer's:
    loopback hosts and origins only (unless the config lists its own), a loopback `resource` on
    the port actually served (an explicit `auth.audience` stays as written), and, when the config
    names no issuer (or `tollway-dev`), the local dev issuer under the gateway's own URL."""
    http = config.http
    if http.allowed_hosts is None:
        # DNS rebinding defence: the local server answers only to loopback names.
        http = http.model_copy(update={"allowed_hosts": [f"{HOST}:*", "localhost:*", "[::1]:*"]})
    if http.allowed_origins is None:
        http = http.model_copy(update={"allowed_origins": [f"http://{HOST}:*", "http://localhost:*", "http://[::1]:*"]})
    update: dict[str, Any] = {"http": http, "resource": on_port(config.resource, port)}
    dev_issuer = not config.auth.allow_anonymous and config.auth.issuer in (None, DEV_ISSUER)
    if dev_issuer:
        update["auth"] = config.auth.model_copy(update={"issuer": f"http://{HOST}:{port}", "jwks_url": None})
    return config.model_copy(update=update), dev_issuer


def on_port(url: str, port: int) -> str:
    """`url` moved to `port` if it names a loopback host; any other URL as it is."""
    parts = urlsplit(url)
    if parts.hostname not in LOOPBACK:
        return url
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return urlunsplit(parts._replace(netloc=f"{host}:{port}"))


def _dev_issuer_routes(config: GatewayConfig) -> tuple[Any, list[Route]]:
    """The dev key's JWKS, and RFC 8414 metadata naming the issuer and its JWKS. Tokens come from
    `tollway token`: there is no authorization or token endpoint to advertise."""
    key = signing_key()
    issuer = config.auth.issuer
    keys = jwks(key)
    metadata = {"issuer": issuer, "jwks_uri": f"{issuer}{JWKS_PATH}", "response_types_supported": []}

    async def serve_jwks(request: Request) -> Response:
        return JSONResponse(keys)

    async def serve_metadata(request: Request) -> Response:
        return JSONResponse(metadata)

    routes = [
        Route(JWKS_PATH, serve_jwks, methods=["GET"]),
        Route(ISSUER_METADATA_PATH, serve_metadata, methods=["GET"]),
    ]
    return jwk_set(key), routes


def banner(config: GatewayConfig, dev: RunningDev, dynamodb: str, audit: str) -> str:
    lines = [
        f"Tollway gateway: {dev.gateway}",
        f"  upstreams: {', '.join(f'{u.name} ({u.url})' for u in config.upstreams)}",
        f"  DynamoDB:  {dynamodb}",
        f"  audit:     {audit} (read it with `tollway audit`)",
    ]
    if dev.issuer:
        command = os.path.relpath(sys.argv[0]) if os.path.basename(sys.argv[0]) == "tollway" else "tollway"
        lines += [
            f"  auth:      dev issuer {dev.issuer} (JWKS at {dev.issuer}{JWKS_PATH})",
            f'  token:     {command} token --sub alice --tenant acme --scope "finance"',
            "             send it as 'Authorization: Bearer <token>'",
        ]
    elif config.auth.allow_anonymous:
        lines.append("  auth:      OFF (auth.allow_anonymous)")
    else:
        lines.append(f"  auth:      issuer {config.auth.issuer}")
    lines.append(f"  state:     {state_dir()} (other tollway commands find this gateway there)")
    return "\n".join(lines)


def listen(port: int, what: str, how: str) -> socket.socket:
    """A socket bound to HOST:port, or a one-line CommandError naming the port and what to do."""
    # IPPROTO_TCP named: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose protocol says
    # TCP, and with Nagle on every kept-alive response waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise CommandError(f"port {port} on {HOST} is already in use ({what}): {how}") from None
        raise CommandError(f"cannot listen on {HOST}:{port} ({what}): {exc.strerror}") from None
    return sock


def serve(app: Any, listener: socket.socket, on_started: Callable[[], None]) -> None:
    """Run `app` with uvicorn on `listener`; `on_started` once it accepts connections."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                on_started()

    Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)).run(sockets=[listener])


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


_MOTO_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items")


def atomic_moto_writes() -> None:
    """Make moto's DynamoDB, in this process, apply one write at a time, as DynamoDB applies each
    write atomically. moto checks a condition and then writes, without a lock: two concurrent
    conditional writes to one item can both pass (two requests of one session would both record
    an upstream session, each then using its own). Batches and transactions write through these
    methods, so they are covered (re-entrant lock). Idempotent."""
    import threading

    from moto.dynamodb.models import DynamoDBBackend

    if getattr(DynamoDBBackend, "_tollway_atomic", False):
        return
    lock = threading.RLock()

    def one_at_a_time(write: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(write)
        def atomic(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return write(*args, **kwargs)

        return atomic

    for name in _MOTO_WRITES:
        setattr(DynamoDBBackend, name, one_at_a_time(getattr(DynamoDBBackend, name)))
    DynamoDBBackend._tollway_atomic = True  # type: ignore[attr-defined]


@contextlib.contextmanager
def dynamodb() -> Iterator[tuple[str, str, str]]:
    """Yield (endpoint, table, a description) of the DynamoDB in use, starting an embedded one if needed."""
    from tollway.store.tables import ensure_tables, find_template

    os.environ.setdefault("TOLLWAY_TABLE", LOCAL_TABLE)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
    server = None
    if not endpoint:
        from moto.server import ThreadedMotoServer

        for key, value in LOCAL_AWS_DEFAULTS.items():
            os.environ.setdefault(key, value)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access lines
        atomic_moto_writes()
        server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
        server.start()
        host, bound = server.get_host_and_port()
        endpoint = f"http://{host}:{bound}"
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint
        # Approval events go to the same embedded moto (EventBridge), never to a real account.
        os.environ.setdefault("AWS_ENDPOINT_URL_EVENTBRIDGE", endpoint)
    import boto3

    table = os.environ["TOLLWAY_TABLE"]
    try:
        template = find_template()
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from None
    ensure_tables(boto3.client("dynamodb"), template, {"TollwayTable": table})
    try:
        yield endpoint, table, f"{endpoint} ({'embedded moto' if server else 'external'}), table {table}"
    finally:
        if server is not None:
            server.stop()


def demo_upstreams(config: GatewayConfig, source: str) -> list[tuple[str, int]]:
    """(module, port) of each demo upstream to launch, their ports checked free now: a clash is
    one line before anything starts, not the child's traceback."""
    launches = []
    for name, module in config.dev.launch.items():
        parts = urlsplit(config.upstream(name).url)
        if parts.hostname not in LOOPBACK or parts.port is None:
            raise ConfigError(f"dev.launch needs a loopback URL with a port, got {config.upstream(name).url}")
        how = f"stop what uses it, or change upstream {name}'s url in {source}"
        listen(parts.port, f"demo upstream {name!r}", how).close()
        launches.append((module, parts.port))
    return launches


@contextlib.contextmanager
def launch_upstream(module: str, port: int, timeout: float = 30.0) -> Iterator[None]:
    """Run `python -m module --port N` for a demo upstream and wait until it says `ready`."""
    from tollway.store.tables import find_template

    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(port)],
        cwd=find_template().parent,  # the repository, where the demo modules are, wherever dev runs
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
            raise CommandError(f"demo upstream {module} exited before it was ready (its output is above)")
        if line.startswith("ready "):
            return
    raise CommandError(f"demo upstream {module} did not start within {timeout:.0f} s")
