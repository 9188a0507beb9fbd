"""The ledger: a call's admission and its finance record in ONE conditional write per scope.

One small item per scope (a tenant; a subject or a tool limit within it) and UTC day:

  pk <scope key>   sk <YYYY-MM-DD>
  day_units                     units charged today
  month_units                   units charged this month, through today (carried from the day before)
  tat:<period>:<max>            a rate's state (GCRA): the theoretical arrival time of the next call,
                                in steps of period/(max x SUBSTEPS) since the epoch: whole numbers
  sealed                        the next day's item has taken this month's total over
  c:<tool> u:<tool>             tenant scope: calls and units per tool (the finance record)
  e:<tool> r:<tool> l:<tool>    tenant scope: errors, rejected calls, latency ms per tool
  tenant, day                   tenant scope: whose record and which day
  expires_at                    subject and tool scopes: kept 40 days

and, for each tenant item, an index entry written once per item, day and instance:

  pk USAGEINDEX#<item pk>   sk <YYYY-MM-DD>   gsi1pk USAGE#<YYYY-MM>   gsi1sk <tenant>#<day>
  item_pk <item pk>

The index ByMonth projects every attribute, so an item carrying its keys would write the index
on every write: the call's one write unit would be two, and every tenant's calls would land on
the index's one partition per month (about 1,000 writes/s for the whole gateway). The entry is
written before the item's first charge on an instance (a failed entry fails the call like any
store failure, so no usage is ever unlisted); readers list a month's entries and read the items
(BatchGetItem). Items of earlier releases carry the index keys themselves and are read as they are.

A charge is one UpdateItem whose condition holds every limit of the scope (day and month units,
each rate), and whose update adds the units, advances each rate and adds the finance counters.
A refused condition returns the item as it was (`ALL_OLD`), from which the one rule below
(`_refusal`) names the limit; no transaction, no read on the path of a call.

A month's total is carried: the first charge of a day on an instance reads the scope's latest
earlier item of the month (one Query, once per scope, day and instance) and seals it, so no write
lands on it afterwards; its `month_units` is then final and becomes the new day's base. A charge
that meets a sealed item (a clock a moment behind midnight) goes to the next day's item.

Rates are GCRA: `max` calls per period, at most `max` at once, refilled continuously. Exact
while the instances' clocks agree; a clock ahead by d admits at most d x rate more.

A hot scope (`quotas.plans.<plan>.shards` = N > 1; one item takes about 1,000 writes/s) is
spread over N items: `pk`, `pk#1` ... `pk#N-1` (separate partitions), each holding an Nth of
every limit (shares that sum exactly to the limit; N is capped by the smallest limit, so no
share is 0). Each item enforces its share with the one rule above, so no item over-admits and
the scope never does. A charge tries the items in random order, skipping those this instance
last saw refuse (a refused write says until when: a rate's next token, a quota's period end;
what it saw only ever understates an item's use, so skipping never costs an admission), until
one admits; it is refused only when every item it tried refused. Hence the under-admission
bound, against one exact item at the same moment:
  - a quota (day, month) of cost-1 calls: none. A call costing c is refused while up to
    N x (c-1) units are left in all (less than c on each item).
  - a rate: fewer than N calls (each item can be short of its next whole token); over time the
    same rate, since each item refills at its share.
An admitted call costs one write plus one per item that refused it first; a refused call one per
item it tried (at most N), and one only (as with one item) once this instance saw every item
refuse: each item costs an instance at most one wasted write per refusal it learns from. The
finance counters land on whichever item admitted the call: a tenant's usage is the sum of its
items (`store/usage.py` sums them): each item has its own index entry.

The shares belong to N: a changed N is a new layout whose items count from their own totals
(item i of both layouts keeps its count, the others start at 0 or are no longer charged), so a
change mid-period can over-admit that period's quotas by at most what was used in it before;
README says to change N at the start of a month.

Rates are not leased instead (a block of k tokens taken in one write and spent locally): the
tokens would be spent later than they were charged, so a window could see more than its burst
unless leases expire at once; shards keep admission exact per item.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, Protocol

from tollway.errors import StorageError
from tollway.store.table import DynamoClient, DynamoTable, key

Period = Literal["second", "minute", "day", "month"]
RATE_SECONDS = {"second": 1, "minute": 60}
SCOPE_TTL_SECONDS = 40 * 86400
SUBSTEPS = 1000
"""A call advances a rate by SUBSTEPS steps: time is counted finely enough that rounding it to a
step never moves a call by more than a thousandth of its share of the period."""
MAX_ATTEMPTS = 8
"""Conditional writes that lose a race (a rate's state moved) are retried; past this, StorageError."""
MAX_SHARDS = 32
"""Items a hot scope may be spread over (`quotas.plans.<plan>.shards`): about 32,000 writes/s."""
USAGE_FIELDS = ("c", "u", "e", "r", "l", "x")
"""calls, units, errors, rejected, latency ms, cancelled (a subset of errors): the per-tool
counters of a tenant's day."""


class Limit(NamedTuple):
    name: str
    """As a caller sees it: `tenant per_minute`, `subject per_day`, `tool finance__* per_second`."""
    period: Period
    max: int

    @property
    def rate(self) -> bool:
        return self.period in RATE_SECONDS

    @property
    def attribute(self) -> str:
        """A rate's state attribute; its scale (`max`) is in the name, so a changed limit starts afresh."""
        return f"tat:{self.period}:{self.max}"


class Scope(NamedTuple):
    pk: str
    limits: tuple[Limit, ...] = ()
    tenant: str | None = None
    """Set on a tenant's own scope: its items carry the finance record."""
    shards: int = 1
    """Items each day's charges are spread over (a hot scope); 1 = one item, exact."""
    shard: int = 0
    """Which of them this is (`items()`)."""

    def items(self) -> tuple[Scope, ...]:
        """The scope of each of its items: its own key and an even share of every limit (the
        shares of a limit sum to it). As many items as `shards`, at most the smallest limit."""
        return (self,) if self.shards <= 1 else _items(self)


@functools.lru_cache(maxsize=1024)  # a call's scopes are built anew; their items once per instance
def _items(scope: Scope) -> tuple[Scope, ...]:
    n = min([scope.shards, *(limit.max for limit in scope.limits)])
    if n <= 1:
        return (scope,)
    return tuple(
        Scope(
            scope.pk if i == 0 else f"{scope.pk}#{i}",
            tuple(limit._replace(max=limit.max // n + (i < limit.max % n)) for limit in scope.limits),
            scope.tenant,
            shard=i,
        )
        for i in range(n)
    )


class Charge(NamedTuple):
    """What one write adds to a scope's day: rate tokens (calls), quota units, finance counters."""

    scope: Scope
    calls: int
    units: int
    usage: Mapping[str, int] = MappingProxyType({})  # read-only: a default shared by every Charge
    """Finance counters (`usage_attribute(field, tool)` -> amount), tenant scopes only."""


class LimitReached(Exception):
    def __init__(self, limit: Limit, retry_after: float, resets_at: float) -> None:
        self.limit = limit
        self.retry_after = retry_after
        """Seconds until the refused charge would fit."""
        self.resets_at = resets_at
        super().__init__(limit.name)


def usage_attribute(field_name: str, tool: str) -> str:
    return f"{field_name}:{tool}"


def day_of(at: float) -> str:
    """The UTC day of `at`, as `YYYY-MM-DD`: asked two or three times a call, so remembered per day.
    POSIX time has 86,400 seconds a day; `at` is taken to the microsecond, as `_steps` takes it."""
    return _day(round(at * 1_000_000) // 86_400_000_000)


@functools.lru_cache(maxsize=4)
def _day(days_since_epoch: int) -> str:
    return datetime.fromtimestamp(days_since_epoch * 86_400, UTC).strftime("%Y-%m-%d")


def next_day(day: str) -> str:
    return (datetime.strptime(day, "%Y-%m-%d") + timedelta(days=1)).strftime("%Y-%m-%d")


# --- the one rule --------------------------------------------------------------------------------
def _steps(limit: Limit, at: float) -> int:
    """`at` in the rate's steps since the epoch, rounded down (integer arithmetic: exact)."""
    return round(at * 1_000_000) * limit.max * SUBSTEPS // (RATE_SECONDS[limit.period] * 1_000_000)


def _moment(limit: Limit, steps: int) -> float:
    """The epoch seconds of a rate's step."""
    return steps * RATE_SECONDS[limit.period] / (limit.max * SUBSTEPS)


def _refusal(state: dict[str, Any], charge: Charge, at: float, base: int) -> LimitReached | None:
    """The first limit of the scope that `charge` would break, given the item as it is (`state`:
    attribute -> number; empty for a new item), or None if it fits."""
    day, month = state.get("day_units", 0), state.get("month_units", base + state.get("day_units", 0))
    for limit in charge.scope.limits:
        if limit.rate:
            now = _steps(limit, at)
            after = max(state.get(limit.attribute, 0), now) + charge.calls * SUBSTEPS
            if after - now > limit.max * SUBSTEPS:
                fits = _moment(limit, after - limit.max * SUBSTEPS)
                return LimitReached(limit, fits - at, fits)
        elif (day if limit.period == "day" else month) + charge.units > limit.max:
            resets = _period_end(limit.period, at)
            return LimitReached(limit, resets - at, resets)
    return None


def _period_end(period: Period, at: float) -> float:
    moment = datetime.fromtimestamp(at, UTC)
    if period == "day":
        return float(int(at) // 86400 * 86400 + 86400)
    year, month = divmod(moment.year * 12 + moment.month, 12)  # the next month, numbered from 0
    return datetime(year, month + 1, 1, tzinfo=UTC).timestamp()


def _apply(state: dict[str, Any], charge: Charge, at: float, base: int) -> None:
    """`state` after `charge` (the in-memory ledger's write; DynamoDB's is `_update`)."""
    if "month_units" not in state:
        state["month_units"] = base + state.get("day_units", 0)
    state["day_units"] = state.get("day_units", 0) + charge.units
    state["month_units"] += charge.units
    for limit in charge.scope.limits:
        if limit.rate:
            state[limit.attribute] = max(state.get(limit.attribute, 0), _steps(limit, at)) + charge.calls * SUBSTEPS
    for name, amount in charge.usage.items():
        state[name] = state.get(name, 0) + amount


# --- the stores ----------------------------------------------------------------------------------
class Ledger(Protocol):
    def charge(self, charge: Charge, at: float) -> None:
        """Admit and record `charge` at `at` (epoch seconds), or raise LimitReached."""
        ...

    def add(self, scope: Scope, day: str, usage: dict[str, int]) -> None:
        """Finance counters only (errors, rejections, latency): no limit, no condition."""
        ...

    def refund(self, charge: Charge, day: str) -> None:
        """Give back units of a charge whose call was not admitted after all (a later scope refused)."""
        ...

    def days(self, pk: str, month: str) -> list[dict[str, Any]]:
        """Every item of scope `pk` in `month` (YYYY-MM), as attribute -> value."""
        ...

    def month(self, month: str) -> list[dict[str, Any]]:
        """Every tenant's items of `month` (the index ByMonth)."""
        ...

    def tenant_month(self, tenant: str, month: str) -> list[dict[str, Any]]:
        """One tenant's items of `month`, every shard's (the index ByMonth, by its sort key)."""
        ...


class _Shards:
    """How a ledger charges a scope spread over several items (see the module's docstring): which
    item to try, and what this instance saw of them (item key -> its last refusal, and the
    smallest units it refused: any, for a rate)."""

    def __init__(self) -> None:
        self._refused: dict[str, tuple[LimitReached, int]] = {}
        self._lock = threading.Lock()

    def charge(self, charge: Charge, at: float, charge_item: Callable[[Charge, float], None]) -> None:
        items = charge.scope.items()
        if len(items) == 1:
            charge_item(charge, at)
            return
        order = random.sample(items, len(items))
        with self._lock:
            seen = {s.pk: self._refused[s.pk] for s in order if s.pk in self._refused}
        fresh = [s for s in order if not _refuses(seen.get(s.pk), charge.units, at)]
        # One write even when every item was seen full: a refusal is always DynamoDB's own, and
        # the item that fits soonest is the one to look at again.
        tries = fresh or [min(order, key=lambda s: seen[s.pk][0].resets_at)]
        refusals = [seen[s.pk][0] for s in order if s not in tries]  # what the others said
        for item in tries:
            try:
                charge_item(charge._replace(scope=item), at)
                return
            except LimitReached as reached:
                with self._lock:
                    self._refused[item.pk] = (reached, 0 if reached.limit.rate else charge.units)
                    if len(self._refused) > _REMEMBERED:
                        self._refused = {k: v for k, v in self._refused.items() if v[0].resets_at > at}
                refusals.append(reached)
        soonest = min(refusals, key=lambda r: r.resets_at)  # the caller may retry when any item fits
        whole = next(limit for limit in charge.scope.limits if limit.name == soonest.limit.name)
        raise LimitReached(whole, soonest.resets_at - at, soonest.resets_at)


def _refuses(seen: tuple[LimitReached, int] | None, units: int, at: float) -> bool:
    """Whether an item whose last refusal was `seen` = (refusal, units) still refuses `units`."""
    return seen is not None and at < seen[0].resets_at and units >= seen[1]


class MemoryLedger:
    """In-process ledger for tests and `Stores.memory()`: the same rule, applied under a lock."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.fail_with: Exception | None = None
        self._lock = threading.Lock()
        self._shards = _Shards()

    def charge(self, charge: Charge, at: float) -> None:
        self._shards.charge(charge, at, self._charge_item)

    def _charge_item(self, charge: Charge, at: float) -> None:
        self._check()
        day = day_of(at)
        with self._lock:
            while self.items.get((charge.scope.pk, day), {}).get("sealed"):
                day = next_day(day)
            base = self._base(charge.scope.pk, day)
            state = self.items.get((charge.scope.pk, day)) or _keys(charge.scope, day)
            refused = _refusal(state, charge, at, base)
            if refused is not None:
                raise refused
            _apply(state, charge, at, base)
            self.items[(charge.scope.pk, day)] = state

    def add(self, scope: Scope, day: str, usage: dict[str, int]) -> None:
        self._check()
        with self._lock:
            state = self.items.setdefault((scope.pk, day), _keys(scope, day))
            for name, amount in usage.items():
                state[name] = state.get(name, 0) + amount

    def refund(self, charge: Charge, day: str) -> None:
        with self._lock:
            state = self.items.get((charge.scope.pk, day))
            if state is not None:
                state["day_units"] -= charge.units
                state["month_units"] -= charge.units

    def days(self, pk: str, month: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(v) for (p, d), v in sorted(self.items.items()) if p == pk and d.startswith(month)]

    def month(self, month: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(v) for (_, d), v in sorted(self.items.items()) if d.startswith(month) and "tenant" in v]

    def tenant_month(self, tenant: str, month: str) -> list[dict[str, Any]]:
        return [item for item in self.month(month) if item["tenant"] == tenant]

    def _base(self, pk: str, day: str) -> int:
        earlier = [d for (p, d) in self.items if p == pk and d[:7] == day[:7] and d < day]
        if not earlier:
            return 0
        latest = self.items[(pk, max(earlier))]
        latest["sealed"] = True
        return int(latest.get("month_units", 0))

    def _check(self) -> None:
        if self.fail_with is not None:
            raise StorageError("Usage store unavailable") from self.fail_with


def _keys(scope: Scope, day: str) -> dict[str, Any]:
    if scope.tenant is None:
        return {}
    return {"tenant": scope.tenant, "day": day}


class DynamoLedger(DynamoTable):
    unavailable = "Usage store unavailable"
    """Admission maps any ledger failure to its own answer (the failure policy); this one is what
    a reader of usage (finance) is told."""

    def __init__(self, table_name: str | None = None, client: Any = None, shared: DynamoClient | None = None) -> None:
        super().__init__(table_name, client, shared)
        self._bases: dict[tuple[str, str], int] = {}
        """(scope, day) -> the month's units before that day (sealed, so final)."""
        self._seen: dict[tuple[str, str], dict[str, Any]] = {}
        """(scope, day) -> the rates' state this instance last saw: which write to try first."""
        self._indexed: dict[tuple[str, str], bool] = {}
        """(tenant item, day) whose index entry this instance has written."""
        self._lock = threading.Lock()
        self._shards = _Shards()

    def charge(self, charge: Charge, at: float) -> None:
        self._shards.charge(charge, at, self._charge_item)

    def _charge_item(self, charge: Charge, at: float) -> None:
        day = day_of(at)
        for _ in range(MAX_ATTEMPTS):
            self._index(charge.scope, day)
            base = self._base(charge.scope.pk, day)
            impossible = _refusal({}, charge, at, base)  # larger than a limit, or than the month's room
            if impossible is not None:
                raise impossible
            seen = self._seen.get((charge.scope.pk, day), {})
            try:
                answer = self._call(
                    "update_item",
                    conditional=True,
                    **_update(charge, day, at, base, seen),
                    ReturnValues="UPDATED_NEW",
                )
            except _Refused as refused:
                old = refused.item
                if old.get("sealed"):
                    day = next_day(day)  # this instance's clock is a moment behind midnight
                    continue
                reason = _refusal(old, charge, at, base)
                if reason is not None:
                    raise reason from None
                self._remember(charge.scope.pk, day, old)  # a rate moved on: write the other form
                continue
            self._remember(charge.scope.pk, day, _numbers(answer.get("Attributes", {})))
            return
        raise StorageError(self.unavailable)

    def add(self, scope: Scope, day: str, usage: dict[str, int]) -> None:
        names, values, adds = {}, {}, []
        for i, (name, amount) in enumerate(usage.items()):
            names[f"#a{i}"], values[f":a{i}"] = name, {"N": str(amount)}
            adds.append(f"#a{i} :a{i}")
        sets = _record_keys(scope, day, values, names)
        self._index(scope, day)
        self._call(
            "update_item",
            Key=_key(scope.pk, day),
            UpdateExpression=" ".join(
                filter(None, [f"SET {', '.join(sets)}" if sets else "", "ADD " + ", ".join(adds)])
            ),
            **_expression(names, values),
        )

    def refund(self, charge: Charge, day: str) -> None:
        self._call(
            "update_item",
            Key=_key(charge.scope.pk, day),
            UpdateExpression="ADD day_units :minus, month_units :minus",
            ExpressionAttributeValues={":minus": {"N": str(-charge.units)}},
        )

    def days(self, pk: str, month: str) -> list[dict[str, Any]]:
        return self._query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :month)",
            ExpressionAttributeValues={":pk": {"S": pk}, ":month": {"S": month}},
        )

    def month(self, month: str) -> list[dict[str, Any]]:
        return self._listed(
            IndexName="ByMonth",
            KeyConditionExpression="gsi1pk = :gpk",
            ExpressionAttributeValues={":gpk": {"S": key("USAGE", month)}},
        )

    def tenant_month(self, tenant: str, month: str) -> list[dict[str, Any]]:
        # gsi1sk is key(tenant, day): escaped, so the prefix `<tenant>#` is this tenant's alone.
        return self._listed(
            IndexName="ByMonth",
            KeyConditionExpression="gsi1pk = :gpk AND begins_with(gsi1sk, :tenant)",
            ExpressionAttributeValues={":gpk": {"S": key("USAGE", month)}, ":tenant": {"S": key(tenant, "")}},
        )

    def _listed(self, **query: Any) -> list[dict[str, Any]]:
        """The tenant items an index query lists: entries name an item (read in batches of 100);
        items of earlier releases are in the index themselves."""
        items: dict[tuple[str, str], dict[str, Any]] = {}
        wanted: list[tuple[str, str]] = []
        for found in self._query(**query):
            if "item_pk" in found:
                wanted.append((found["item_pk"], found["sk"]))
            else:
                items[(found["pk"], found["sk"])] = found
        wanted = list(dict.fromkeys(k for k in wanted if k not in items))
        for start in range(0, len(wanted), 100):
            keys = [_key(pk, day) for pk, day in wanted[start : start + 100]]
            while keys:
                page = self._request("batch_get_item", RequestItems={self.table_name: {"Keys": keys}})
                for item in page.get("Responses", {}).get(self.table_name, []):
                    plain = _plain(item)
                    items[(plain["pk"], plain["sk"])] = plain
                keys = page.get("UnprocessedKeys", {}).get(self.table_name, {}).get("Keys", [])
        return [items[k] for k in sorted(items)]

    def _index(self, scope: Scope, day: str) -> None:
        """The index entry of a tenant item's day, once per instance (see the module docstring)."""
        if scope.tenant is None or (scope.pk, day) in self._indexed:
            return
        self._call(
            "put_item",
            Item={
                "pk": {"S": key("USAGEINDEX", scope.pk)},
                "sk": {"S": day},
                "gsi1pk": {"S": key("USAGE", day[:7])},
                "gsi1sk": {"S": key(scope.tenant, day)},
                "item_pk": {"S": scope.pk},
            },
        )
        with self._lock:
            self._indexed[(scope.pk, day)] = True
            self._indexed = _bounded(self._indexed, day)

    def _query(self, **query: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self._call("query", **query)
            items.extend(_plain(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _base(self, pk: str, day: str) -> int:
        """The month's units before `day`: the latest earlier item of the month, sealed first."""
        cached = self._bases.get((pk, day))
        if cached is not None:
            return cached
        base = 0
        if not day.endswith("-01"):
            page = self._call(
                "query",
                KeyConditionExpression="pk = :pk AND sk BETWEEN :first AND :before",
                ExpressionAttributeValues={
                    ":pk": {"S": pk},
                    ":first": {"S": day[:8] + "01"},
                    ":before": {"S": (datetime.strptime(day, "%Y-%m-%d") - timedelta(days=1)).strftime("%Y-%m-%d")},
                },
                ScanIndexForward=False,
                Limit=1,
                ConsistentRead=True,
            )
            for item in page.get("Items", []):
                sealed = self._call(
                    "update_item",
                    Key={"pk": item["pk"], "sk": item["sk"]},
                    UpdateExpression="SET sealed = :yes",
                    ExpressionAttributeValues={":yes": {"BOOL": True}},
                    ReturnValues="ALL_NEW",
                )
                base = int(_numbers(sealed.get("Attributes", {})).get("month_units", 0))
        with self._lock:
            self._bases[(pk, day)] = base
            self._bases = _bounded(self._bases, day)
        return base

    def _remember(self, pk: str, day: str, attributes: dict[str, Any]) -> None:
        with self._lock:
            self._seen[(pk, day)] = {k: v for k, v in attributes.items() if k.startswith("tat:")}
            self._seen = _bounded(self._seen, day)

    def _call(self, operation: str, *, conditional: bool = False, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            return super()._call(operation, **kwargs)
        except StorageError as exc:
            cause = exc.__cause__
            if (
                conditional
                and isinstance(cause, ClientError)
                and cause.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
            ):
                raise _Refused(_numbers(cause.response.get("Item", {}))) from None
            raise


_REMEMBERED = 10_000


def _bounded(remembered: dict[tuple[str, str], Any], day: str) -> dict[tuple[str, str], Any]:
    """What an instance remembers per (scope, day), once it holds many: only today's and later
    (one entry per scope in use today; earlier days take no more writes)."""
    if len(remembered) <= _REMEMBERED:
        return remembered
    return {k: v for k, v in remembered.items() if k[1] >= day}


class _Refused(Exception):
    def __init__(self, item: dict[str, Any]) -> None:
        self.item = item


def _update(charge: Charge, day: str, at: float, base: int, seen: dict[str, Any]) -> dict[str, Any]:
    """The UpdateItem of one charge: `_refusal` and `_apply` as DynamoDB expressions."""
    values: dict[str, Any] = {":units": {"N": str(charge.units)}, ":base": {"N": str(base)}}
    names: dict[str, str] = {}
    sets = ["month_units = if_not_exists(month_units, :base) + :units"]
    adds = ["day_units :units"]
    conditions = ["attribute_not_exists(sealed)"]
    for i, limit in enumerate(charge.scope.limits):
        if limit.rate:
            now = _steps(limit, at)
            names[f"#t{i}"] = limit.attribute
            values[f":now{i}"] = {"N": str(now)}
            values[f":calls{i}"] = {"N": str(charge.calls * SUBSTEPS)}
            if seen.get(limit.attribute, 0) <= now:  # idle since: the rate starts from now
                sets.append(f"#t{i} = :now{i} + :calls{i}")
                conditions.append(f"(attribute_not_exists(#t{i}) OR #t{i} <= :now{i})")
            else:  # busy: the rate moves on from where it is
                values[f":room{i}"] = {"N": str(now + (limit.max - charge.calls) * SUBSTEPS)}
                sets.append(f"#t{i} = #t{i} + :calls{i}")
                conditions.append(f"(#t{i} > :now{i} AND #t{i} <= :room{i})")
        else:
            counter = "day_units" if limit.period == "day" else "month_units"
            values[f":room{i}"] = {"N": str(limit.max - charge.units)}
            conditions.append(f"(attribute_not_exists({counter}) OR {counter} <= :room{i})")
    for i, (name, amount) in enumerate(charge.usage.items()):
        names[f"#u{i}"], values[f":u{i}"] = name, {"N": str(amount)}
        adds.append(f"#u{i} :u{i}")
    sets += _record_keys(charge.scope, day, values, names)
    return {
        "Key": _key(charge.scope.pk, day),
        "UpdateExpression": f"SET {', '.join(sets)} ADD {', '.join(adds)}",
        "ConditionExpression": " AND ".join(conditions),
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        **_expression(names, values),
    }


def _record_keys(scope: Scope, day: str, values: dict[str, Any], names: dict[str, str]) -> list[str]:
    """SET clauses that every write of a scope's day repeats: the finance record's keys, or a TTL."""
    if scope.tenant is None:
        values[":ttl"] = {"N": str(int(time.time()) + SCOPE_TTL_SECONDS)}
        return ["expires_at = :ttl"]
    names["#d"] = "day"
    values.update({":tenant": {"S": scope.tenant}, ":day": {"S": day}})
    return ["tenant = :tenant", "#d = :day"]


def _key(pk: str, day: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": day}}


def _expression(names: dict[str, str], values: dict[str, Any]) -> dict[str, Any]:
    return {"ExpressionAttributeValues": values, **({"ExpressionAttributeNames": names} if names else {})}


def _numbers(attributes: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (int(v["N"]) if "N" in v else v.get("BOOL", True)) for k, v in attributes.items() if "N" in v or "BOOL" in v
    }


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {k: int(v["N"]) if "N" in v else v.get("S", v.get("BOOL")) for k, v in item.items()}


_EARLIER_FIELDS = {"calls": "c", "units": "u", "errors": "e", "rejected": "r", "latency_ms": "l"}
"""Items of the earlier usage layout (one per tenant, day and tool, in the same partitions)."""


def usage_rows(items: Iterable[dict[str, Any]]) -> list[tuple[str, str, str, dict[str, int]]]:
    """(tenant, day, tool, {field: amount}) for each tool of each tenant item."""
    rows = []
    for item in items:
        if "tool" in item:  # written before the ledger
            counts = {short: int(item.get(name, 0)) for name, short in _EARLIER_FIELDS.items()}
            rows.append((item["tenant"], item["day"], item["tool"], counts))
            continue
        tools: dict[str, dict[str, int]] = {}
        for name, value in item.items():
            kind, sep, tool = name.partition(":")
            if sep and kind in USAGE_FIELDS:
                tools.setdefault(tool, {})[kind] = int(value)
        rows += [(item["tenant"], item["day"], tool, counts) for tool, counts in sorted(tools.items())]
    return rows
