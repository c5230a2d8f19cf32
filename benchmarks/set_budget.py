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
* ``diskcache-to_thread`` -- the peer the target is set against, SET c64 as ``run.py``.

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


_BARE = """
CREATE TABLE entries (key BLOB PRIMARY KEY, file TEXT, fmt INTEGER NOT NULL,
    size INTEGER NOT NULL, store_time REAL NOT NULL, expire_time REAL, purge_time REAL,
    access_time REAL NOT NULL, access_count INTEGER NOT NULL DEFAULT 0, tag TEXT,
    value BLOB) WITHOUT ROWID;
"""


def _sqlite(directory: str, schema: str, change_log: bool, transactions: int) -> float:
    """Writes/s of BATCH-upsert transactions in one thread; the writer's pragmas."""
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
        conn.execute(_sql.UPSERT_ROWS[len(rows)], params)  # the writer's multi-row upsert
        if change_log:
            conn.execute(_sql.APPEND_CHANGE, (b"k" * 10 * len(rows),))
        conn.execute("COMMIT")

    for start in range(0, SHARD_ROWS, BATCH):  # SHARD_ROWS is a multiple of BATCH
        transaction(list(range(start, start + BATCH)))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    plans = [rng.sample(range(SHARD_ROWS), BATCH) for _ in range(transactions)]
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
    rate = transactions * BATCH / busy
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
    with tempfile.TemporaryDirectory(prefix="shardcache-budget-") as root:
        for rep in range(args.reps):
            for name, measure in measures.items():  # interleaved: the noise hits all alike
                rate = measure(_fresh(root))
                if rate is not None:
                    rates[name].append(rate)
                    print(f"rep {rep + 1} {name:22s} {rate:10,.0f} writes/s", file=sys.stderr)
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
