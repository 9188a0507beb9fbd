"""The `tollway` command: local gateway and operator tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tollway.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tollway", description="Tollway MCP gateway")
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="run the gateway locally (embedded DynamoDB, demo upstreams)")
    dev.add_argument("--config", help="gateway.yaml path (default: $TOLLWAY_CONFIG or gateway.yaml)")
    dev.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")

    args = parser.parse_args(argv)
    try:
        if args.command == "dev":
            from tollway.dev import run_dev

            return run_dev(config_path=args.config, port=args.port)
    except ConfigError as exc:
        print(f"tollway: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
