"""The `tollway` command's local state, and how any command failure becomes one line.

The state directory does not depend on the current directory: `$TOLLWAY_HOME`, else
`$XDG_STATE_HOME/tollway`, else `~/.local/state/tollway`. It holds the dev signing key and,
while a `tollway dev` runs, `dev.json`: what the other commands need to reach it (its gateway
URL, dev issuer and audience, DynamoDB endpoint and table, config). Every command reads it
(`use_running_dev`) unless the environment already names a DynamoDB, a config or an audit
trail: environment variables and flags win.

`run_command` is the CLI's one failure handler: known failures (a command's own refusal, a bad
config, DynamoDB or HTTP unreachable) are one line on stderr with exit status 1 or 2; anything
else is one line naming the exception class, and its traceback only with `--debug`.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from tollway.errors import CommandError, ConfigError, StorageError

NO_RUNNING_DEV = "no running `tollway dev` found (start it with make dev)"
DEV_FILE = "dev.json"
DEV_KEY_FILE = "dev-signing-key.pem"
# Any of these means the operator chose a DynamoDB (or table) themselves: the running dev's is not used.
_DYNAMODB_CHOICE = ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL", "TOLLWAY_TABLE")
_AUDIT_CHOICE = ("TOLLWAY_AUDIT_FILE", "TOLLWAY_AUDIT_LOG_GROUP")


def state_dir() -> Path:
    if home := os.environ.get("TOLLWAY_HOME"):
        return Path(home).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or os.path.join("~", ".local", "state")
    return Path(base).expanduser() / "tollway"


def dev_key_path() -> Path:
    return state_dir() / DEV_KEY_FILE


@dataclass(frozen=True)
class RunningDev:
    """What a running `tollway dev` publishes in dev.json."""

    pid: int
    gateway: str
    """The MCP endpoint, `http://127.0.0.1:PORT/mcp`."""
    issuer: str | None
    """The dev issuer's URL (the gateway's origin), or None when the config names another issuer."""
    audience: str
    dynamodb: str
    table: str
    config: str | None
    """The config it serves (an absolute path or `ssm:/name`)."""
    audit_file: str | None = None
    """The audit trail's file (absolute), when it writes one."""


def publish_dev(dev: RunningDev) -> Path:
    """Write dev.json (owner-only, replaced atomically)."""
    path = state_dir() / DEV_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{DEV_FILE}.{dev.pid}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(dev), handle, indent=2)
    os.replace(partial, path)
    return path


def withdraw_dev(pid: int) -> None:
    """Remove dev.json if it is still this process's (a later `tollway dev` may have replaced it)."""
    path = state_dir() / DEV_FILE
    recorded = _read(path)
    if recorded is not None and recorded.pid == pid:
        path.unlink(missing_ok=True)


def running_dev() -> RunningDev | None:
    """The `tollway dev` recorded in dev.json, if its process is still alive."""
    dev = _read(state_dir() / DEV_FILE)
    if dev is None or not _alive(dev.pid):
        return None
    return dev


def use_running_dev(environ: MutableMapping[str, str] | None = None) -> RunningDev | None:
    """Point this process at the running `tollway dev`, where nothing else was chosen: its
    DynamoDB and table (unless one of `_DYNAMODB_CHOICE` is set), its config (unless
    TOLLWAY_CONFIG is set; `--config` wins over both) and its audit file (unless one of
    `_AUDIT_CHOICE` is set)."""
    env = os.environ if environ is None else environ
    dev = running_dev()
    if dev is None:
        return None
    if not any(env.get(name) for name in _DYNAMODB_CHOICE):
        env["AWS_ENDPOINT_URL_DYNAMODB"] = dev.dynamodb
        env["TOLLWAY_TABLE"] = dev.table
    if dev.config and not env.get("TOLLWAY_CONFIG"):
        env["TOLLWAY_CONFIG"] = dev.config
    if dev.audit_file and not any(env.get(name) for name in _AUDIT_CHOICE):
        env["TOLLWAY_AUDIT_FILE"] = dev.audit_file
    return dev


def _read(path: Path) -> RunningDev | None:
    try:
        data = json.loads(path.read_text())
        return RunningDev(**data)
    except (OSError, ValueError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


# --- one line per failure ------------------------------------------------------------------------
def run_command(command: Callable[[], int], *, debug: bool = False, err: TextIO | None = None) -> int:
    """Run a CLI command; a failure becomes one line on stderr and an exit status."""
    try:
        return command()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        stream = err or sys.stderr
        message, status = describe_failure(exc)
        if debug:
            traceback.print_exc(file=stream)
        print(f"tollway: {message}", file=stream)
        return status


def describe_failure(exc: BaseException, table: str | None = None) -> tuple[str, int]:
    """The one line an operator reads for a failure, and the exit status (`table`: the DynamoDB
    table the command used, default TOLLWAY_TABLE's)."""
    if isinstance(exc, CommandError):
        return str(exc), exc.status
    if isinstance(exc, ConfigError):
        return _one_line(str(exc)), 2
    if isinstance(exc, StorageError) or _is_botocore(exc):
        return _dynamodb_failure(exc.__cause__ if isinstance(exc, StorageError) and exc.__cause__ else exc, table), 1
    if (http := _http_failure(exc)) is not None:
        return http, 1
    return f"internal error: {type(exc).__name__} (rerun with --debug to see the traceback)", 1


def _one_line(text: str) -> str:
    """A multi-line message (a config's validation errors) joined into one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) <= 1:
        return text.strip()
    return f"{lines[0]} {'; '.join(lines[1:])}"


def _is_botocore(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("botocore")


def _dynamodb_failure(cause: BaseException, table: str | None) -> str:
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
    )

    table = table or os.environ.get("TOLLWAY_TABLE", "TollwayTable")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or os.environ.get("AWS_ENDPOINT_URL")
    at = f" at {endpoint}" if endpoint else ""
    if isinstance(cause, EndpointConnectionError):
        reason = f"nothing answers at {endpoint or cause.kwargs.get('endpoint_url')}"
    elif isinstance(cause, NoRegionError):
        reason = "no AWS region is configured"
    elif isinstance(cause, NoCredentialsError):
        reason = "no AWS credentials were found"
    elif isinstance(cause, ClientError):
        code = cause.response.get("Error", {}).get("Code", "error")
        missing = code == "ResourceNotFoundException"
        reason = f"the table does not exist{at}" if missing else f"DynamoDB{at} answered {code}"
    else:
        reason = f"{type(cause).__name__}{at}"
    message = f"cannot use DynamoDB table {table}: {reason}"
    if not endpoint and running_dev() is None:
        message += f"; {NO_RUNNING_DEV}"
    return message


def _http_failure(exc: BaseException) -> str | None:
    # Only a command that used httpx can fail with its errors (and this module imports no HTTP client).
    httpx = sys.modules.get("httpx")
    if httpx is None:
        return None

    if isinstance(exc, httpx.HTTPStatusError):
        return f"{exc.request.method} {exc.request.url} answered HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.TimeoutException):
        return f"{exc.request.method} {exc.request.url} timed out"
    if isinstance(exc, httpx.TransportError):
        try:
            url: Any = exc.request.url
        except RuntimeError:
            url = "the gateway"
        return f"cannot connect to {url} ({type(exc).__name__}); is `tollway dev` running?"
    return None
