"""The `tollway` command's local state (where the dev key and dev.json live, who wins between
dev.json and the environment), what `tollway dev` serves on its port, and the one line a CLI
failure becomes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoRegionError
from tollway import cli
from tollway.auth import dev as dev_auth
from tollway.config import parse_config
from tollway.dev import local_config, on_port
from tollway.errors import CommandError, ConfigError, StorageError
from tollway.local_state import (
    NO_RUNNING_DEV,
    RunningDev,
    describe_failure,
    publish_dev,
    run_command,
    running_dev,
    state_dir,
    use_running_dev,
    withdraw_dev,
)
from tollway.telemetry import ConsoleFormatter


def _dev(pid: int, **overrides: str | None) -> RunningDev:
    fields: dict[str, object] = {
        "pid": pid,
        "gateway": "http://127.0.0.1:18080/mcp",
        "issuer": "http://127.0.0.1:18080",
        "audience": "http://127.0.0.1:18080/mcp",
        "dynamodb": "http://127.0.0.1:45000",
        "table": "TollwayTable",
        "config": "/srv/tollway/gateway.yaml",
        **overrides,
    }
    return RunningDev(**fields)  # type: ignore[arg-type]


UPSTREAMS = [{"name": "support", "url": "http://127.0.0.1:9/mcp"}]


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TOLLWAY_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


# --- where the state lives ------------------------------------------------------------------------
def test_the_state_directory_is_tollway_home_else_xdg_state_else_local_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOLLWAY_HOME", str(tmp_path / "explicit"))
    assert state_dir() == tmp_path / "explicit"
    monkeypatch.delenv("TOLLWAY_HOME")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir() == tmp_path / "xdg" / "tollway"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert state_dir() == tmp_path / "user" / ".local" / "state" / "tollway"


def test_the_dev_key_is_made_in_the_state_directory_whatever_the_current_one(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    first = dev_auth.signing_key()
    monkeypatch.chdir(tmp_path / "b")
    second = dev_auth.signing_key()

    assert dev_auth.key_id(first) == dev_auth.key_id(second)
    assert (home / "dev-signing-key.pem").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "a" / ".tollway").exists()


# --- dev.json -------------------------------------------------------------------------------------
def test_a_published_dev_is_found_while_its_process_lives_and_withdrawn_by_it(home: Path) -> None:
    recorded = _dev(os.getpid())
    path = publish_dev(recorded)

    assert path.stat().st_mode & 0o777 == 0o600
    assert running_dev() == recorded
    withdraw_dev(os.getpid() + 1)  # not its own: left alone
    assert running_dev() == recorded
    withdraw_dev(os.getpid())
    assert running_dev() is None and not path.exists()


def test_a_dev_whose_process_is_gone_is_not_running(home: Path) -> None:
    publish_dev(_dev(_dead_pid()))

    assert running_dev() is None


def test_an_unreadable_dev_file_is_not_a_running_dev(home: Path) -> None:
    home.mkdir(parents=True)
    (home / "dev.json").write_text("{not json")

    assert running_dev() is None


def test_the_running_dev_fills_in_what_the_environment_does_not_name(home: Path) -> None:
    publish_dev(_dev(os.getpid()))
    env: dict[str, str] = {}

    use_running_dev(env)

    assert env == {
        "AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:45000",
        "TOLLWAY_TABLE": "TollwayTable",
        "TOLLWAY_CONFIG": "/srv/tollway/gateway.yaml",
    }


@pytest.mark.parametrize("chosen", ["AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL", "TOLLWAY_TABLE"])
def test_a_dynamodb_named_in_the_environment_wins_over_the_running_dev(home: Path, chosen: str) -> None:
    publish_dev(_dev(os.getpid()))
    env = {chosen: "mine", "TOLLWAY_CONFIG": "my.yaml"}

    use_running_dev(env)

    assert env == {chosen: "mine", "TOLLWAY_CONFIG": "my.yaml"}


# --- what `tollway dev` serves --------------------------------------------------------------------
def test_a_loopback_url_moves_to_the_served_port_and_others_stay() -> None:
    assert on_port("http://127.0.0.1:8080/mcp", 18080) == "http://127.0.0.1:18080/mcp"
    assert on_port("http://localhost/mcp", 18080) == "http://localhost:18080/mcp"
    assert on_port("http://[::1]:8080/mcp", 18080) == "http://[::1]:18080/mcp"
    assert on_port("https://mcp.example.com/mcp", 18080) == "https://mcp.example.com/mcp"


def test_the_dev_config_follows_the_port_and_names_the_dev_issuer_by_url() -> None:
    config = parse_config({"resource": "http://127.0.0.1:8080/mcp", "upstreams": UPSTREAMS})

    served, dev_issuer = local_config(config, 18080)

    assert dev_issuer
    assert served.resource == served.audience == "http://127.0.0.1:18080/mcp"
    assert served.auth.issuer == "http://127.0.0.1:18080"


def test_an_explicit_audience_and_a_real_issuer_are_kept_as_written() -> None:
    config = parse_config(
        {
            "resource": "http://127.0.0.1:8080/mcp",
            "auth": {
                "issuer": "https://issuer.example.com/",
                "jwks_url": "https://issuer.example.com/jwks",
                "audience": "http://127.0.0.1:8080/mcp",
            },
            "upstreams": UPSTREAMS,
        }
    )

    served, dev_issuer = local_config(config, 18080)

    assert not dev_issuer
    assert served.auth.issuer == "https://issuer.example.com/"
    assert served.audience == "http://127.0.0.1:8080/mcp"


# --- one line per failure -------------------------------------------------------------------------
def _failing(exc: BaseException) -> tuple[int, str]:
    def command() -> int:
        raise exc

    err = io.StringIO()
    status = run_command(command, err=err)
    return status, err.getvalue()


def _storage_error(cause: Exception) -> StorageError:
    try:
        raise StorageError("Store unavailable") from cause
    except StorageError as exc:
        return exc


def test_a_command_error_is_its_message_and_status() -> None:
    assert _failing(CommandError("--ttl must be between 1 and 604800 seconds", status=2)) == (
        2,
        "tollway: --ttl must be between 1 and 604800 seconds\n",
    )


def test_a_config_error_of_many_lines_is_one_line_with_status_2() -> None:
    status, text = _failing(
        ConfigError("gateway.yaml is invalid:\n  resource: required key is missing\n  x: unknown key")
    )

    assert (status, text) == (
        2,
        "tollway: gateway.yaml is invalid: resource: required key is missing; x: unknown key\n",
    )


def test_dynamodb_failures_say_which_table_where_and_why(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("TOLLWAY_TABLE", "Usage")
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:9")
    refused = EndpointConnectionError(endpoint_url="http://127.0.0.1:9/")
    missing = ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "x"}}, "Query")

    assert describe_failure(_storage_error(refused)) == (
        "cannot use DynamoDB table Usage: nothing answers at http://127.0.0.1:9",
        1,
    )
    assert describe_failure(_storage_error(missing)) == (
        "cannot use DynamoDB table Usage: the table does not exist at http://127.0.0.1:9",
        1,
    )


def test_without_a_dynamodb_or_a_running_dev_the_failure_says_to_start_one(
    monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    monkeypatch.delenv("TOLLWAY_TABLE", raising=False)

    status, text = _failing(_storage_error(NoRegionError()))

    assert (status, text) == (
        1,
        f"tollway: cannot use DynamoDB table TollwayTable: no AWS region is configured; {NO_RUNNING_DEV}\n",
    )


def test_an_unexpected_failure_is_one_line_naming_its_class_and_the_debug_flag() -> None:
    assert _failing(KeyError("secret detail")) == (
        1,
        "tollway: internal error: KeyError (rerun with --debug to see the traceback)\n",
    )


def test_the_cli_shows_the_traceback_only_with_debug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    def broken(args: object, admin: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setitem(cli.ADMIN_COMMANDS, "upstream", broken)

    assert cli.main(["upstream", "pending"]) == 1
    plain = capsys.readouterr().err
    assert cli.main(["upstream", "pending", "--debug"]) == 1
    debug = capsys.readouterr().err

    assert plain == "tollway: internal error: RuntimeError (rerun with --debug to see the traceback)\n"
    assert debug.startswith("Traceback (most recent call last):\n")
    assert debug.endswith("RuntimeError: boom\n" + plain)


def test_tollway_token_without_a_running_dev_says_so(capsys: pytest.CaptureFixture[str], home: Path) -> None:
    assert cli.main(["token", "--sub", "alice", "--tenant", "acme"]) == 1
    assert capsys.readouterr() == ("", f"tollway: {NO_RUNNING_DEV}\n")


def test_a_port_from_the_environment_must_be_a_port(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PORT", "80a")

    assert cli.main(["dev"]) == 2
    assert capsys.readouterr().err == "tollway: PORT must be a port number, 1-65535 (got '80a')\n"


# --- the console log format -----------------------------------------------------------------------
def test_the_console_format_is_one_readable_line_per_record() -> None:
    import logging

    record = logging.LogRecord("tollway", logging.INFO, __file__, 1, "request", None, None)
    record.path = "/mcp"
    record.status = 200

    line = ConsoleFormatter(use_rfc3339=True).format(record)

    assert line.endswith(" INFO  request  path=/mcp status=200")
    assert len(line.split(" ")[0]) == len("20:51:23")


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["frobnicate"], "tollway: argument command: invalid choice: 'frobnicate'"),
        (["sessions", "list"], "tollway sessions list: the following arguments are required: --tenant"),
        (["usage", "report", "--month", "2026-11", "--bogus"], "tollway: unrecognized arguments: --bogus"),
    ],
)
def test_a_usage_error_is_one_line_with_status_2(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)

    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.count("\n") == 1 and err.startswith(line), err
