"""Writes from an event loop that runs Python without pause.

A writer thread would wait for the GIL after each SQLite statement there (CPython hands it
over every switch interval, 5 ms), so a batch of 8 writes took ~350 ms. Once the loop is
seen congested (a queued flush ran more than 5 ms late), batches commit on the loop thread
for a second (``_executor._BUSY_HOLD``). These tests check the switch and what must hold
in that mode; the latency itself is measured in benchmarks/, not asserted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shardcache import AsyncCache
from shardcache._shard import WAL_LIMIT, Shard

MakeCache = Callable[..., AsyncCache]


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Around the steps that must NOT look congested: a collection that pauses the loop
    for 5 ms (the whole suite's heap is large) would rightly count as congestion."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


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
    with _no_gc():
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


async def test_a_large_set_many_is_not_taken_for_a_congested_loop(make_cache: MakeCache) -> None:
    """set_many of 20k keys spends tens of ms queueing its own writes before the flush
    runs: that is the caller's work, not a congested loop, and the batch goes to the writer
    thread (committing it on the loop would block it for the whole transaction)."""
    cache = make_cache(shards=2)
    await cache.open()
    executor = cache._executor
    assert executor is not None
    items = {("k", i): "v" * 50 for i in range(20_000)}
    with _no_gc():
        await cache.set_many(items)
    assert executor.direct_batches == 0
    assert executor._busy_until == 0.0
    assert await cache.count() == 20_000


async def test_with_full_durability_busy_mode_flushes_before_answering(
    make_cache: MakeCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """durability="full" commits on the loop thread only in busy mode, and then flushes
    every WAL the round touched (fdatasync) before any caller of the round is answered."""
    cache = make_cache(shards=2, durability="full")
    await cache.open()
    executor = cache._executor
    assert executor is not None
    events: list[str] = []
    original = Shard.sync_wal

    def sync_wal(shard: Shard) -> None:
        events.append(f"flush {shard.index}")
        original(shard)

    monkeypatch.setattr(Shard, "sync_wal", sync_wal)
    with _no_gc():
        await cache.set("small", 1)  # an idle loop, few writes: the writer thread, as always
    assert executor.direct_batches == 0 and len(events) == 1
    events.clear()
    writes = {f"k{i}": i for i in range(16)}
    done = asyncio.ensure_future(_written_behind_a_busy_task(cache, writes))
    done.add_done_callback(lambda _: events.append("answered"))
    await done
    assert executor.direct_batches == 2
    assert sorted(events) == ["answered", "flush 0", "flush 1"] and events[-1] == "answered"
    assert await make_cache(shards=2).get_many(list(writes)) == writes


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
