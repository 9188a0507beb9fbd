"""Live configuration: the gateway rebuilt from its config source while it runs, without a deploy.

`LiveGateway` is the ASGI app Lambda (`functions/gateway/app.py`) and `tollway dev` serve. It
reads the source (a file, `ssm:/name` or `appconfig:application/environment/profile`) once at
start, where an invalid config fails closed, and again at most once per TTL
(`TOLLWAY_CONFIG_TTL_SECONDS`, default 30) between requests:

- the request that finds the TTL passed waits for the read (in a worker thread, so the event loop
  keeps serving), then is served by what the source holds; requests arriving meanwhile do not
  wait (served by the current app): there is never more than one read at a time;
- unchanged text: nothing happens. Changed text is parsed, validated and built into a whole new
  app exactly as at start (`build`, i.e. `create_app`: what it refuses is refused); then new
  requests go to the new app while requests in flight finish on the old one;
- an invalid config is refused: logged (what is wrong, never the text), counted
  (`ConfigRejected`), and the last good config keeps serving. It is checked again every TTL while
  the source holds it, so the metric keeps saying so. A source that cannot be read (SSM
  throttling, a missing permission) keeps the last good config too, logged as a warning.
"""

from __future__ import annotations

import gc
import importlib
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from tollway.blocking import run_in_thread, serving
from tollway.config import GatewayConfig, config_from_text, config_source, config_ttl, read_source
from tollway.errors import ConfigError
from tollway.telemetry import count, logger

Build = Callable[[GatewayConfig, Any], ASGIApp]
"""`build(config, previous_app)`: the gateway app for `config` (ConfigError if it cannot be
built); `previous_app` is the one it replaces (None at start), whose unchanged parts it may keep."""
Read = Callable[[str, float], str]


class LiveGateway:
    def __init__(self, source: str, build: Build, *, ttl: float, read: Read = read_source) -> None:
        """Reads and builds the first config now: a ConfigError here means there is no last good
        config to fall back on, so the gateway must not start."""
        self.source = source
        self.ttl = ttl
        self._build = build
        self._read = read
        self._text = read(source, ttl)
        self.config = config_from_text(self._text, source)
        self.current: Any = build(self.config, None)
        """The app now serving (a Starlette app)."""
        self._next_check = time.monotonic() + ttl
        self._refreshing = False

    @property
    def state(self) -> Any:
        """The serving app's state (its config and parts)."""
        return self.current.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with serving(scope):  # counted from here, where a refresh may make this request wait
            # The only cost on a request's path: one clock read and two comparisons.
            if self.ttl > 0 and not self._refreshing and time.monotonic() >= self._next_check:
                await self.refresh()
            await self.current(scope, receive, send)  # in flight, a request keeps the app it started on

    async def refresh(self) -> bool:
        """Read the source and apply a changed, valid config. True when a new config was applied."""
        if self._refreshing:
            return False
        self._refreshing = True
        try:
            try:
                text = await run_in_thread(self._read, self.source, self.ttl)
            except ConfigError as exc:
                logger.warning(
                    "config source unreadable: the last good config keeps serving",
                    extra={"source": self.source, "reason": str(exc)},
                )
                return False
            if text == self._text:
                return False
            try:
                config = config_from_text(text, self.source)
                app = self._build(config, self.current)
            except Exception as exc:
                self._reject(exc)
                return False
            self._text, self.config, self.current = text, config, app
            gc.unfreeze()  # what the replaced app held since start can be collected (deployed())
            logger.info("config applied", extra={"source": self.source})
            return True
        finally:
            self._next_check = time.monotonic() + self.ttl
            self._refreshing = False

    def _reject(self, exc: Exception) -> None:
        # A ConfigError says what is wrong without quoting values; anything else may carry
        # internals (or secrets), so only its type is logged.
        problem = str(exc) if isinstance(exc, ConfigError) else f"the gateway cannot be built: {type(exc).__name__}"
        logger.error(
            "config rejected: the last good config keeps serving",
            extra={"source": self.source, "problem": problem},
        )
        count("ConfigRejected")


def deployed() -> LiveGateway:
    """The gateway as a deployed function serves it, buffered (`functions/gateway/app.py`) or
    streamed (`functions/gateway/streaming.py`): the config from `$TOLLWAY_CONFIG`, read again
    every `$TOLLWAY_CONFIG_TTL_SECONDS`; DynamoDB stores (sessions, counters, pins), the same for
    every config. Built once per instance: warm invocations reuse config, connections and caches.

    Cyclic garbage collection: the entry modules turn it off before their first import, and it is
    turned on again here, once the instance is built, with everything made so far frozen
    (`gc.freeze()`, about 70,000 objects). Those objects (modules, classes, the config and its
    app) live as long as the instance, so collecting among them is wasted work: 32 collections
    during the import, and every later full collection walking them (after the warm-up, a full
    collection walks 55,000 objects instead of 95,000). What is frozen is never collected as
    garbage (refcounting still frees it): the import leaves about 750 objects of cyclic garbage,
    kept for the instance's life. A config change unfreezes them (`LiveGateway.refresh`), so the
    app it replaces can be collected."""
    from tollway.http import create_app
    from tollway.store import Stores

    stores = Stores.dynamo()
    try:
        gateway = LiveGateway(
            config_source(),
            lambda config, previous: create_app(config, stores=stores, previous=previous),
            ttl=config_ttl(),
        )
        gc.freeze()
    finally:
        gc.enable()  # also when the start fails: whoever handles the error has a collector again
    threading.Thread(target=warm_up, args=(gateway, stores), name="tollway-warm-up", daemon=True).start()
    return gateway


def warm_up(gateway: LiveGateway, stores: Any) -> None:
    """What an instance's first request would otherwise do itself, begun at init in a thread of
    its own so the import does not wait for it: the DynamoDB client (botocore's import and client
    are the largest part of a first request), the modules the request path imports on first use,
    and the JWKS. It overlaps the first request's own waits (upstream exchanges); the request
    takes whatever is ready and makes the rest itself (each part is made once, under a lock). A
    step that fails is the first request's to do again; a freeze pauses the thread, no more."""
    verifier = gateway.state.verifier
    steps: list[tuple[str, Callable[[], Any]]] = [  # in the order the first request needs them
        ("jwks", verifier.prefetch if verifier is not None else lambda: None),
        ("modules", _import_first_use_modules),
        ("dynamodb client", stores.connect),
    ]
    for name, step in steps:
        try:
            step()
        except Exception as exc:  # never raised into a request: the request redoes the step
            logger.info("warm-up step failed", extra={"step": name, "error": type(exc).__name__})


FIRST_USE_MODULES = (
    "jsonschema.validators",  # tool arguments (tollway.policy.arguments)
    "tollway.masking.redact",  # the detectors, whose patterns are compiled at import (masking)
)


def _import_first_use_modules() -> None:
    for module in FIRST_USE_MODULES:
        importlib.import_module(module)
