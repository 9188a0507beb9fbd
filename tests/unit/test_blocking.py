"""Where a blocking store call runs (`tollway.blocking`): inline while its request is the only one
in flight, in a worker thread while others are."""

from __future__ import annotations

import threading

import anyio
import pytest
from tollway import blocking
from tollway.blocking import run_blocking, serving


def where_it_ran() -> int:
    return threading.get_ident()


def test_a_lone_request_runs_its_blocking_call_on_the_loops_thread() -> None:
    async def request() -> tuple[int, int]:
        with serving({"type": "http"}):
            return threading.get_ident(), await run_blocking(where_it_ran)

    loop_thread, ran_on = anyio.run(request)

    assert ran_on == loop_thread


def test_while_another_request_is_in_flight_the_call_runs_in_a_worker_thread() -> None:
    async def request() -> tuple[int, int]:
        with serving({"type": "http"}), serving({"type": "http"}):
            return threading.get_ident(), await run_blocking(where_it_ran)

    loop_thread, ran_on = anyio.run(request)

    assert ran_on != loop_thread


def test_a_request_is_counted_once_however_many_layers_enter_it() -> None:
    """The live gateway and the app's outermost middleware both enter it for the same request."""
    scope = {"type": "http"}

    async def request() -> tuple[int, int]:
        with serving(scope), serving(scope):
            return threading.get_ident(), await run_blocking(where_it_ran)

    loop_thread, ran_on = anyio.run(request)

    assert ran_on == loop_thread
    assert blocking._in_flight == 0


def test_the_count_falls_back_when_a_request_fails_and_other_scopes_are_not_counted() -> None:
    with pytest.raises(RuntimeError), serving({"type": "http"}), serving({"type": "http"}):
        assert blocking._in_flight == 2
        raise RuntimeError("the request failed")
    with serving({"type": "lifespan"}), serving({"type": "websocket"}):
        assert blocking._in_flight == 0
    assert blocking._in_flight == 0
