"""Limits hold under concurrency: many callers, one DynamoDB, exactly the limit admitted.

DynamoDB is moto's server over real HTTP on 127.0.0.1. Every caller plays one Lambda instance:
its own boto3 client and its own QuotaEnforcer. Instances run as threads of this process, or as
separate spawned Python processes. Each test has a table of its own and a frozen clock (the
quota module's `time`), so no window ends in the middle of a test unless the test moves the clock.

moto applies a TransactWriteItems as check-then-write without a lock, and a cancelled one puts
back a copy of the table taken before it started, erasing writes made in the meantime: at 32
concurrent callers it admits 21 of 20 about one run in eight. DynamoDB's transactions are
serializable, so the server here runs one transaction at a time (`serialized_transactions`).
"""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto.dynamodb.models import DynamoDBBackend
from moto.server import ThreadedMotoServer
from tollway.config import parse_config
from tollway.context import Principal
from tollway.policy import quota
from tollway.policy.quota import QuotaEnforcer, QuotaExceeded
from tollway.store.counters import DynamoCounterStore
from tollway.store.tables import ensure_tables, find_template

NOON = datetime(2026, 3, 14, 12, 0, 30, tzinfo=UTC).timestamp()
"""The frozen instant: half a minute into a minute, noon of a day, mid-month."""
LIMIT = 20
MAX_THREADS = 32


class FrozenClock:
    """Stands in for the `time` module in tollway.policy.quota; tests move `now` by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def quota_config(
    limits: dict[str, int], *, costs: dict[str, int] | None = None, lease_units: int = 1
) -> dict[str, Any]:
    return {
        "resource": "https://gateway.example.com/mcp",
        "auth": {"allow_anonymous": True},
        "upstreams": [{"name": "finance", "url": "http://127.0.0.1:9/mcp"}],
        "quotas": {
            "plans": {"plan": {"tenant": limits}},
            "default_plan": "plan",
            "costs": costs or {},
            "lease_units": lease_units,
        },
    }


# --- DynamoDB over HTTP --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    original = DynamoDBBackend.transact_write_items
    lock = threading.Lock()

    def serialized_transactions(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
        with lock:
            original(self, transact_items)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DynamoDBBackend, "transact_write_items", serialized_transactions)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


def dynamodb(endpoint: str, session: boto3.session.Session | None = None) -> Any:
    config = Config(max_pool_connections=MAX_THREADS, retries={"total_max_attempts": 1})
    return (session or boto3.session.Session()).client("dynamodb", endpoint_url=endpoint, config=config)


@pytest.fixture(scope="module")
def clients(endpoint: str) -> list[Any]:
    """One client per instance (made up front: creating clients is not thread-safe)."""
    session = boto3.session.Session()
    return [dynamodb(endpoint, session) for _ in range(MAX_THREADS)]


@pytest.fixture
def table(clients: list[Any]) -> str:
    name = f"quota-{uuid.uuid4().hex[:12]}"
    ensure_tables(clients[0], find_template(), {"TollwayTable": name})
    return name


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    clock = FrozenClock(NOON)
    monkeypatch.setattr(quota, "time", clock)
    return clock


@pytest.fixture
def caller() -> Principal:
    return Principal(subject="agent-7", tenant=f"tenant-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def instances(clients: list[Any], table: str) -> Callable[[dict[str, Any], int], list[QuotaEnforcer]]:
    """`instances(config_data, n)`: n warm instances, each with its own client, on this test's table."""

    def start(data: dict[str, Any], n: int) -> list[QuotaEnforcer]:
        config = parse_config(data)
        return [QuotaEnforcer(config, DynamoCounterStore(table, clients[i])) for i in range(n)]

    return start


@pytest.fixture
def count_requests() -> Iterator[Callable[[list[QuotaEnforcer]], dict[str, int]]]:
    """`count_requests(enforcers)`: every HTTP request their clients send to DynamoDB from now on,
    by operation (retries included)."""
    watched: list[tuple[Any, str]] = []

    def watch(enforcers: list[QuotaEnforcer]) -> dict[str, int]:
        counts: dict[str, int] = {}
        lock = threading.Lock()

        def sent(request: Any, **_: Any) -> None:
            target = request.headers["X-Amz-Target"]
            operation = (target.decode() if isinstance(target, bytes) else target).split(".")[-1]
            with lock:
                counts[operation] = counts.get(operation, 0) + 1

        for client in {id(e.store.client): e.store.client for e in enforcers}.values():  # type: ignore[attr-defined]
            unique_id = f"count-requests-{id(counts)}"
            client.meta.events.register("before-send.dynamodb", sent, unique_id=unique_id)
            watched.append((client, unique_id))
        return counts

    yield watch
    for client, unique_id in watched:
        client.meta.events.unregister("before-send.dynamodb", unique_id=unique_id)


def admitted(enforcer: QuotaEnforcer, principal: Principal, tool: str) -> bool:
    try:
        enforcer.admit(principal, tool)
    except QuotaExceeded:
        return False
    return True


def call_concurrently(
    enforcers: list[QuotaEnforcer], principal: Principal, tool: str, attempts: int, threads: int
) -> int:
    """`attempts` calls spread over `threads` threads that start together; thread i calls through
    enforcer i (mod len). Returns how many were admitted."""
    start = threading.Barrier(threads)

    def thread(i: int) -> int:
        start.wait()
        enforcer = enforcers[i % len(enforcers)]
        return sum(admitted(enforcer, principal, tool) for _ in range(i, attempts, threads))

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(thread, range(threads)))


def used(client: Any, table: str, principal: Principal, window: str) -> int:
    item = client.get_item(TableName=table, Key={"pk": {"S": f"LIMIT#{principal.tenant}"}, "sk": {"S": window}})
    return int(item["Item"]["used"]["N"])


MINUTE = f"per_minute#{int(NOON) // 60 * 60}"
DAY = "per_day#2026-03-14"


# --- exact limits --------------------------------------------------------------------------------
@pytest.mark.parametrize("threads", [1, 4, 16, 32])
@pytest.mark.parametrize(
    ("limits", "costs", "window", "units_per_call"),
    [
        ({"per_minute": LIMIT}, {}, MINUTE, 1),
        ({"per_day": LIMIT * 3}, {"finance__*": 3}, DAY, 3),
    ],
    ids=["calls-per-minute", "units-per-day"],
)
def test_exactly_the_limit_of_three_times_as_many_concurrent_calls_is_admitted(
    instances: Callable[..., list[QuotaEnforcer]],
    clients: list[Any],
    table: str,
    clock: FrozenClock,
    caller: Principal,
    threads: int,
    limits: dict[str, int],
    costs: dict[str, int],
    window: str,
    units_per_call: int,
) -> None:
    enforcers = instances(quota_config(limits, costs=costs), threads)

    count = call_concurrently(enforcers, caller, "finance__run_forecast", 3 * LIMIT, threads)

    assert count == LIMIT
    assert used(clients[0], table, caller, window) == LIMIT * units_per_call


def test_threads_of_one_local_server_sharing_an_enforcer_admit_exactly_the_limit(
    instances: Callable[..., list[QuotaEnforcer]], clock: FrozenClock, caller: Principal
) -> None:
    (enforcer,) = instances(quota_config({"per_minute": LIMIT}), 1)

    assert call_concurrently([enforcer], caller, "finance__run_forecast", 3 * LIMIT, 16) == LIMIT


def _lambda_instance(
    endpoint: str, table: str, data: dict[str, Any], tenant: str, attempts: int, now: float, start: Any, out: Any
) -> None:
    """One Lambda instance in a process of its own: cold start, then `attempts` calls."""
    quota.time = FrozenClock(now)  # type: ignore[assignment]  # this process only
    enforcer = QuotaEnforcer(parse_config(data), DynamoCounterStore(table, dynamodb(endpoint)))
    principal = Principal(subject="agent-7", tenant=tenant)
    start.wait(timeout=30)
    out.put(sum(admitted(enforcer, principal, "finance__run_forecast") for _ in range(attempts)))


def test_separate_processes_admit_exactly_the_limit_together(
    endpoint: str, clients: list[Any], table: str, caller: Principal
) -> None:
    processes, attempts = 3, LIMIT  # 3L attempts in all
    spawn = multiprocessing.get_context("spawn")
    start, out = spawn.Barrier(processes), spawn.Queue()
    data = quota_config({"per_minute": LIMIT, "per_day": 1000})
    workers = [
        spawn.Process(
            target=_lambda_instance,
            args=(endpoint, table, data, caller.tenant, attempts, NOON, start, out),
            daemon=True,
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        counts = [out.get(timeout=60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()

    assert sum(counts) == LIMIT
    assert used(clients[0], table, caller, MINUTE) == LIMIT
    assert used(clients[0], table, caller, DAY) == LIMIT


# --- windows end ---------------------------------------------------------------------------------
def test_a_full_second_admits_again_when_the_next_second_begins(
    instances: Callable[..., list[QuotaEnforcer]], clock: FrozenClock, caller: Principal
) -> None:
    (enforcer,) = instances(quota_config({"per_second": 3}), 1)
    clock.now = NOON + 0.25

    first = [admitted(enforcer, caller, "finance__run_forecast") for _ in range(4)]
    with pytest.raises(QuotaExceeded) as refused:
        clock.now = NOON + 0.999
        enforcer.admit(caller, "finance__run_forecast")
    clock.now = NOON + 1
    second = [admitted(enforcer, caller, "finance__run_forecast") for _ in range(4)]

    assert first == second == [True, True, True, False]
    assert refused.value.data == {
        "limit": "tenant per_second",
        "max": 3,
        "resetAt": "2026-03-14T12:00:31+00:00",
        "retryAfterSeconds": 1,
    }


def test_a_full_minute_refuses_until_its_last_instant_and_admits_at_the_next_minute(
    instances: Callable[..., list[QuotaEnforcer]], clock: FrozenClock, caller: Principal
) -> None:
    (enforcer,) = instances(quota_config({"per_minute": 5}), 1)

    first = [admitted(enforcer, caller, "finance__run_forecast") for _ in range(6)]
    with pytest.raises(QuotaExceeded) as at_once:
        enforcer.admit(caller, "finance__run_forecast")
    clock.now = NOON + 29.9
    with pytest.raises(QuotaExceeded) as at_the_end:
        enforcer.admit(caller, "finance__run_forecast")
    clock.now = NOON + 30
    next_minute = [admitted(enforcer, caller, "finance__run_forecast") for _ in range(6)]

    assert first == next_minute == [True] * 5 + [False]
    assert at_once.value.data["retryAfterSeconds"] == 30
    assert at_once.value.headers == {"retry-after": "30"}
    assert at_the_end.value.data["retryAfterSeconds"] == 1
    assert at_once.value.data["resetAt"] == at_the_end.value.data["resetAt"] == "2026-03-14T12:01:00+00:00"


# --- cost units ----------------------------------------------------------------------------------
def test_a_tool_costing_ten_fits_three_times_in_thirty_five_units_and_a_cheap_tool_takes_the_rest(
    instances: Callable[..., list[QuotaEnforcer]],
    clients: list[Any],
    table: str,
    clock: FrozenClock,
    caller: Principal,
) -> None:
    (enforcer,) = instances(quota_config({"per_day": 35}, costs={"finance__run_forecast": 10}), 1)

    costly = [admitted(enforcer, caller, "finance__run_forecast") for _ in range(3)]
    with pytest.raises(QuotaExceeded) as refused:
        enforcer.admit(caller, "finance__run_forecast")
    cheap = [admitted(enforcer, caller, "finance__fetch_revenue_data") for _ in range(6)]

    assert costly == [True, True, True]
    assert str(refused.value) == "Rate limit exceeded: tenant per_day (35)"
    assert refused.value.data["resetAt"] == "2026-03-15T00:00:00+00:00"
    assert refused.value.data["retryAfterSeconds"] == 12 * 3600 - 30
    assert cheap == [True] * 5 + [False]
    assert used(clients[0], table, caller, DAY) == 35


# --- leases, and DynamoDB requests per call ------------------------------------------------------
LEASE = 10


def test_instances_with_leases_that_call_until_refused_admit_exactly_the_limit_together(
    instances: Callable[..., list[QuotaEnforcer]],
    clients: list[Any],
    table: str,
    clock: FrozenClock,
    caller: Principal,
) -> None:
    limit, n = 1000, 4  # lease size min(10, 1000 // 50) = 10
    enforcers = instances(quota_config({"per_day": limit}, lease_units=LEASE), n)
    start = threading.Barrier(n)

    def until_refused(enforcer: QuotaEnforcer) -> int:
        start.wait()
        count = 0
        while admitted(enforcer, caller, "finance__run_forecast"):
            count += 1
        return count

    with ThreadPoolExecutor(n) as pool:
        counts = list(pool.map(until_refused, enforcers))

    assert sum(counts) == limit
    assert used(clients[0], table, caller, DAY) == limit
    assert all(count > 0 for count in counts)


def test_with_leases_the_first_refusal_comes_within_the_documented_shortfall(
    instances: Callable[..., list[QuotaEnforcer]], clock: FrozenClock, caller: Principal
) -> None:
    limit, n = 1000, 4
    enforcers = instances(quota_config({"per_day": limit}, lease_units=LEASE), n)
    start, refused = threading.Barrier(n), threading.Event()

    def until_anyone_is_refused(enforcer: QuotaEnforcer) -> int:
        start.wait()
        count = 0
        while not refused.is_set():
            if admitted(enforcer, caller, "finance__run_forecast"):
                count += 1
            else:
                refused.set()
        return count

    with ThreadPoolExecutor(n) as pool:
        total = sum(pool.map(until_anyone_is_refused, enforcers))

    assert limit - n * (LEASE - 1) <= total <= limit


@pytest.mark.parametrize("threads", [1, 4, 16])
def test_leases_under_a_small_limit_stay_exact_with_one_write_per_call(
    instances: Callable[..., list[QuotaEnforcer]],
    count_requests: Callable[[list[QuotaEnforcer]], dict[str, int]],
    clock: FrozenClock,
    caller: Principal,
    threads: int,
) -> None:
    enforcers = instances(quota_config({"per_minute": LIMIT}, lease_units=LEASE), threads)
    writes = count_requests(enforcers)

    count = call_concurrently(enforcers, caller, "finance__run_forecast", 3 * LIMIT, threads)

    assert count == LIMIT
    assert writes == {"TransactWriteItems": 3 * LIMIT}


@pytest.mark.parametrize(("lease_units", "requests"), [(1, 100), (LEASE, 10)], ids=["exact", "leases-of-10"])
def test_a_hundred_calls_cost_one_write_each_or_one_per_lease_of_ten(
    instances: Callable[..., list[QuotaEnforcer]],
    count_requests: Callable[[list[QuotaEnforcer]], dict[str, int]],
    clock: FrozenClock,
    caller: Principal,
    lease_units: int,
    requests: int,
) -> None:
    limits = {"per_minute": 10_000, "per_day": 100_000, "per_month": 1_000_000}
    (enforcer,) = instances(quota_config(limits, lease_units=lease_units), 1)
    sent = count_requests([enforcer])

    calls = [admitted(enforcer, caller, "finance__run_forecast") for _ in range(100)]

    assert all(calls)
    assert sent == {"TransactWriteItems": requests}
