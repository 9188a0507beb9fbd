"""The `tollway` command: local gateway and operator tools."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import quote

from tollway.config import CostModel, GatewayConfig, load_config
from tollway.errors import ConfigError, StorageError
from tollway.policy.approvals import STATUS_FILTERS
from tollway.store.table import use_local_credentials_for_loopback


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tollway", description="Tollway MCP gateway")
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="run the gateway locally (embedded DynamoDB, demo upstreams)")
    dev.add_argument("--config", help="gateway.yaml path (default: $TOLLWAY_CONFIG or gateway.yaml)")
    dev.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")

    token = commands.add_parser("token", help="print a token the dev gateway accepts (dev signing key)")
    token.add_argument("--sub", required=True, help="subject (user or agent id)")
    token.add_argument("--tenant", required=True, help="tenant id")
    token.add_argument("--scope", default="", help='space-separated scopes, e.g. "tools:read finance"')
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    token.add_argument("--config", help="gateway.yaml whose resource is the audience (default as `dev`)")

    usage = commands.add_parser("usage", help="finance: usage and estimated cost per tenant, tool and day")
    usage_commands = usage.add_subparsers(dest="usage_command", required=True)
    report = usage_commands.add_parser("report", help="one month's usage report from the DynamoDB table")
    report.add_argument("--month", required=True, help="YYYY-MM (UTC days)")
    report.add_argument("--tenant", help="one tenant only (default: every tenant)")
    report.add_argument("--format", choices=["table", "csv", "json"], default="table", help="default: table")
    report.add_argument("--config", help="gateway.yaml with finance.cost_model (default as `dev`)")

    upstream = commands.add_parser("upstream", help="operators: upstream definitions awaiting approval")
    upstream_commands = upstream.add_subparsers(dest="upstream_command", required=True)
    pending = upstream_commands.add_parser("pending", help="definitions that changed or await approval")
    pending.add_argument("--config", help="gateway.yaml naming the upstreams (default as `dev`)")
    approve = upstream_commands.add_parser("approve", help="approve (pin) an upstream's current definition")
    approve.add_argument("upstream", help="upstream name, as in gateway.yaml")
    approve.add_argument("name", help="the definition's own name at the upstream (tool/prompt name or URI)")
    approve.add_argument("--kind", choices=["tool", "resource", "resource_template", "prompt"], default="tool")
    approve.add_argument("--by", default=os.environ.get("USER", "operator"), help="who approves (audit)")
    approve.add_argument("--config", help="gateway.yaml naming the upstreams (default as `dev`)")

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

    approvals = commands.add_parser(
        "approvals",
        help="approvers: tool calls waiting for a human decision",
        description="Through the admin API with --url/--token (or TOLLWAY_URL/TOLLWAY_TOKEN); "
        "otherwise straight on the DynamoDB table (TOLLWAY_TABLE, AWS_ENDPOINT_URL_DYNAMODB).",
    )
    approvals_commands = approvals.add_subparsers(dest="approvals_command", required=True)
    listing = approvals_commands.add_parser("list", help="approvals, newest first")
    listing.add_argument("--status", choices=STATUS_FILTERS)
    listing.add_argument("--tenant", help="one tenant only")
    for name, text in (("approve", "approve a pending call (it may then run once)"), ("deny", "deny a pending call")):
        decide = approvals_commands.add_parser(name, help=text)
        decide.add_argument("id", help="the approval id")
        decide.add_argument("--by", default=os.environ.get("USER", "operator"), help="who decides (direct mode)")
    for sub in approvals_commands.choices.values():
        sub.add_argument("--url", default=os.environ.get("TOLLWAY_URL"), help="gateway base URL (admin API)")
        sub.add_argument("--token", default=os.environ.get("TOLLWAY_TOKEN"), help="bearer token with the admin scope")
        sub.add_argument("--config", help="gateway.yaml (direct mode; default as `dev`)")

    args = parser.parse_args(argv)
    if args.command != "dev":
        # Operator commands print their answer on stdout: structured logs go to stderr.
        from tollway.telemetry import logger

        logger.registered_handler.setStream(_CurrentStderr())
    try:
        if args.command == "dev":
            from tollway.dev import run_dev

            return run_dev(config_path=args.config, port=args.port)
        if args.command == "token":
            return print_token(args)
        if args.command == "usage":
            return usage_report(args.month, tenant=args.tenant, format=args.format, config_path=args.config)
        if args.command == "upstream":
            return upstream_command(args)
        if args.command == "audit":
            return audit_command(args)
        if args.command == "approvals":
            return approvals_command(args)
    except ConfigError as exc:
        print(f"tollway: {exc}", file=sys.stderr)
        return 2
    return 1


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


def upstream_command(args: argparse.Namespace) -> int:
    from tollway.policy.definitions import DefinitionGate, NothingToApprove
    from tollway.store.pins import DynamoPinStore
    from tollway.store.table import use_local_credentials_for_loopback

    config = load_config(args.config)
    use_local_credentials_for_loopback()
    store = DynamoPinStore()
    if args.upstream_command == "pending":
        pins = store.list_pending(u.name for u in config.upstreams)
        for pin in pins:
            print(f"{pin.upstream}\t{pin.kind}\t{pin.name}\t{pin.state}\t{pin.served_hash}")
        if not pins:
            print("nothing awaits approval")
        return 0
    if args.upstream not in {u.name for u in config.upstreams}:
        print(f"tollway: unknown upstream {args.upstream!r}", file=sys.stderr)
        return 2
    try:
        pin = DefinitionGate(config.definitions, store).approve(args.upstream, args.kind, args.name, args.by)
    except NothingToApprove:
        print(f"tollway: no pending {args.kind} {args.name!r} on {args.upstream}", file=sys.stderr)
        return 1
    print(f"approved {pin.upstream} {pin.kind} {pin.name} ({pin.hash[:12]}…) by {pin.approved_by}")
    return 0


def approvals_command(args: argparse.Namespace) -> int:
    """`tollway approvals list|approve|deny`: one line per approval, or the decision taken."""
    if args.url or args.token:
        if not (args.url and args.token):
            print("tollway: --url and --token go together (or TOLLWAY_URL and TOLLWAY_TOKEN)", file=sys.stderr)
            return 2
        rows = _approvals_over_http(args)
    else:
        rows = _approvals_direct(args)
    if rows is None:
        return 1
    if args.approvals_command == "list":
        for row in rows:
            expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["expiresAt"]))
            print(f"{row['id']}\t{row['status']}\t{row['tenant']}\t{row['subject']}\t{row['tool']}\texpires {expires}")
        if not rows:
            print("no approvals")
        return 0
    decided = rows[0]
    print(f"{decided['status']} {decided['id']} ({decided['tool']} for {decided['tenant']}/{decided['subject']})")
    return 0


def _approvals_over_http(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    import httpx

    base = args.url.rstrip("/").removesuffix("/mcp")
    headers = {"authorization": f"Bearer {args.token}"}
    try:
        if args.approvals_command == "list":
            query = {k: v for k, v in (("status", args.status), ("tenant", args.tenant)) if v}
            reply = httpx.get(f"{base}/admin/approvals", params=query, headers=headers, timeout=30)
        else:
            reply = httpx.post(
                f"{base}/admin/approvals/{quote(args.id, safe='')}/{args.approvals_command}",
                headers=headers,
                timeout=30,
            )
    except httpx.HTTPError as exc:
        print(f"tollway: cannot reach {base}: {type(exc).__name__}", file=sys.stderr)
        return None
    try:
        body = reply.json()
    except ValueError:
        body = {}
    if reply.status_code != 200:
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        print(f"tollway: {reply.status_code} {message or reply.reason_phrase}", file=sys.stderr)
        return None
    return body["approvals"] if args.approvals_command == "list" else [body]


def _approvals_direct(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    from tollway.errors import GatewayError
    from tollway.policy.approvals import Approvals
    from tollway.store.approvals import DynamoApprovalStore

    use_local_credentials_for_loopback()
    store = DynamoApprovalStore()
    config = load_config(args.config)
    approvals = Approvals(config, store)
    try:
        if args.approvals_command == "list":
            return approvals.listing(args.status, args.tenant)
        decided = approvals.decide(args.id, args.approvals_command == "approve", f"cli/{args.by}")
        _audit_cli_action(config, args.by, f"approvals.{args.approvals_command}", decided.id)
        return [approvals.view(decided)]
    except GatewayError as exc:
        print(f"tollway: {exc.message}", file=sys.stderr)
    except StorageError as exc:
        print(
            f"tollway: cannot reach DynamoDB table {store.table_name}: {type(exc.__cause__).__name__}", file=sys.stderr
        )
    return None


def _audit_cli_action(config: GatewayConfig, by: str, action: str, target: str) -> None:
    """An operator's decision made straight on the table: an admin audit record, where the
    gateway's records go from here (`TOLLWAY_AUDIT_LOG_GROUP`, `TOLLWAY_AUDIT_FILE`, else `audit.file`)."""
    import uuid
    from types import SimpleNamespace

    from tollway.telemetry.audit import AuditLog, admin_record

    operator = SimpleNamespace(tenant=None, subject=f"cli/{by}"[:128])
    record = admin_record(
        request_id=f"cli-{uuid.uuid4().hex}",
        principal=operator,
        action=action,
        target=target,
        outcome="ok",
        status=200,
        ms=0.0,
    )
    AuditLog.create(config.audit.file).write(record)


def usage_report(
    month: str,
    *,
    tenant: str | None = None,
    format: str = "table",
    config_path: str | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """`tollway usage report`: print one month's report; the exit status (2 = bad arguments).
    Reads the usage table with the normal boto3 environment (TOLLWAY_TABLE;
    AWS_ENDPOINT_URL_DYNAMODB for a local DynamoDB).

    Prices come from `finance.cost_model` in the config. A config named with `--config` must
    load; without one, an unreadable default (`$TOLLWAY_CONFIG` or `gateway.yaml`) means the
    default prices, said on stderr, since the counts do not depend on it.
    """
    from tollway.finance.report import FORMATS, parse_month, render, summarize

    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        parse_month(month)
    except ValueError:
        print(f"tollway: --month must be YYYY-MM, e.g. 2026-11 (got {month!r})", file=err)
        return 2
    if tenant is not None and not tenant.strip():
        print("tollway: --tenant must not be empty", file=err)
        return 2
    if format not in FORMATS:
        print(f"tollway: --format must be one of {', '.join(FORMATS)}", file=err)
        return 2
    model = _cost_model(config_path, err)
    use_local_credentials_for_loopback()

    from tollway.store.usage import UsageStore

    store = UsageStore()
    try:
        rows = store.month(month, tenant)
    except StorageError as exc:
        print(f"tollway: cannot read usage from DynamoDB table {store.table_name}: {exc.__cause__}", file=err)
        return 1
    out.write(render(summarize(rows, month, tenant=tenant, model=model), format))  # type: ignore[arg-type]
    return 0


def _cost_model(config_path: str | None, err: TextIO) -> CostModel:
    if config_path is not None:
        return load_config(config_path).finance.cost_model  # ConfigError: exit 2 in the CLI
    try:
        return load_config().finance.cost_model
    except ConfigError as exc:
        print(f"tollway: {exc}; estimating cost with the default cost model", file=err)
        return CostModel()


def print_token(args: argparse.Namespace) -> int:
    from tollway.auth.dev import mint, signing_key

    if args.ttl <= 0 or args.ttl > 7 * 86400:
        print("tollway: --ttl must be between 1 and 604800 seconds", file=sys.stderr)
        return 2
    config = load_config(args.config)
    print(
        mint(
            signing_key(),
            subject=args.sub,
            tenant=args.tenant,
            audience=config.audience,
            tenant_claim=config.auth.tenant_claim,
            scopes=args.scope,
            ttl=args.ttl,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
