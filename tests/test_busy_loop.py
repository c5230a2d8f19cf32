"""Writes from an event loop that runs Python without pause.

A writer thread would wait for the GIL after each SQLite statement there (CPython hands it
over every switch interval, 5 ms), so a batch of 8 writes took ~350 ms. Once the loop is
seen congested (a queued flush ran more than 5 ms late), batches commit on the loop thread
for a second (``_executor._BUSY_HOLD``). These tests check the switch and what must hold
in that mode; the latency itself is measured in benchmarks/, not asserted here.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from shardcache import AsyncCache
from shardcache._shard import WAL_LIMIT

MakeCache = Callable[..., AsyncCache]


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def _written_behind_a_busy_task(cache: AsyncCache, items: dict[str, int]) -> None:
    """set_many whose flush is queued behind a task that holds the loop for 20 ms."""

    async def busy() -> None:
        _spin(0.02)

    writes = asyncio.ensure_future(cache.set_many(items))
    hog = asyncio.ensure_future(busy())  # queued after the writes' first step, before the flush
    await asyncio.gather(writes, hog)


async def test_a_congested_loop_commits_batches_itself(make_cache: MakeCache) -> None:
    cache = make_cache(shards=4)
    await cache.open()
    executor = cache._executor
    assert executor is not None
    big = {f"k{i}": i for i in range(32)}  # above the usual direct limit on every shard

    before = executor.direct_batches
    await cache.set_many(big)  # an idle loop: the writer thread takes it
    assert executor.direct_batches == before

    await _written_behind_a_busy_task(cache, {k: v + 1 for k, v in big.items()})
    assert executor.direct_batches == before + 4  # one transaction per shard, on the loop
    assert await cache.get_many(list(big)) == {k: v + 1 for k, v in big.items()}

    # In that mode for a while: the next batch, though on time, commits here too.
    await cache.set_many({k: v + 2 for k, v in big.items()})
    assert executor.direct_batches == before + 8
    other = make_cache(shards=4)  # and it is committed for everyone
    assert await other.get_many(list(big)) == {k: v + 2 for k, v in big.items()}


async def test_busy_mode_is_not_used_with_full_durability(make_cache: MakeCache) -> None:
    """durability="full" flushes the WAL on the writer side before answering: never direct."""
    cache = make_cache(shards=2, durability="full")
    await cache.open()
    executor = cache._executor
    assert executor is not None
    await _written_behind_a_busy_task(cache, {f"k{i}": i for i in range(16)})
    assert executor.direct_batches == 0
    assert await cache.get("k15") == 15


async def test_the_wal_stays_bounded_while_the_loop_commits(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    """Direct commits skip the writer thread's between-batch WAL restart; the checkpointer
    must still keep the log from growing past its limit for long."""
    cache = make_cache(shards=1)
    await cache.open()
    executor = cache._executor
    assert executor is not None
    value = b"x" * 4000
    wal = next(cache_dir.glob("shard-*.db-wal"))
    largest = 0
    for round_ in range(120):  # ~40 MB through the log, 10x its limit
        executor._busy_until = float("inf")  # held in busy mode for the whole test
        await cache.set_many({("k", round_, j): value for j in range(80)})
        largest = max(largest, os.stat(wal).st_size)
        await asyncio.sleep(0)  # let the checkpointer thread in, as a loop between requests
    assert executor.direct_batches >= 100
    assert largest < 4 * WAL_LIMIT, largest


async def test_a_write_queued_behind_a_locked_shard_keeps_its_order(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    """A write that had to wait for another process's lock (retried by the writer thread)
    is not overtaken by a later write of the same key committed on the loop thread."""
    import sqlite3

    cache = make_cache(shards=1)
    await cache.open()
    executor = cache._executor
    assert executor is not None
    executor._busy_until = float("inf")
    blocker = sqlite3.connect(next(cache_dir.glob("shard-*.db")), isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    first = asyncio.ensure_future(cache.set("k", "first"))
    await asyncio.sleep(0.05)  # the direct attempt met the lock: queued for the writer
    second = asyncio.ensure_future(cache.set("k", "second"))
    await asyncio.sleep(0.05)
    blocker.execute("COMMIT")
    blocker.close()
    await asyncio.wait_for(asyncio.gather(first, second), 15)
    assert await cache.get("k") == "second"
