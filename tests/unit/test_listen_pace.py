"""The pace of a listen stream (`Listener._paced`), on both event loops the gateway runs on:
a check every `http.listen_check_seconds` until the stream's time is up, never an end before it.

uvloop fires timers on a millisecond clock read once per loop iteration, so a wait may end a
moment before `time.monotonic()` reaches its deadline: the pace must not take such an early
check for the end of the stream (it once did, and streams ended after their first check).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import uvloop
from tollway.protocol.listen import Listener

CHECK_SECONDS = 0.01
STREAM_SECONDS = 1.0


async def _pace(queue: asyncio.Queue[dict[str, Any]]) -> tuple[list[Any], float]:
    owner = SimpleNamespace(config=SimpleNamespace(http=SimpleNamespace(listen_check_seconds=CHECK_SECONDS)))
    started = time.monotonic()
    seen = [item async for item in Listener._paced(owner, queue, started + STREAM_SECONDS)]  # type: ignore[arg-type]
    return seen, time.monotonic() - started


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_a_stream_checks_on_its_pace_until_its_time_is_up(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    loop = new_loop()
    try:
        seen, lasted = loop.run_until_complete(_pace(asyncio.Queue()))
    finally:
        loop.close()
    assert lasted >= STREAM_SECONDS - 0.005  # not ended by an early timer
    assert set(seen) == {None}
    # One check per CHECK_SECONDS: at least half of them even on a loaded machine.
    assert len(seen) >= STREAM_SECONDS / CHECK_SECONDS / 2


@pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_a_message_in_the_queue_is_passed_on_between_checks(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> None:
    async def run() -> list[Any]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        asyncio.get_running_loop().call_later(0.1, queue.put_nowait, {"method": "notifications/x"})
        seen, _ = await _pace(queue)
        return seen

    loop = new_loop()
    try:
        seen = loop.run_until_complete(run())
    finally:
        loop.close()
    assert [item for item in seen if item is not None] == [{"method": "notifications/x"}]
