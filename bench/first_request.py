"""Where an instance's first request spends its time: each part timed exclusively (a part nested
in another counts only for itself) while that one request runs, in the process `lambda_cost`
measures. Bench-only wrappers; nothing here is on the gateway's path.

Parts: modules imported for the first time (lazily, on first use), the DynamoDB client's
creation (botocore's import and client), the JWKS fetch, DynamoDB requests, upstream exchanges
(probe, initialize, catalog, the call);
the rest (the request's time less those parts) is the gateway's own work on a cold instance:
caches filled, validators and clients built. Only the request's own thread is timed (the
buffered handler runs store calls inline), so the parts do not overlap; the instance's warm-up
(tollway.live.warm_up) runs beside it, and shows only where the request waits for it.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

PARTS = ("DynamoDB client", "first imports", "DynamoDB requests", "upstream exchanges", "JWKS fetch")
"""What `breakdown` times, in the order the summary prints them (then "rest")."""


class _Clock:
    """Times parts on one thread, the request's (the buffered handler runs a request on its
    thread, store calls included); what other threads do meanwhile (the instance's warm-up) is
    only seen where the request waits for it."""

    def __init__(self) -> None:
        self.spent: Counter[str] = Counter()
        self._local = threading.local()
        self.thread = threading.get_ident()

    def _stack(self) -> list[list[Any]]:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    @contextmanager
    def part(self, label: str) -> Iterator[None]:
        if threading.get_ident() != self.thread:
            yield
            return
        stack = self._stack()
        now = time.perf_counter()
        if stack:  # the enclosing part stops counting while this one runs
            outer = stack[-1]
            self.spent[outer[0]] += now - outer[1]
        stack.append([label, now])
        try:
            yield
        finally:
            now = time.perf_counter()
            done = stack.pop()
            self.spent[done[0]] += now - done[1]
            if stack:
                stack[-1][1] = now

    def wrap(self, function: Callable[..., Any], label: str) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(function):  # each step timed; the consumer's work between not

            @functools.wraps(function)
            async def timed_steps(*args: Any, **kwargs: Any) -> Any:
                steps = function(*args, **kwargs)
                try:
                    while True:
                        with self.part(label):
                            try:
                                item = await steps.__anext__()
                            except StopAsyncIteration:
                                return
                        yield item
                finally:
                    await steps.aclose()

            return timed_steps
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                with self.part(label):
                    return await function(*args, **kwargs)

            return timed_async

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.part(label):
                return function(*args, **kwargs)

        return timed


class _Parts(Counter[str]):
    """{part: ms}, and `modules`: {top-level package: ms} of the first imports."""

    def __init__(self) -> None:
        super().__init__()
        self.modules: Counter[str] = Counter()


@contextmanager
def breakdown() -> Iterator[_Parts]:
    """Times the parts while the block runs; yields {part: ms}, filled in when the block ends."""
    import jwt
    from tollway.routing.upstream import UpstreamClient
    from tollway.store.table import DynamoTable

    clock = _Clock()
    real_import = builtins.__import__

    outermost = threading.local()

    def timed_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name in sys.modules:
            return real_import(name, *args, **kwargs)
        if getattr(outermost, "busy", False) or threading.get_ident() != clock.thread:
            return real_import(name, *args, **kwargs)
        outermost.busy = True
        started = time.perf_counter()
        try:
            with clock.part("first imports"):
                return real_import(name, *args, **kwargs)
        finally:
            outermost.busy = False
            result.modules[name.split(".")[0]] += (time.perf_counter() - started) * 1000

    patches = [
        (DynamoTable, "client", property(clock.wrap(DynamoTable.client.fget, "DynamoDB client"))),  # type: ignore[attr-defined]
        (DynamoTable, "_request", clock.wrap(DynamoTable._request, "DynamoDB requests")),
        (jwt.PyJWKClient, "fetch_data", clock.wrap(jwt.PyJWKClient.fetch_data, "JWKS fetch")),
        (UpstreamClient, "exchange", clock.wrap(UpstreamClient.exchange, "upstream exchanges")),
    ]
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in patches]
    result = _Parts()
    for owner, name, replacement in patches:
        setattr(owner, name, replacement)
    builtins.__import__ = timed_import
    try:
        yield result
    finally:
        builtins.__import__ = real_import
        for owner, name, original in saved:
            setattr(owner, name, original)
        result.update({label: seconds * 1000 for label, seconds in clock.spent.items()})
