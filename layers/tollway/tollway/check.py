"""`tollway check [--config F] [--probe]`: is a config one the gateway would serve, and what do its
upstreams offer?

Offline, the config is loaded and the gateway built from it exactly as a cold start or a live
change does (`tollway.live`): what the check refuses, the gateway refuses. `--probe` then asks
every upstream, with the gateway's own upstream client and router, what era it speaks and what it
lists, and judges each definition with the definition gate's own decisions
(`policy.definitions.review`): invalid, drifted from its pin, awaiting approval, or poisoned.
Pins are read from the DynamoDB table (TOLLWAY_TABLE, AWS_ENDPOINT_URL_DYNAMODB) when it
answers; nothing is written.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import TextIO

from tollway import spec
from tollway.config import GatewayConfig, config_source, load_config
from tollway.context import ANONYMOUS, RequestContext
from tollway.errors import ConfigError, StorageError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from tollway.policy.definitions import Review, review
from tollway.routing.catalog import CAPABILITY
from tollway.routing.router import Router
from tollway.store.pins import Pin
from tollway.store.sessions import MemorySessionStore

NOUNS = {"tools": "tool", "prompts": "prompt", "resources": "resource", "resourceTemplates": "resource template"}
"""The lists a probe reads, and what their items are called."""


def check(config_path: str | None, probe: bool, out: TextIO, err: TextIO) -> int:
    """Print what the check found; the exit status (1: the config or an upstream has a problem)."""
    from tollway.http import create_app
    from tollway.store import Stores

    source = config_source(config_path)
    try:
        config = load_config(source)
        create_app(config, stores=Stores.memory())  # what the gateway would refuse to build
    except ConfigError as exc:
        print(f"tollway: {exc}", file=err)
        return 1
    print(f"ok: {source}: {_summary(config)}", file=out)
    if not probe:
        return 0
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    pins, why = _read_pins(config)
    problems = 0
    for report in asyncio.run(probe_upstreams(config, pins)):
        problems += report.problems
        for line in report.lines():
            print(line, file=out)
    print("pins: checked" if why is None else f"pins: not checked ({why})", file=out)
    return 1 if problems else 0


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _summary(config: GatewayConfig) -> str:
    return ", ".join(
        [
            _counted(len(config.upstreams), "upstream"),
            _counted(len(config.tenants), "tenant"),
            _counted(len(config.virtual_servers), "virtual server"),
            _counted(len(config.quotas.plans), "quota plan"),
        ]
    )


def _read_pins(config: GatewayConfig) -> tuple[dict[str, dict[tuple[str, str], Pin]] | None, str | None]:
    """Every upstream's pins, or None and why they could not be read."""
    if not config.definitions.pinning:
        return None, "definitions.pinning is off"
    from tollway.store.pins import DynamoPinStore
    from tollway.store.table import use_local_credentials_for_loopback

    use_local_credentials_for_loopback()
    store = DynamoPinStore()
    try:
        return {u.name: store.get_all(u.name) for u in config.upstreams}, None
    except StorageError:
        return None, f"DynamoDB table {store.table_name} unreachable"


@dataclass
class UpstreamReport:
    name: str
    era: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    findings: list[Review] = field(default_factory=list)
    failure: str | None = None
    """`unreachable (UpstreamTimeout: …)`, `failed (…)`: why the upstream could not be probed."""

    @property
    def problems(self) -> int:
        return (self.failure is not None) + sum(f.withheld for f in self.findings)

    def lines(self) -> list[str]:
        if self.failure is not None:
            return [f"{self.name}: {self.failure}"]
        offered = ", ".join(_counted(n, NOUNS[key]) for key, n in self.counts.items()) or "nothing listed"
        lines = [f"{self.name}: {self.era}, {offered}"]
        for finding in self.findings:
            lines.append(f"  {finding.verdict} {finding.kind} {finding.name}: {finding.reason}")
        return lines


async def probe_upstreams(
    config: GatewayConfig, pins: dict[str, dict[tuple[str, str], Pin]] | None
) -> list[UpstreamReport]:
    """Each upstream's era, lists and gate findings, asked concurrently as the gateway asks."""
    router = Router(config, MemorySessionStore())
    ctx = RequestContext(principal=ANONYMOUS, modern=True, protocol_version=spec.LATEST_MODERN_VERSION)
    try:
        return list(
            await asyncio.gather(
                *(_probe(router, ctx, u.name, config, None if pins is None else pins[u.name]) for u in config.upstreams)
            )
        )
    finally:
        from tollway.routing.upstream import http_client

        await http_client().aclose()


async def _probe(
    router: Router,
    ctx: RequestContext,
    name: str,
    config: GatewayConfig,
    pins: dict[tuple[str, str], Pin] | None,
) -> UpstreamReport:
    report = UpstreamReport(name)
    try:
        info = await router.info(name, ctx)
        report.era = spec.LATEST_MODERN_VERSION if info.modern else "2025 era"
        for list_key in NOUNS:
            if CAPABILITY[list_key] not in info.capabilities:
                continue
            items = list((await router.catalog.refresh(ctx, name, list_key)).values())
            report.counts[list_key] = len(items)
            report.findings += review(name, list_key, items, pins, config.definitions)
    except UpstreamError as exc:
        what = "unreachable" if isinstance(exc, UpstreamUnavailable | UpstreamTimeout) else "failed"
        report.failure = f"{what} ({type(exc).__name__}: {exc.message})"
    except Exception as exc:  # boundary: one line per upstream, never a traceback
        report.failure = f"failed ({type(exc).__name__})"
    return report
