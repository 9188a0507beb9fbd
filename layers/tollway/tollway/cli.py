"""The `tollway` command: local gateway and operator tools."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import NoReturn, TextIO

from tollway.admin_client import TOKEN_ENV, URL_ENV, AdminClientError, Backend, backend
from tollway.config import config_source, load_config
from tollway.errors import CommandError, ConfigError
from tollway.local_state import NO_RUNNING_DEV, run_command, running_dev, use_running_dev
from tollway.policy.approvals import STATUS_FILTERS
from tollway.store.table import use_local_credentials_for_loopback

DEBUG_FLAG = "--debug"


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    # Accepted anywhere on the line, after a subcommand too, so it is taken out before parsing.
    debug = DEBUG_FLAG in arguments
    args = build_parser().parse_args([a for a in arguments if a != DEBUG_FLAG])
    return run_command(lambda: run(args), debug=debug)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other failure of the CLI (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tollway", description="Tollway MCP gateway")
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the traceback of a failure")
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="run the gateway locally (embedded DynamoDB, demo upstreams)")
    dev.add_argument("--config", help="gateway.yaml path (default: $TOLLWAY_CONFIG or gateway.yaml)")
    dev.add_argument("--port", type=_port, help="port on 127.0.0.1 (default: $PORT or 8080)")

    check = commands.add_parser("check", help="validate a config offline; --probe: ask each upstream what it offers")
    check.add_argument("--config", help="gateway.yaml path, ssm:/name or appconfig:app/env/profile (default as `dev`)")
    check.add_argument(
        "--probe", action="store_true", help="reach each upstream: era, counts, definitions the gate would withhold"
    )

    compile_config = commands.add_parser(
        "compile-config",
        help="write a config file as the JSON a deployed function reads without PyYAML (sam build runs it)",
    )
    compile_config.add_argument("source", help="the gateway.yaml to read")
    compile_config.add_argument("dest", help="where to write it (- for stdout); the same text when it cannot be JSON")

    token = commands.add_parser("token", help="print a token the running dev gateway accepts (dev signing key)")
    token.add_argument("--sub", required=True, help="subject (user or agent id)")
    token.add_argument("--tenant", required=True, help="tenant id")
    token.add_argument("--scope", default="", help='space-separated scopes, e.g. "tools:read finance"')
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.add_argument("--config", help="gateway.yaml whose resource is the audience (default: the running dev's)")

    # The admin commands: the gateway's admin API given --url and --token, else DynamoDB directly.
    remote = _Parser(add_help=False)
    remote.add_argument("--url", help=f"the gateway's URL: use its admin API (or ${URL_ENV})")
    remote.add_argument("--token", help=f"a token with the admin scope, with --url (or ${TOKEN_ENV})")
    remote.add_argument("--table", help="without --url: the DynamoDB table (default $TOLLWAY_TABLE or TollwayTable)")
    remote.add_argument("--config", help="without --url: gateway.yaml (default: $TOLLWAY_CONFIG or the running dev's)")

    usage = commands.add_parser("usage", help="finance: usage and estimated cost per tenant, tool and day")
    usage_commands = usage.add_subparsers(dest="usage_command", required=True)
    report = usage_commands.add_parser("report", parents=[remote], help="one month's usage report")
    report.add_argument("--month", required=True, help="YYYY-MM (UTC days)")
    report.add_argument("--tenant", help="one tenant only (default: every tenant)")
    report.add_argument("--format", choices=["table", "csv", "json"], default="table", help="default: table")

    upstream = commands.add_parser("upstream", help="operators: upstream definitions awaiting approval")
    upstream_commands = upstream.add_subparsers(dest="upstream_command", required=True)
    upstream_commands.add_parser("pending", parents=[remote], help="definitions that changed or await approval")
    approve = upstream_commands.add_parser(
        "approve", parents=[remote], help="approve (pin) an upstream's current definition"
    )
    approve.add_argument("upstream", help="upstream name, as in gateway.yaml")
    approve.add_argument("name", help="the definition's own name at the upstream (tool/prompt name or URI)")
    approve.add_argument("--kind", choices=["tool", "resource", "resource_template", "prompt"], default="tool")
    approve.add_argument(
        "--by",
        default=os.environ.get("USER", "operator"),
        help="who approves (audit); through the admin API, the token's tenant/subject instead",
    )

    upstreams = commands.add_parser("upstreams", help="operators: the configured upstreams")
    upstreams_commands = upstreams.add_subparsers(dest="upstreams_command", required=True)
    upstreams_commands.add_parser(
        "list", parents=[remote], help="host, era, health (circuit), tool count and pin states of each upstream"
    )

    sessions = commands.add_parser("sessions", help="operators: 2025-era client sessions")
    sessions_commands = sessions.add_subparsers(dest="sessions_command", required=True)
    listing = sessions_commands.add_parser("list", parents=[remote], help="a tenant's live sessions, newest first")
    listing.add_argument("--tenant", required=True, help="tenant id")
    listing.add_argument("--format", choices=["table", "json"], default="table", help="default: table")
    end = sessions_commands.add_parser("end", parents=[remote], help="end a session and its upstream sessions")
    end.add_argument("id", help="the session id (Mcp-Session-Id), as `tollway sessions list` shows it")
    end.add_argument("--by", default=os.environ.get("USER", "operator"), help="who ends it (audit, direct mode)")

    audit = commands.add_parser("audit", help="read the audit trail (local file in dev, Logs Insights when deployed)")
    audit.add_argument("--tenant", help="one tenant only")
    audit.add_argument("--tool", help="tool, prompt or resource name glob, e.g. 'finance__*'")
    audit.add_argument("--since", default="1h", help="how far back: 30m, 1h, 2d (default 1h)")
    audit.add_argument("--decision", help="allowed, denied, rate_limited, withheld, pending_approval, invalid, ...")
    audit.add_argument("--limit", type=int, default=1000, help="at most this many records (default 1000)")
    audit.add_argument("--json", action="store_true", help="one JSON record per line")
    audit.add_argument("--log-group", help="deployed: the audit log group (default $TOLLWAY_AUDIT_LOG_GROUP)")
    audit.add_argument("--file", help="local: the audit file (default $TOLLWAY_AUDIT_FILE, else audit.file)")
    audit.add_argument("--config", help="gateway.yaml with audit.file (default as `dev`, if readable)")

    approvals = commands.add_parser("approvals", help="approvers: tool calls waiting for a human decision")
    approvals_commands = approvals.add_subparsers(dest="approvals_command", required=True)
    approvals_listing = approvals_commands.add_parser("list", parents=[remote], help="approvals, newest first")
    approvals_listing.add_argument("--status", choices=STATUS_FILTERS)
    approvals_listing.add_argument("--tenant", help="one tenant only")
    for name, text in (("approve", "approve a pending call (it may then run once)"), ("deny", "deny a pending call")):
        decide = approvals_commands.add_parser(name, parents=[remote], help=text)
        decide.add_argument("id", help="the approval id")
        decide.add_argument("--by", default=os.environ.get("USER", "operator"), help="who decides (direct mode)")

    return parser


def run(args: argparse.Namespace) -> int:
    from tollway.telemetry import logger, use_log_format

    if args.command == "dev":
        from tollway.dev import DEFAULT_PORT, run_dev

        return run_dev(config_path=args.config, port=args.port or _port_from_env() or DEFAULT_PORT)
    # Operator commands print their answer on stdout: logs go to stderr. Without a DynamoDB,
    # config or audit trail named in the environment, they use the running `tollway dev`'s.
    logger.registered_handler.setStream(_CurrentStderr())
    use_log_format(sys.stderr)
    use_running_dev()
    use_local_credentials_for_loopback()
    try:
        if args.command == "check":
            return check_command(args)
        if args.command == "compile-config":
            return compile_config_command(args)
        if args.command == "token":
            return print_token(args)
        if args.command == "audit":
            return audit_command(args)
        return ADMIN_COMMANDS[args.command](args, _backend(args))
    except AdminClientError as exc:
        raise CommandError(str(exc), exc.status) from exc


def check_command(args: argparse.Namespace) -> int:
    from tollway.check import check as check_config
    from tollway.telemetry import logger

    # The report is the output; the gateway's own log lines (retries, probes) only on request.
    level = logger.log_level
    logger.setLevel(os.environ.get("POWERTOOLS_LOG_LEVEL") or "ERROR")
    try:
        return check_config(args.config, args.probe, sys.stdout, sys.stderr)
    finally:
        logger.setLevel(level)


def compile_config_command(args: argparse.Namespace) -> int:
    """`tollway compile-config SOURCE DEST`: DEST holds SOURCE's document as JSON (still valid
    YAML), or SOURCE's text unchanged when YAML reads more into it than JSON can say. A file that
    is not valid YAML fails (exit 2, naming the line), so a build never bundles one."""
    from pathlib import Path

    from tollway.config import json_config, read_source

    text = read_source(args.source)
    output = json_config(text, args.source)
    if output is None:
        print(f"tollway: {args.source} kept as YAML: it holds values JSON cannot carry", file=sys.stderr)
        output = text
    if args.dest == "-":
        sys.stdout.write(output)
    else:
        Path(args.dest).write_text(output, encoding="utf-8")
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number, 1-65535 (got {text!r})")
    return port


def _port_from_env() -> int | None:
    if not (text := os.environ.get("PORT")):
        return None
    try:
        return _port(text)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"PORT {exc}") from None


class _CurrentStderr:
    """Whatever sys.stderr is when a log line is written (it may be replaced, e.g. by tests)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def audit_command(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """`tollway audit`: the matching records, oldest first; 2 for bad arguments, 1 when the
    trail cannot be read."""
    from tollway.telemetry.audit import FILE_ENV, LOG_GROUP_ENV
    from tollway.telemetry.audit_query import (
        DECISIONS,
        AuditQueryError,
        Filters,
        parse_since,
        read_file,
        read_insights,
        render,
    )

    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        since = parse_since(args.since)
    except AuditQueryError as exc:
        print(f"tollway: {exc}", file=err)
        return 2
    if args.decision is not None and args.decision not in DECISIONS:
        print(f"tollway: --decision must be one of {', '.join(DECISIONS)}", file=err)
        return 2
    if not 1 <= args.limit <= 10_000:
        print("tollway: --limit must be between 1 and 10000", file=err)
        return 2
    filters = Filters(tenant=args.tenant, tool=args.tool, since=since, decision=args.decision)
    log_group = args.log_group or os.environ.get(LOG_GROUP_ENV)
    try:
        if log_group and not args.file:
            records = read_insights(log_group, filters, args.limit)
        else:
            path = args.file or os.environ.get(FILE_ENV) or _audit_file(args.config)
            records = read_file(path, filters)[-args.limit :]
    except AuditQueryError as exc:
        print(f"tollway: {exc}", file=err)
        return 1
    out.write(render(records, args.json))
    return 0


def _audit_file(config_path: str | None) -> str:
    from tollway.config import AuditConfig

    if config_path is not None:
        return load_config(config_path).audit.file  # ConfigError: exit 2 in the CLI
    try:
        return load_config().audit.file
    except ConfigError:
        return AuditConfig().file


def _backend(args: argparse.Namespace) -> Backend:
    return backend(url=args.url, token=args.token, table=args.table, config_path=args.config)


def usage_command(args: argparse.Namespace, admin: Backend) -> int:
    """`tollway usage report`: one month's report on stdout (prices: `finance.cost_model`)."""
    from tollway.finance.report import parse_month

    try:
        parse_month(args.month)
    except ValueError:
        print(f"tollway: --month must be YYYY-MM, e.g. 2026-11 (got {args.month!r})", file=sys.stderr)
        return 2
    if args.tenant is not None and not args.tenant.strip():
        print("tollway: --tenant must not be empty", file=sys.stderr)
        return 2
    sys.stdout.write(admin.usage_report(args.month, args.tenant, args.format))
    return 0


def upstream_command(args: argparse.Namespace, admin: Backend) -> int:
    if args.upstream_command == "pending":
        pending = admin.pending_definitions()["pending"]
        for pin in pending:
            print(f"{pin['upstream']}\t{pin['kind']}\t{pin['name']}\t{pin['state']}\t{pin['servedHash']}")
        if not pending:
            print("nothing awaits approval")
        return 0
    pin = admin.approve_definition(args.upstream, args.kind, args.name, args.by)
    print(
        f"approved {pin['upstream']} {pin['kind']} {pin['name']} ({pin['approvedHash'][:12]}…) by {pin['approvedBy']}"
    )
    return 0


def upstreams_command(args: argparse.Namespace, admin: Backend) -> int:
    answer = admin.list_upstreams()
    if answer["observedBy"] is None:
        print(
            "tollway: era, health and tools are known only to a running gateway (use --url and --token)",
            file=sys.stderr,
        )
    else:
        print(f"tollway: era, health and tools as observed by {answer['observedBy']} of the gateway", file=sys.stderr)
    print("NAME\tHOST\tPROTOCOL\tERA\tCIRCUIT\tTOOLS\tAPPROVED\tPENDING\tDRIFTED")
    for row in answer["upstreams"]:
        health, pins = row["health"], row["pins"]
        cells = [
            row["name"],
            row["host"],
            row["protocol"],
            _era(row["era"]) if health is not None else "-",
            (health["circuit"] + (" (probe failed)" if health["probeFailed"] else "")) if health else "-",
            "-" if row["tools"] is None else str(row["tools"]),
            str(pins["approved"]),
            str(pins["pending"]),
            str(pins["drifted"]),
        ]
        print("\t".join(cells))
    return 0


def _era(era: dict[str, bool | None] | None) -> str:
    if era is None:
        return "not probed"
    spoken = [name for name in ("2026-07-28", "2025") if era[name]]
    unknown = [name for name in ("2026-07-28", "2025") if era[name] is None]
    return "+".join(spoken) + (f" ({'+'.join(unknown)}: not asked yet)" if unknown else "")


def sessions_command(args: argparse.Namespace, admin: Backend) -> int:
    if args.sessions_command == "end":
        ended = admin.end_session(args.id, args.by)
        upstreams = ", ".join(ended["upstreamSessionsEnded"]) or "none"
        print(f"ended session {ended['id']} of {ended['tenant']}/{ended['subject']} (upstream sessions: {upstreams})")
        return 0
    sessions, cursor = [], None
    while True:  # every page
        page = admin.list_sessions(args.tenant, cursor)
        sessions.extend(page["sessions"])
        cursor = page.get("nextCursor")
        if cursor is None:
            break
    if args.format == "json":
        print(json.dumps({"tenant": args.tenant, "sessions": sessions}, indent=2, ensure_ascii=False))
        return 0
    print("ID\tSUBJECT\tCLIENT\tCREATED\tLAST USED\tUPSTREAM SESSIONS")
    for session in sessions:
        client = " ".join(v for v in (session["client"]["name"], session["client"]["version"]) if v) or "-"
        upstreams = ",".join(u["upstream"] for u in session["upstreamSessions"]) or "-"
        created, used = session["createdAt"] or "-", session["lastUsed"] or "-"
        print(f"{session['id']}\t{session['subject']}\t{client}\t{created}\t{used}\t{upstreams}")
    return 0


def approvals_command(args: argparse.Namespace, admin: Backend) -> int:
    """`tollway approvals list|approve|deny`: one line per approval, or the decision taken."""
    if args.approvals_command == "list":
        rows = admin.list_approvals(args.status, args.tenant)
        for row in rows:
            expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["expiresAt"]))
            print(f"{row['id']}\t{row['status']}\t{row['tenant']}\t{row['subject']}\t{row['tool']}\texpires {expires}")
        if not rows:
            print("no approvals")
        return 0
    decided = admin.decide_approval(args.id, args.approvals_command == "approve", args.by)
    print(f"{decided['status']} {decided['id']} ({decided['tool']} for {decided['tenant']}/{decided['subject']})")
    return 0


ADMIN_COMMANDS: dict[str, Callable[[argparse.Namespace, Backend], int]] = {
    "usage": usage_command,
    "upstream": upstream_command,
    "upstreams": upstreams_command,
    "sessions": sessions_command,
    "approvals": approvals_command,
}


def print_token(args: argparse.Namespace) -> int:
    """A token for the running `tollway dev`: its issuer and key, and its audience, or that of
    another config named with --config / TOLLWAY_CONFIG."""
    from tollway.auth.dev import mint, signing_key

    if args.ttl <= 0 or args.ttl > 7 * 86400:
        raise CommandError("--ttl must be between 1 and 604800 seconds", status=2)
    dev = running_dev()
    if dev is None:
        raise CommandError(NO_RUNNING_DEV)
    if dev.issuer is None:
        raise CommandError("the running `tollway dev` trusts the issuer its config names: get a token from that issuer")
    source = config_source(args.config)
    config = load_config(source)
    # The dev's own config: its audience as served (a loopback resource follows the port).
    audience = dev.audience if _same_source(source, dev.config) else config.audience
    token = mint(
        signing_key(),
        subject=args.sub,
        tenant=args.tenant,
        audience=audience,
        tenant_claim=config.auth.tenant_claim,
        scopes=args.scope,
        ttl=args.ttl,
        issuer=dev.issuer,
    )
    print(token)
    return 0


def _same_source(source: str, other: str | None) -> bool:
    if other is None or source.startswith("ssm:"):
        return source == other
    return os.path.abspath(source) == other


if __name__ == "__main__":
    sys.exit(main())
