"""Finance: per-tenant usage and estimated cost, by tool and day, for one month.

report.py   summarize / estimate_cost / render (table, CSV, JSON): pure functions
admin.py    GET /admin/usage, for a token with `finance.admin_scope`
usage_report()  `tollway usage report`, reading the usage table with the normal boto3
                environment (TOLLWAY_TABLE; AWS_ENDPOINT_URL_DYNAMODB for a local DynamoDB)
"""

from __future__ import annotations

import sys
from typing import TextIO

from tollway.config import CostModel, load_config
from tollway.errors import ConfigError
from tollway.store.table import use_local_credentials_for_loopback


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

    from botocore.exceptions import BotoCoreError, ClientError

    from tollway.store.usage import UsageStore

    store = UsageStore()
    try:
        rows = store.month(month, tenant)
    except (BotoCoreError, ClientError) as exc:
        print(f"tollway: cannot read usage from DynamoDB table {store.table_name}: {exc}", file=err)
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
