"""The workload and the one timing loop every system is measured with.

A measurement is a list of per-task *plans* (precomputed ``(key, value)`` pairs, ``value is
None`` meaning GET) driven against a system until the plans run out or a shared
:class:`Deadline` passes. Each operation is timed on its own with ``perf_counter_ns``; the
random choices are made before the clock starts so the loop measures the system, not ``random``.

:func:`drive` runs async systems as one task per plan (``asyncio.gather`` over ``_drive``) and
the single-thread peers (``sqlite3-raw``, ``diskcache-sync``) through ``_drive_sync``, the same
loop without ``await``: wrapping them in coroutines would charge them a frame per operation.
:func:`run` adds the statistics, computed after the clock stops.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, TypeVar

TTL = 3600.0
"""Every write in the workload carries this TTL (seconds)."""

LOOPS = ("asyncio", "uvloop")

Value = dict[str, Any]
Op = tuple[str, "Value | None"]
AsyncGet = Callable[[str], Awaitable[Any]]
AsyncSet = Callable[[str, Value], Awaitable[Any]]
SyncGet = Callable[[str], Any]
SyncSet = Callable[[str, Value], Any]
T = TypeVar("T")


def key(i: int) -> str:
    return f"user:{i}"


def value(i: int) -> Value:
    """A ~200-byte (msgpack) user record; the first 20k are shared, the rest built fresh."""
    return _shared_value(i) if i < 20_000 else _make_value(i)


def _make_value(i: int) -> Value:
    return {
        "id": i,
        "name": f"User {i}",
        "email": f"user{i}@example.com",
        "tags": ["python", "asyncio", "sqlite"],
        "score": i * 0.37,
        "active": i % 2 == 0,
        "city": "Springfield",
        "bio": f"Likes caching, SQLite and asyncio; user number {i}".ljust(76, "."),
    }


# Plans reuse the same objects; a 1M-entry population must not pin every record, though.
_shared_value = functools.lru_cache(maxsize=20_000)(_make_value)


def release_values() -> None:
    """Drop the shared values (the RSS measurement must not count the harness's objects)."""
    _shared_value.cache_clear()


def items(start: int, stop: int) -> list[tuple[str, Value]]:
    """``(key, value)`` pairs for the pre-population of ``range(start, stop)``."""
    return [(key(i), value(i)) for i in range(start, stop)]


def chunks(n_keys: int, size: int) -> Iterator[list[tuple[str, Value]]]:
    for start in range(0, n_keys, size):
        yield items(start, min(n_keys, start + size))


# -- systems ---------------------------------------------------------------------------------


class System(abc.ABC):
    """One system under test. Subclasses add ``get(k)`` and ``set(k, v, ttl)``."""

    name: str = ""
    is_sync = False

    @abc.abstractmethod
    async def setup(self, directory: str) -> None:
        """Open the system on an (empty or populated) directory."""

    async def populate(self, pairs: Sequence[tuple[str, Value]], ttl: float) -> None:
        """Pre-populate (not timed); systems override this with their bulk path."""
        raise NotImplementedError

    @abc.abstractmethod
    async def close(self) -> None:
        """Release everything; must leave every acknowledged write on disk."""

    def hidden_misses(self) -> int:
        """Misses the timing loop cannot see (a memoized body that ran); a running count."""
        return 0


class AsyncSystem(System):
    @abc.abstractmethod
    async def get(self, key: str) -> Any: ...

    @abc.abstractmethod
    async def set(self, key: str, value: Value, ttl: float) -> None: ...

    async def populate(self, pairs: Sequence[tuple[str, Value]], ttl: float) -> None:
        for k, v in pairs:
            await self.set(k, v, ttl)

    def ops(self, ttl: float) -> tuple[AsyncGet, AsyncSet]:
        """The callables the timing loop invokes; override to drop the adapter's own frame."""
        return self.get, functools.partial(self.set, ttl=ttl)

    async def set_many(self, pairs: Sequence[tuple[str, Value]], ttl: float) -> None:
        """Write a few keys in one call (timed as one operation): the system's batch write
        where it has one, else one ``set`` per key, all at once (``asyncio.gather``)."""
        await asyncio.gather(*(self.set(k, v, ttl) for k, v in pairs))


class SyncSystem(System):
    is_sync = True

    @abc.abstractmethod
    def get(self, key: str) -> Any: ...

    @abc.abstractmethod
    def set(self, key: str, value: Value, ttl: float) -> None: ...

    async def populate(self, pairs: Sequence[tuple[str, Value]], ttl: float) -> None:
        for k, v in pairs:
            self.set(k, v, ttl)

    def ops(self, ttl: float) -> tuple[SyncGet, SyncSet]:
        return self.get, functools.partial(self.set, ttl=ttl)


# -- plans -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    name: str
    write_fraction: float


WORKLOADS = {
    w.name: w for w in (Workload("GET", 0.0), Workload("SET", 1.0), Workload("MIXED", 0.1))
}


def build_plans(
    *,
    n_keys: int,
    n_ops: int,
    concurrency: int,
    write_fraction: float,
    seed: int,
    owner: tuple[int, int] | None = None,
) -> list[list[Op]]:
    """Per-task operation lists: reads of random existing keys, writes with ``write_fraction``.

    ``owner=(index, n_owners)`` makes every task write only keys nobody else writes (key
    ``i`` with ``i % (n_owners * concurrency) == index * concurrency + task``) and stamps each
    written value with a unique ``seq``, so the last value of each key is known afterwards.
    """
    per_task = max(1, n_ops // concurrency)
    plans: list[list[Op]] = []
    for task in range(concurrency):
        rng = random.Random(seed * 1_000_003 + task)
        own: range | None = None
        if owner is not None:
            stride = owner[1] * concurrency
            own = range(owner[0] * concurrency + task, n_keys, stride)
        plan: list[Op] = []
        for n in range(per_task):
            if rng.random() >= write_fraction:
                plan.append((key(rng.randrange(n_keys)), None))
            elif own is None:
                i = rng.randrange(n_keys)
                plan.append((key(i), value(i)))
            else:
                i = own[rng.randrange(len(own))]
                plan.append((key(i), {**value(i), "seq": (task << 32) | n}))
        plans.append(plan)
    return plans


def last_writes(plans: Sequence[Sequence[Op]], done: Sequence[int]) -> dict[str, int]:
    """``key -> seq`` of the last write each task performed (plans built with ``owner``)."""
    last: dict[str, int] = {}
    for plan, n in zip(plans, done, strict=True):
        for k, v in plan[:n]:
            if v is not None:
                last[k] = v["seq"]
    return last


# -- the timing loop -------------------------------------------------------------------------


class Deadline:
    """A stop time shared by every task of a measurement; ``stop()`` ends them early."""

    __slots__ = ("ns",)

    def __init__(self, seconds: float) -> None:
        self.ns = perf_counter_ns() + int(seconds * 1e9)

    def stop(self) -> None:
        self.ns = 0

    def passed(self) -> bool:
        return perf_counter_ns() > self.ns


@dataclass
class TaskResult:
    latencies: list[int]
    misses: int = 0
    failed_writes: int = 0
    errors: int = 0
    first_error: str = ""


@dataclass
class RunStats:
    ops: int
    seconds: float
    ops_per_s: float
    p50_us: float
    p99_us: float
    p999_us: float
    max_us: float
    misses: int
    failed_writes: int
    errors: int
    first_error: str
    done: list[int]
    started_ns: int
    ended_ns: int

    def metrics(self) -> dict[str, float]:
        keys = ("ops", "seconds", "ops_per_s", "p50_us", "p99_us", "p999_us", "max_us")
        out = {k: float(getattr(self, k)) for k in keys}
        out |= {"misses": self.misses, "failed_writes": self.failed_writes, "errors": self.errors}
        return out


def percentiles_us(samples_ns: Sequence[int]) -> tuple[float, float, float, float]:
    """p50, p99, p99.9 and max in microseconds (nearest rank)."""
    if not samples_ns:
        return (float("nan"),) * 4
    s = sorted(samples_ns)
    n = len(s)

    def rank(q: float) -> float:
        return s[min(n - 1, max(0, int(q * n + 0.5) - 1))] / 1e3

    return rank(0.50), rank(0.99), rank(0.999), s[-1] / 1e3


def summarize(results: Sequence[TaskResult], started_ns: int, ended_ns: int) -> RunStats:
    lat = [x for r in results for x in r.latencies]
    seconds = max(ended_ns - started_ns, 1) / 1e9
    p50, p99, p999, mx = percentiles_us(lat)
    return RunStats(
        ops=len(lat),
        seconds=seconds,
        ops_per_s=len(lat) / seconds,
        p50_us=p50,
        p99_us=p99,
        p999_us=p999,
        max_us=mx,
        misses=sum(r.misses for r in results),
        failed_writes=sum(r.failed_writes for r in results),
        errors=sum(r.errors for r in results),
        first_error=next((r.first_error for r in results if r.first_error), ""),
        done=[len(r.latencies) for r in results],
        started_ns=started_ns,
        ended_ns=ended_ns,
    )


async def _drive(
    get: AsyncGet, set_: AsyncSet, plan: Sequence[Op], deadline: Deadline, pace: bool
) -> TaskResult:
    res = TaskResult([])
    record = res.latencies.append
    for k, v in plan:
        t0 = perf_counter_ns()
        if t0 > deadline.ns:
            break
        try:
            if v is None:
                if await get(k) is None:
                    res.misses += 1
            else:
                await set_(k, v)
        except Exception as exc:  # counted and reported, never hidden
            res.first_error = res.first_error or repr(exc)
            if v is None:
                res.errors += 1
            else:
                res.failed_writes += 1
        record(perf_counter_ns() - t0)
        if pace:  # let other tasks run between operations, like a request handler would
            await asyncio.sleep(0)
    return res


def _drive_sync(get: SyncGet, set_: SyncSet, plan: Sequence[Op], deadline: Deadline) -> TaskResult:
    # The same loop as _drive without await (see the module docstring).
    res = TaskResult([])
    record = res.latencies.append
    for k, v in plan:
        t0 = perf_counter_ns()
        if t0 > deadline.ns:
            break
        try:
            if v is None:
                if get(k) is None:
                    res.misses += 1
            else:
                set_(k, v)
        except Exception as exc:
            res.first_error = res.first_error or repr(exc)
            if v is None:
                res.errors += 1
            else:
                res.failed_writes += 1
        record(perf_counter_ns() - t0)
    return res


async def drive(
    system: System, plans: Sequence[Sequence[Op]], deadline: Deadline, *, pace: bool = False
) -> list[TaskResult]:
    """Drive ``plans`` (one task each) against ``system`` until done or ``deadline``."""
    if isinstance(system, SyncSystem):
        if len(plans) != 1:
            raise ValueError(f"{system.name} is single-threaded: concurrency 1 only")
        sget, sset = system.ops(TTL)
        return [_drive_sync(sget, sset, plans[0], deadline)]
    if isinstance(system, AsyncSystem):
        aget, aset = system.ops(TTL)
        return list(await asyncio.gather(*(_drive(aget, aset, p, deadline, pace) for p in plans)))
    raise TypeError(f"not a system: {system!r}")


async def run(
    system: System, plans: Sequence[Sequence[Op]], deadline: Deadline, *, pace: bool = False
) -> RunStats:
    """:func:`drive`, then the statistics (sorting the latencies happens after the clock)."""
    started = perf_counter_ns()
    results = await drive(system, plans, deadline, pace=pace)
    return summarize(results, started, perf_counter_ns())


async def flat_out(
    system: System, plans: Sequence[Sequence[Op]], deadline: Deadline
) -> tuple[int, int]:
    """Repeat ``plans`` until ``deadline`` (a background load): operations done, and failed.

    No percentiles: sorting latencies would stall the loop that a measurement shares."""
    done = failed = 0
    while not deadline.passed():
        for r in await drive(system, plans, deadline):
            done += len(r.latencies)
            failed += r.failed_writes + r.errors
    return done, failed


async def ticker(deadline: Deadline, period: float = 0.001) -> list[int]:
    """Event-loop lag: how far each ``sleep(period)`` overshoots, in ns, until ``deadline``."""
    lags: list[int] = []
    period_ns = int(period * 1e9)
    while not deadline.passed():
        t0 = perf_counter_ns()
        await asyncio.sleep(period)
        if deadline.passed():  # the measurement is over; what blocked this tick is not its load
            break
        lags.append(max(0, perf_counter_ns() - t0 - period_ns))
    return lags


# -- event loops -----------------------------------------------------------------------------


def loop_available(name: str) -> str | None:
    """None when the loop can run here, else why not."""
    if name == "asyncio":
        return None
    try:
        import uvloop  # noqa: F401
    except ImportError as exc:
        return f"uvloop not installed ({exc})"
    return None


def run_on(loop_name: str, main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a fresh event loop of the named kind."""
    if loop_name == "uvloop":
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    elif loop_name == "asyncio":
        loop = asyncio.new_event_loop()
    else:
        raise ValueError(f"loop must be one of {LOOPS}, not {loop_name!r}")
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        with contextlib.suppress(Exception):
            _cancel_leftovers(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        asyncio.set_event_loop(None)
        loop.close()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
