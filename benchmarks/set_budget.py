"""Where a SET at concurrency 64 spends its time: the budget behind the SET c64 target.

The SET c64 target (>= 10x diskcache via ``to_thread``) asks for 70-100k writes/s on this
machine. This probe measures, in one run, the parts a write is made of, each alone:

* ``end to end`` -- 64 tasks overwriting the 10k ``user:{i}`` keys with a ttl, 8 shards,
  as ``run.py``'s SET c64 (without its per-op latency bookkeeping);
* ``loop side`` -- the same tasks and ``AsyncCache.set`` calls, with the executor answering
  every write on the next loop iteration and never touching SQLite (a probe-only patch of
  ``Executor.submit``): the key and value encoding, the future, the task switches;
* ``sqlite: shard schema`` -- raw sqlite3 in one thread, no event loop: transactions of 8
  upserts (one multi-row statement) plus the change-log row, into a 1,250-row table with
  the shard's schema and triggers (one shard's share of the 10k keys);
* ``sqlite: bare table`` -- the same upserts into the same columns with no trigger, no
  change log: SQLite's own floor for a random-row overwrite batch on this machine;
* ``diskcache-to_thread`` -- the peer the target is set against, SET c64 as ``run.py``;
* a traced ``end to end`` run -- the writer thread's rounds timed, and the gaps between
  them, when the loop answers one round and queues the next; the CPU the process used;
* the transaction cost model -- SQLite alone on the shard schema at 1, 4, 8 and 16 rows
  per transaction, fitted to a fixed cost per transaction plus a cost per row.

A round of 64 writes is serial by construction (the loop answers 64 callers and queues
the next 64, then the writer commits them), so ``loop side + sqlite`` per write bounds the
throughput unless the two overlap, which the GIL prevents in practice (docs/benchmarks.md,
"The misses"). Run: ``python benchmarks/set_budget.py [--writes 200000] [--reps 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import msgspec

from shardcache import AsyncCache, _executor, _sql
from workloads import TTL, key, value

KEYS = 10_000
TASKS = 64
SHARD_ROWS = KEYS // 8 // 8 * 8  # one shard's share, whole batches
BATCH = 8  # writes per shard transaction in a round of 64 over 8 shards
TXN_SIZES = (1, 4, 8, 16)  # the transaction cost model's sizes


async def _set_tasks(cache: AsyncCache, writes: int, seed: int) -> float:
    """64 tasks overwriting random keys; returns writes/s."""
    keys = [key(i) for i in range(KEYS)]
    values = [value(i) for i in range(KEYS)]
    per_task = writes // TASKS

    async def task(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        plan = [rng.randrange(KEYS) for _ in range(per_task)]
        set_ = cache.set
        for i in plan:
            await set_(keys[i], values[i], ttl=TTL)

    started = time.perf_counter()
    await asyncio.gather(*(task(n) for n in range(TASKS)))
    return per_task * TASKS / (time.perf_counter() - started)


async def _engine(directory: str, writes: int, loop_only: bool) -> float:
    async with AsyncCache(directory, shards=8) as cache:
        await cache.set_many({key(i): value(i) for i in range(KEYS)}, ttl=TTL)
        real = _executor.Executor.submit
        if loop_only:

            def answered(self: Any, index: int, fn: Any, args: Any, *, direct: bool = True) -> Any:
                future = asyncio.get_running_loop().create_future()
                future.get_loop().call_soon(future.set_result, None)
                return future

            _executor.Executor.submit = answered  # type: ignore[method-assign]
        try:
            await _set_tasks(cache, writes // 4, seed=1)  # warm-up
            return await _set_tasks(cache, writes, seed=2)
        finally:
            _executor.Executor.submit = real  # type: ignore[method-assign]


class _Trace:
    """What one traced end-to-end run saw: the writer's rounds and the loop's share."""

    def __init__(self) -> None:
        self.rounds: list[tuple[float, float, int]] = []  # start, end, writes
        self.rate = 0.0
        self.cores = 0.0  # CPU seconds per wall second of the whole process


async def _traced(directory: str, writes: int) -> _Trace:
    """``end to end`` with the writer's rounds timed (probe-only wrapper of ``_round``)."""
    trace = _Trace()
    real = _executor._Worker._round
    clock = time.perf_counter

    def timed(self: Any, batch: dict[int, list[Any]]) -> None:
        started = clock()
        real(self, batch)
        trace.rounds.append((started, clock(), sum(len(ops) for ops in batch.values())))

    async with AsyncCache(directory, shards=8) as cache:
        await cache.set_many({key(i): value(i) for i in range(KEYS)}, ttl=TTL)
        await _set_tasks(cache, writes // 4, seed=1)  # warm-up
        _executor._Worker._round = timed  # type: ignore[method-assign]
        try:
            cpu, wall = os.times(), clock()
            trace.rate = await _set_tasks(cache, writes, seed=2)
            after = os.times()
            trace.cores = (after.user + after.system - cpu.user - cpu.system) / (clock() - wall)
        finally:
            _executor._Worker._round = real  # type: ignore[method-assign]
    return trace


def _report_trace(traces: list[_Trace]) -> None:
    """Median writer round, writes per round, and the gap the loop leaves between rounds."""
    rounds = [r for t in traces for r in t.rounds]
    gaps = [b[0] - a[1] for t in traces for a, b in zip(t.rounds, t.rounds[1:], strict=False)]
    span = statistics.median(end - start for start, end, _ in rounds) * 1e6
    size = statistics.median(n for _, _, n in rounds)
    gap = statistics.median(gaps) * 1e6
    rate = statistics.median(t.rate for t in traces)
    cores = statistics.median(t.cores for t in traces)
    print(f"\ntraced end to end, {len(traces)} runs: {rate:,.0f} writes/s, {cores:.2f} of 2 cores")
    print(
        f"  writer round (median): {span:4.0f} us, {size:.0f} writes ({span / size:5.2f} us/write)"
    )
    print(f"  loop between rounds:   {gap:4.0f} us ({gap / size:5.2f} us per write)")
    print("  (the loop answers a round and queues the next while the writer idles, then idles)")


def _report_txn_cost(costs: dict[int, list[float]]) -> None:
    """A transaction's fixed cost and each row's, fitted to the medians (least squares)."""
    sizes = sorted(costs)
    us = [statistics.median(costs[n]) for n in sizes]  # us per transaction
    mean_n, mean_t = statistics.fmean(sizes), statistics.fmean(us)
    slope = sum((n - mean_n) * (t - mean_t) for n, t in zip(sizes, us, strict=True)) / sum(
        (n - mean_n) ** 2 for n in sizes
    )
    print("\nSQLite alone, shard schema, by transaction size (us per transaction):")
    print("  " + ", ".join(f"{n} rows {t:.1f}" for n, t in zip(sizes, us, strict=True)))
    print(f"  fit: {mean_t - slope * mean_n:.1f} us per transaction + {slope:.2f} us per row")


_BARE = """
CREATE TABLE entries (key BLOB PRIMARY KEY, file TEXT, fmt INTEGER NOT NULL,
    size INTEGER NOT NULL, store_time REAL NOT NULL, expire_time REAL, purge_time REAL,
    access_time REAL NOT NULL, access_count INTEGER NOT NULL DEFAULT 0, tag TEXT,
    value BLOB) WITHOUT ROWID;
"""


def _sqlite(
    directory: str, schema: str, change_log: bool, transactions: int, batch: int = BATCH
) -> float:
    """Writes/s of ``batch``-upsert transactions in one thread; the writer's pragmas."""
    conn = sqlite3.connect(os.path.join(directory, "probe.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.executescript(schema)
    encode = msgspec.msgpack.Encoder().encode
    keys = [encode(key(i)) for i in range(SHARD_ROWS)]
    blobs = [encode(value(i)) for i in range(SHARD_ROWS)]
    rng = random.Random(3)

    def transaction(rows: list[int]) -> None:
        now = time.time()
        params: list[Any] = []
        for i in rows:
            k, b = keys[i], blobs[i]
            params += (k, b, None, 1, len(k) + len(b) + 64, now, now + TTL, now + TTL, now, None)
        conn.execute("BEGIN IMMEDIATE")
        # The writer's statement: its multi-row upsert, or the single-row one.
        conn.execute(_sql.UPSERT_ROWS.get(len(rows), _sql.UPSERT), params)
        if change_log:
            conn.execute(_sql.APPEND_CHANGE, (b"k" * 10 * len(rows),))
        conn.execute("COMMIT")

    for start in range(0, SHARD_ROWS, BATCH):  # SHARD_ROWS is a multiple of BATCH
        transaction(list(range(start, start + BATCH)))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    plans = [rng.sample(range(SHARD_ROWS), batch) for _ in range(transactions)]
    clock = time.perf_counter
    busy = 0.0
    for n, rows in enumerate(plans):
        if n % 16 == 0:
            # The checkpointer's PASSIVE checkpoint every 16 batches, untimed: in the engine
            # it runs on its own thread, beside the writer.
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        started = clock()
        transaction(rows)
        busy += clock() - started
    rate = transactions * batch / busy
    conn.close()
    return rate


async def _diskcache(directory: str, writes: int) -> float | None:
    try:
        import diskcache
    except ImportError:
        return None
    cache = diskcache.Cache(directory)
    for i in range(KEYS):
        cache.set(key(i), value(i), expire=TTL)
    keys = [key(i) for i in range(KEYS)]
    values = [value(i) for i in range(KEYS)]
    per_task = writes // TASKS

    async def task(n: int) -> None:
        rng = random.Random(n)
        for _ in range(per_task):
            i = rng.randrange(KEYS)
            await asyncio.to_thread(cache.set, keys[i], values[i], expire=TTL)

    started = time.perf_counter()
    await asyncio.gather(*(task(n) for n in range(TASKS)))
    rate = per_task * TASKS / (time.perf_counter() - started)
    cache.close()
    return rate


def _fresh(root: str) -> str:
    return tempfile.mkdtemp(dir=root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=200_000, help="writes per engine run")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    measures: dict[str, Callable[[str], float | None]] = {
        "end to end": lambda d: asyncio.run(_engine(d, args.writes, loop_only=False)),
        "loop side": lambda d: asyncio.run(_engine(d, args.writes, loop_only=True)),
        "sqlite: shard schema": lambda d: _sqlite(d, _sql.SCHEMA, True, 6000),
        "sqlite: bare table": lambda d: _sqlite(d, _BARE, False, 6000),
        "diskcache-to_thread": lambda d: asyncio.run(_diskcache(d, 20_000)),
    }
    rates: dict[str, list[float]] = {name: [] for name in measures}
    traces: list[_Trace] = []
    costs: dict[int, list[float]] = {n: [] for n in TXN_SIZES}
    with tempfile.TemporaryDirectory(prefix="shardcache-budget-") as root:
        for rep in range(args.reps):
            for name, measure in measures.items():  # interleaved: the noise hits all alike
                rate = measure(_fresh(root))
                if rate is not None:
                    rates[name].append(rate)
                    print(f"rep {rep + 1} {name:22s} {rate:10,.0f} writes/s", file=sys.stderr)
            traces.append(asyncio.run(_traced(_fresh(root), args.writes // 2)))
            for n in TXN_SIZES:
                rate = _sqlite(_fresh(root), _sql.SCHEMA, True, 24_000 // n, batch=n)
                costs[n].append(n * 1e6 / rate)
    median = {name: statistics.median(r) for name, r in rates.items() if r}
    print(f"\nmedians of {args.reps} (SET c64, 10k keys, ~200-byte values, ttl):")
    for name, rate in median.items():
        print(f"  {name:22s} {rate:10,.0f} writes/s  {1e6 / rate:6.2f} us/write")
    loop_us = 1e6 / median["loop side"]
    serial = loop_us + 1e6 / median["sqlite: shard schema"]
    floor = loop_us + 1e6 / median["sqlite: bare table"]
    print(f"  serial bound, loop side + shard-schema SQLite: {1e6 / serial:10,.0f} writes/s")
    print(f"  serial bound, loop side + bare-table SQLite:   {1e6 / floor:10,.0f} writes/s")
    peer = median.get("diskcache-to_thread")
    if peer:
        print(f"  10x diskcache-to_thread needs:                 {10 * peer:10,.0f} writes/s")
        print(
            f"  end to end / diskcache-to_thread:              {median['end to end'] / peer:9.2f}x"
        )
    _report_trace(traces)
    _report_txn_cost(costs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
