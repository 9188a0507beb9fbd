"""Limits hold under concurrency: many callers, one DynamoDB, exactly the limit admitted.

DynamoDB is moto's server over real HTTP on 127.0.0.1. Every caller plays one Lambda instance:
its own client (`DynamoWire`, as deployed) and its own QuotaEnforcer. Instances run as threads of this process, or as
separate spawned Python processes. Each test has a table of its own and a frozen clock (the
quota module's `time`), so no window ends in the middle of a test unless the test moves the clock.

moto applies an UpdateItem as check-then-write without a lock: two concurrent conditional
updates of one item can both pass their condition. DynamoDB applies each single-item write
atomically, so the tests' moto runs one write at a time (`tollway.dev.atomic_moto_writes`, as
`tollway dev` does; tests/conftest.py applies it).
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
from tollway.config import parse_config
from tollway.context import Principal
from tollway.policy import quota
from tollway.policy.quota import QuotaEnforcer, QuotaExceeded
from tollway.store.ledger import DynamoLedger
from tollway.store.table import key
from tollway.store.tables import ensure_tables, find_template
from tollway.store.usage import UsageReader
from tollway.store.wire import DynamoWire

from tests.conftest import moto_server

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
    limits: dict[str, int], *, costs: dict[str, int] | None = None, lease_units: int = 1, shards: int = 1
) -> dict[str, Any]:
    return {
        "resource": "https://gateway.example.com/mcp",
        "auth": {"allow_anonymous": True},
        "upstreams": [{"name": "finance", "url": "http://127.0.0.1:9/mcp"}],
        "quotas": {
            "plans": {"plan": {"tenant": limits, "shards": shards}},
            "default_plan": "plan",
            "costs": costs or {},
            "lease_units": lease_units,
        },
    }


# --- DynamoDB over HTTP --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


def dynamodb(endpoint: str, session: boto3.session.Session | None = None) -> Any:
    """A client as a deployed instance has one: its data requests through `DynamoWire`."""
    session = session or boto3.session.Session()
    config = Config(max_pool_connections=MAX_THREADS, retries={"total_max_attempts": 1})
    return DynamoWire(session.client("dynamodb", endpoint_url=endpoint, config=config), session.get_credentials())


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
        return [QuotaEnforcer(config, DynamoLedger(table, clients[i])) for i in range(n)]

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

        for client in {id(e.ledger.client): e.ledger.client for e in enforcers}.values():  # type: ignore[attr-defined]
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


def recorded(client: Any, table: str, principal: Principal) -> dict[str, int]:
    """The numbers of the tenant's item of the day: units charged and its finance record."""
    item = client.get_item(TableName=table, Key={"pk": {"S": f"USAGE#{principal.tenant}"}, "sk": {"S": "2026-03-14"}})
    return {k: int(v["N"]) for k, v in item["Item"].items() if "N" in v}


TOOL = "finance__run_forecast"


# --- exact limits --------------------------------------------------------------------------------
@pytest.mark.parametrize("threads", [1, 4, 16, 32])
@pytest.mark.parametrize(
    ("limits", "costs", "units_per_call"),
    [({"per_minute": LIMIT}, {}, 1), ({"per_day": LIMIT * 3}, {"finance__*": 3}, 3)],
    ids=["calls-per-minute", "units-per-day"],
)
def test_exactly_the_limit_of_three_times_as_many_concurrent_calls_is_admitted_and_recorded(
    instances: Callable[..., list[QuotaEnforcer]],
    clients: list[Any],
    table: str,
    clock: FrozenClock,
    caller: Principal,
    threads: int,
    limits: dict[str, int],
    costs: dict[str, int],
    units_per_call: int,
) -> None:
    enforcers = instances(quota_config(limits, costs=costs), threads)

    count = call_concurrently(enforcers, caller, TOOL, 3 * LIMIT, threads)

    assert count == LIMIT
    item = recorded(clients[0], table, caller)
    assert (item["day_units"], item[f"c:{TOOL}"], item[f"u:{TOOL}"]) == (
        LIMIT * units_per_call,
        LIMIT,
        LIMIT * units_per_call,
    )


def test_threads_of_one_local_server_sharing_an_enforcer_admit_exactly_the_limit(
    instances: Callable[..., list[QuotaEnforcer]], clock: FrozenClock, caller: Principal
) -> None:
    (enforcer,) = instances(quota_config({"per_minute": LIMIT}), 1)

    assert call_concurrently([enforcer], caller, TOOL, 3 * LIMIT, 16) == LIMIT


def _lambda_instance(
    endpoint: str, table: str, data: dict[str, Any], tenant: str, attempts: int, now: float, start: Any, out: Any
) -> None:
    """One Lambda instance in a process of its own: cold start, then `attempts` calls."""
    quota.time = FrozenClock(now)  # type: ignore[assignment]  # this process only
    enforcer = QuotaEnforcer(parse_config(data), DynamoLedger(table, dynamodb(endpoint)))
    principal = Principal(subject="agent-7", tenant=tenant)
    start.wait(timeout=30)
    out.put(sum(admitted(enforcer, principal, TOOL) for _ in range(attempts)))


def test_separate_processes_admit_exactly_the_limit_together(
    endpoint: str, clients: list[Any], table: str, caller: Principal
) -> None:
    processes, attempts = 3, LIMIT  # 3L attempts in all
    spawn = multiprocessing.get_context("spawn")
    start, out = spawn.Barrier(processes), spawn.Queue()
    data = quota_config({"per_minute": LIMIT, "per_day": 1000, "per_month": 5000})
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
    item = recorded(clients[0], table, caller)
    assert (item["day_units"], item["month_units"], item[f"c:{TOOL}"]) == (LIMIT, LIMIT, LIMIT)


# --- rates refill, days end ------------------------------------------------------------------------
def test_a_full_second_admits_one_call_again_after_a_third_of_a_second_and_all_three_after_one(
    instances: Callable[..., list[QuotaEnforcer]], clock: FrozenClock, caller: Principal
) -> None:
    (enforcer,) = instances(quota_config({"per_second": 3}), 1)
    clock.now = NOON + 0.25

    burst = [admitted(enforcer, caller, TOOL) for _ in range(4)]
    with pytest.raises(QuotaExceeded) as refused:
        enforcer.admit(caller, TOOL)
    clock.now = NOON + 0.25 + 0.334
    a_third_later = [admitted(enforcer, caller, TOOL) for _ in range(2)]
    clock.now = NOON + 1.6
    a_second_later = [admitted(enforcer, caller, TOOL) for _ in range(4)]

    assert burst == a_second_later == [True, True, True, False]
    assert a_third_later == [True, False]
    assert refused.value.data == {
        "limit": "tenant per_second",
        "max": 3,
        "resetAt": "2026-03-14T12:00:30.583333+00:00",
        "retryAfterSeconds": 1,
    }


def test_a_full_minute_says_when_the_next_call_fits_and_admits_it_then(
    instances: Callable[..., list[QuotaEnforcer]], clock: FrozenClock, caller: Principal
) -> None:
    (enforcer,) = instances(quota_config({"per_minute": 5}), 1)

    first = [admitted(enforcer, caller, TOOL) for _ in range(6)]
    with pytest.raises(QuotaExceeded) as at_once:
        enforcer.admit(caller, TOOL)
    clock.now = NOON + 11.9
    with pytest.raises(QuotaExceeded) as nearly:
        enforcer.admit(caller, TOOL)
    clock.now = NOON + 12
    then = [admitted(enforcer, caller, TOOL) for _ in range(2)]

    assert first == [True] * 5 + [False]
    assert then == [True, False]
    assert at_once.value.data["retryAfterSeconds"] == 12
    assert at_once.value.headers == {"retry-after": "12"}
    assert nearly.value.data["retryAfterSeconds"] == 1
    assert at_once.value.data["resetAt"] == nearly.value.data["resetAt"] == "2026-03-14T12:00:42+00:00"


def test_a_day_full_of_units_admits_again_on_the_next_utc_day(
    instances: Callable[..., list[QuotaEnforcer]], clock: FrozenClock, caller: Principal
) -> None:
    (enforcer,) = instances(quota_config({"per_day": 2, "per_month": 3}), 1)

    today = [admitted(enforcer, caller, TOOL) for _ in range(3)]
    clock.now = NOON + 86400
    tomorrow = [admitted(enforcer, caller, TOOL) for _ in range(2)]

    assert today == [True, True, False]
    assert tomorrow == [True, False]  # the month's third unit


# --- cost units ----------------------------------------------------------------------------------
def test_a_tool_costing_ten_fits_three_times_in_thirty_five_units_and_a_cheap_tool_takes_the_rest(
    instances: Callable[..., list[QuotaEnforcer]],
    clients: list[Any],
    table: str,
    clock: FrozenClock,
    caller: Principal,
) -> None:
    (enforcer,) = instances(quota_config({"per_day": 35}, costs={TOOL: 10}), 1)

    costly = [admitted(enforcer, caller, TOOL) for _ in range(3)]
    with pytest.raises(QuotaExceeded) as refused:
        enforcer.admit(caller, TOOL)
    cheap = [admitted(enforcer, caller, "finance__fetch_revenue_data") for _ in range(6)]

    assert costly == [True, True, True]
    assert str(refused.value) == "Rate limit exceeded: tenant per_day (35)"
    assert refused.value.data["resetAt"] == "2026-03-15T00:00:00+00:00"
    assert refused.value.data["retryAfterSeconds"] == 12 * 3600 - 30
    assert cheap == [True] * 5 + [False]
    assert recorded(clients[0], table, caller)["day_units"] == 35


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
        while admitted(enforcer, caller, TOOL):
            count += 1
        return count

    with ThreadPoolExecutor(n) as pool:
        counts = list(pool.map(until_refused, enforcers))
    for enforcer in enforcers:
        enforcer.flush_all()

    assert sum(counts) == limit
    item = recorded(clients[0], table, caller)
    assert (item["day_units"], item[f"c:{TOOL}"], item[f"r:{TOOL}"]) == (limit, limit, n)
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
            if admitted(enforcer, caller, TOOL):
                count += 1
            else:
                refused.set()
        return count

    with ThreadPoolExecutor(n) as pool:
        total = sum(pool.map(until_anyone_is_refused, enforcers))

    assert limit - n * (LEASE - 1) <= total <= limit


def test_one_instance_admits_and_records_each_call_with_one_write(
    instances: Callable[..., list[QuotaEnforcer]],
    count_requests: Callable[[list[QuotaEnforcer]], dict[str, int]],
    clock: FrozenClock,
    caller: Principal,
) -> None:
    """Rates and quotas of the tenant on one item: one UpdateItem per call, admitted or refused;
    the day's first call reads the month's total once (a Query: there is no earlier day)."""
    limits = {"per_second": 100, "per_minute": LIMIT, "per_day": 100_000, "per_month": 1_000_000}
    (enforcer,) = instances(quota_config(limits), 1)
    sent = count_requests([enforcer])

    count = sum(admitted(enforcer, caller, TOOL) for _ in range(3 * LIMIT))

    assert count == LIMIT
    assert sent == {"PutItem": 1, "Query": 1, "UpdateItem": 3 * LIMIT}  # PutItem: the day's index entry


@pytest.mark.parametrize("threads", [4, 16])
def test_concurrent_instances_stay_exact_and_retry_a_lost_race_at_most_once_a_call_on_average(
    instances: Callable[..., list[QuotaEnforcer]],
    count_requests: Callable[[list[QuotaEnforcer]], dict[str, int]],
    clock: FrozenClock,
    caller: Principal,
    threads: int,
) -> None:
    enforcers = instances(quota_config({"per_minute": LIMIT}), threads)
    sent = count_requests(enforcers)

    count = call_concurrently(enforcers, caller, TOOL, 3 * LIMIT, threads)

    assert count == LIMIT
    assert 3 * LIMIT <= sent["UpdateItem"] <= 2 * 3 * LIMIT
    assert sent["Query"] == threads  # each instance reads the month's total once a day


@pytest.mark.parametrize(("lease_units", "requests"), [(1, 100), (LEASE, 10)], ids=["exact", "leases-of-10"])
def test_a_hundred_calls_cost_one_write_each_or_one_per_lease_of_ten(
    instances: Callable[..., list[QuotaEnforcer]],
    count_requests: Callable[[list[QuotaEnforcer]], dict[str, int]],
    clock: FrozenClock,
    caller: Principal,
    lease_units: int,
    requests: int,
) -> None:
    limits = {"per_day": 100_000, "per_month": 1_000_000}
    (enforcer,) = instances(quota_config(limits, lease_units=lease_units), 1)
    sent = count_requests([enforcer])

    calls = [admitted(enforcer, caller, TOOL) for _ in range(100)]

    assert all(calls)
    assert sent == {"PutItem": 1, "Query": 1, "UpdateItem": requests}


# --- a hot tenant spread over several items ----------------------------------------------------------
SHARDS = 4
HOT_RATE = 40
"""Calls per second of the hot tenant: 10 per item."""
MOMENTS = [NOON, NOON + 0.05, NOON + 0.3, NOON + 0.35, NOON + 1.0, NOON + 2.61]
"""The clock stands still at each moment while every admitter calls until it is refused: the
tenant's demand far above its rate, at instants that leave the items fractions of a token."""


def _until_refused(enforcer: QuotaEnforcer, principal: Principal) -> int:
    count = 0
    while admitted(enforcer, principal, TOOL):
        count += 1
    return count


def _saturate(enforcers: list[QuotaEnforcer], clock: FrozenClock, principal: Principal, start: Any) -> list[list[int]]:
    """Each enforcer in a thread of its own: at each of MOMENTS, call until refused. Returns the
    admissions of each thread at each moment. `start`: a barrier of every admitter (all processes)."""

    def thread(enforcer: QuotaEnforcer) -> list[int]:
        counts = []
        for moment in MOMENTS:
            clock.now = moment  # every thread of the process sets the same moment
            start.wait(timeout=60)
            counts.append(_until_refused(enforcer, principal))
            start.wait(timeout=60)  # nobody moves the clock on before all are refused
        return counts

    with ThreadPoolExecutor(len(enforcers)) as pool:
        return list(pool.map(thread, enforcers))


def _hot_instances(endpoint: str, table: str, tenant: str, threads: int, start: Any, out: Any) -> None:
    """A process of `threads` Lambda instances (one client each) of the hot tenant."""
    clock = FrozenClock(NOON)
    quota.time = clock  # type: ignore[assignment]  # this process only
    config = parse_config(quota_config({"per_second": HOT_RATE}, shards=SHARDS))
    session = boto3.session.Session()
    enforcers = [QuotaEnforcer(config, DynamoLedger(table, dynamodb(endpoint, session))) for _ in range(threads)]
    counts = _saturate(enforcers, clock, Principal(subject="agent-7", tenant=tenant), start)
    for enforcer in enforcers:
        enforcer.flush_all()
    out.put(counts)


def _one_exact_item(moments: list[float]) -> list[int]:
    """What one item (no shards) admits at each moment under the same demand: the exact rule."""
    from tollway.store.ledger import Charge, Limit, LimitReached, MemoryLedger, Scope

    ledger, scope = MemoryLedger(), Scope("USAGE#exact", (Limit("tenant per_second", "second", HOT_RATE),))
    counts = []
    for moment in moments:
        count = 0
        while True:
            try:
                ledger.charge(Charge(scope, 1, 1), moment)
            except LimitReached:
                break
            count += 1
        counts.append(count)
    return counts


@pytest.mark.parametrize(("processes", "threads"), [(0, 16), (3, 4)], ids=["16-threads", "3-processes-of-4-threads"])
def test_a_hot_tenant_on_four_items_never_admits_more_than_one_item_would_and_at_most_three_calls_fewer(
    endpoint: str,
    clients: list[Any],
    table: str,
    instances: Callable[..., list[QuotaEnforcer]],
    clock: FrozenClock,
    caller: Principal,
    processes: int,
    threads: int,
) -> None:
    """The stated bound, at every moment: one exact item's admissions minus (shards - 1) <= the
    sharded tenant's <= one exact item's; and its usage record sums to what it admitted."""
    if processes == 0:
        enforcers = instances(quota_config({"per_second": HOT_RATE}, shards=SHARDS), threads)
        per_admitter = _saturate(enforcers, clock, caller, threading.Barrier(threads))
        for enforcer in enforcers:
            enforcer.flush_all()
    else:
        spawn = multiprocessing.get_context("spawn")
        start, out = spawn.Barrier(processes * threads), spawn.Queue()
        workers = [
            spawn.Process(
                target=_hot_instances, args=(endpoint, table, caller.tenant, threads, start, out), daemon=True
            )
            for _ in range(processes)
        ]
        for worker in workers:
            worker.start()
        try:
            per_admitter = [counts for _ in workers for counts in out.get(timeout=120)]
        finally:
            for worker in workers:
                worker.join(timeout=10)
                if worker.is_alive():
                    worker.kill()

    sharded = [sum(counts[k] for counts in per_admitter) for k in range(len(MOMENTS))]
    exact = _one_exact_item(MOMENTS)
    for k in range(len(MOMENTS)):
        so_far, exact_so_far = sum(sharded[: k + 1]), sum(exact[: k + 1])
        assert exact_so_far - (SHARDS - 1) <= so_far <= exact_so_far, (k, sharded, exact)
    assert sum(1 for counts in per_admitter if sum(counts)) > 1  # the load was spread
    usage = UsageReader(DynamoLedger(table, clients[0])).month("2026-03", caller.tenant)
    assert [(row.calls, row.rejected) for row in usage] == [(sum(sharded), len(per_admitter) * len(MOMENTS))]
    shard_keys = [f"USAGE#{caller.tenant}"] + [f"USAGE#{caller.tenant}#{i}" for i in range(1, SHARDS)]
    items = [
        clients[0].get_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": "2026-03-14"}})["Item"]
        for pk in shard_keys
    ]
    assert sum(int(item[f"c:{TOOL}"]["N"]) for item in items) == sum(sharded)  # every item took calls
    entries = [
        clients[0].get_item(TableName=table, Key={"pk": {"S": key("USAGEINDEX", pk)}, "sk": {"S": day}})["Item"]
        for pk, day in ((pk, "2026-03-14") for pk in shard_keys)
    ]
    assert [e["item_pk"]["S"] for e in entries] == shard_keys  # each item listed in the month's index once
    assert {e["gsi1pk"]["S"] for e in entries} == {"USAGE#2026-03"}
    assert not [item for item in items if "gsi1pk" in item]  # items stay off the index: no write of it per call


@pytest.mark.parametrize(("cost", "admitted_units"), [(1, 200), (3, (200 - SHARDS * 2, 198))], ids=["cost-1", "cost-3"])
def test_a_hot_tenants_day_quota_on_four_items_is_exact_for_unit_calls_and_within_the_bound_for_costly_ones(
    instances: Callable[..., list[QuotaEnforcer]],
    clients: list[Any],
    table: str,
    clock: FrozenClock,
    caller: Principal,
    cost: int,
    admitted_units: Any,
) -> None:
    """A call costing c is refused only when every item has less than c units left: at most
    shards x (c - 1) units of the day unused; none for calls costing 1."""
    enforcers = instances(quota_config({"per_day": 200}, costs={"finance__*": cost}, shards=SHARDS), 16)

    count = call_concurrently(enforcers, caller, TOOL, 3 * 200 // cost, 16)

    if cost == 1:
        assert count == admitted_units
    else:
        low, high = admitted_units
        assert low <= count * cost <= high
    usage = UsageReader(DynamoLedger(table, clients[0])).month("2026-03", caller.tenant)
    assert [(row.calls, row.units) for row in usage] == [(count, count * cost)]


def test_separate_processes_admit_exactly_a_hot_tenants_day_quota_from_its_four_items(
    endpoint: str, clients: list[Any], table: str, caller: Principal
) -> None:
    processes, attempts, limit = 3, 100, 200  # 1.5 x the limit in all
    spawn = multiprocessing.get_context("spawn")
    start, out = spawn.Barrier(processes), spawn.Queue()
    data = quota_config({"per_day": limit}, shards=SHARDS)
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

    assert sum(counts) == limit
    usage = UsageReader(DynamoLedger(table, clients[0])).month("2026-03", caller.tenant)
    assert [(row.calls, row.units) for row in usage] == [(limit, limit)]
