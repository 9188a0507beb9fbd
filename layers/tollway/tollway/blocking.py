"""Blocking store I/O (DynamoDB, Secrets Manager) from the request path: one rule for where it runs.

Where requests share the event loop (the local server, the streaming deployment), a blocking call
runs in a worker thread, so it never stalls the other requests. On the buffered deployment a
Lambda instance serves one invocation at a time: nothing else waits on the loop, and the thread
hop would only cost CPU (about a tenth of a millisecond per call, and a context switch), so the
call runs inline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread

from tollway.config import response_mode

_T = TypeVar("_T")


async def run_blocking(fn: Callable[..., _T], *args: object) -> _T:
    if response_mode() == "buffered":
        return fn(*args)
    return await anyio.to_thread.run_sync(fn, *args)
