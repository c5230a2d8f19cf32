"""The slow-read guard: a shard whose reads turn slow or busy never freezes the loop.

Reads run on the event-loop thread (cheaper than a thread hop), so the engine guards them:
a read that fails with SQLITE_BUSY, or reads that keep taking long, send that shard's
reads to a thread for a while. These tests force a shard into each state and check that every read
is still answered correctly, that the loop-thread connection is left alone, and that the
loop keeps serving the other shards meanwhile.

Forcing a *read* to be slow or busy needs one seam below the public API: the shard's
loop-thread cursor is swapped for a wrapper (``_shard_of``). The real-lock test needs no
seam: another process holds the shard's write lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from _helpers import Child
from shardcache import AsyncCache, CacheTimeoutError

BOUND = 10.0


def _shard_of(cache: AsyncCache, key: Any) -> Any:
    """The engine's shard object holding ``key`` (the fault-injection seam)."""
    return cache._route(key)[1]


class _Wrapped:
    """A loop-thread cursor that is slow, or busy, before (or instead of) doing its work."""

    def __init__(self, real: sqlite3.Cursor, *, delay: float = 0.0, busy: bool = False) -> None:
        self.real = real
        self.delay = delay
        self.busy = busy
        self.calls = 0

    def execute(self, *args: Any) -> Any:
        self.calls += 1
        if self.busy:
            raise sqlite3.OperationalError("database is locked")
        time.sleep(self.delay)  # a slow disk under the loop thread
        return self.real.execute(*args)


async def _two_shard_keys(cache: AsyncCache) -> tuple[list[int], list[int]]:
    await cache.set_many({i: f"v{i}" for i in range(40)})
    first = _shard_of(cache, 0).index
    mine = [i for i in range(40) if _shard_of(cache, i).index == first]
    others = [i for i in range(40) if _shard_of(cache, i).index != first]
    return mine, others


async def _serve(cache: AsyncCache, keys: list[int], rounds: int) -> None:
    for _ in range(rounds):
        for key in keys:
            assert await cache.get(key) == f"v{key}"


@pytest.mark.parametrize("mode", ["slow", "busy"])
async def test_a_slow_or_busy_shard_leaves_the_loop_thread(make_cache, mode: str) -> None:
    cache = make_cache(shards=2, near_cache=0)
    mine, others = await _two_shard_keys(cache)
    shard = _shard_of(cache, mine[0])
    wrapped = _Wrapped(shard.cursor, delay=0.02, busy=mode == "busy")
    shard.cursor = wrapped
    start = time.monotonic()
    # The guarded shard and a healthy one, served side by side: every answer is right.
    await asyncio.wait_for(
        asyncio.gather(_serve(cache, mine, 10), _serve(cache, others, 10)), BOUND
    )
    elapsed = time.monotonic() - start
    reads = 10 * len(mine)
    # Unguarded, every one of these reads would run (slowly) on the loop thread. Guarded,
    # a few slow reads (one busy read) trip the guard and the next ones go to a thread for
    # a while (about a second): allow a few loop-thread reads per second that passed.
    assert 1 <= wrapped.calls <= 4 + 4 * elapsed < reads


async def test_a_shard_locked_by_another_process(make_cache, cache_dir: Path) -> None:
    cache = make_cache(shards=2)
    mine, others = await _two_shard_keys(cache)
    shard_file = cache_dir / f"shard-{_shard_of(cache, mine[0]).index:03d}.db"
    with Child("lock", str(shard_file)) as locker:
        locker.expect("locked")
        write = asyncio.create_task(cache.set(mine[0], "written while locked"))
        # Reads of the locked shard and of the other one are all served meanwhile.
        await asyncio.wait_for(_serve(cache, mine[1:] + others, 3), BOUND)
        assert not write.done()
        locker.send("release")
        locker.expect("released")
        await asyncio.wait_for(write, BOUND)
        locker.finish()
    assert await cache.get(mine[0]) == "written while locked"


async def test_a_locked_shard_does_not_hold_up_writes_to_other_shards(
    make_cache, cache_dir: Path
) -> None:
    cache = make_cache(shards=2)
    mine, others = await _two_shard_keys(cache)
    shard_file = cache_dir / f"shard-{_shard_of(cache, mine[0]).index:03d}.db"
    with Child("lock", str(shard_file)) as locker:
        locker.expect("locked")
        # Enough writes for a batch of the writer thread, which then waits for the lock.
        blocked = asyncio.create_task(cache.set_many({k: "after the lock" for k in mine}))
        try:
            # While the lock is held (half a second here), writes elsewhere go through.
            until = time.monotonic() + 0.5
            i = 0
            while time.monotonic() < until:
                await asyncio.wait_for(cache.set(others[i % len(others)], i), 1.0)
                i += 1
        finally:
            locker.send("release")
            locker.expect("released")
            await asyncio.wait_for(blocked, BOUND)


async def test_a_read_that_stays_busy_raises_cache_timeout_error(make_cache) -> None:
    cache = make_cache(shards=1, near_cache=0)
    await cache.set("k", 1)
    shard = _shard_of(cache, "k")
    shard.cursor = _Wrapped(shard.cursor, busy=True)
    busy = _Wrapped(shard.thread_reader().cursor(), busy=True)
    shard.thread_reader = lambda: busy  # the thread's read ran out of busy timeout too
    with pytest.raises(CacheTimeoutError):
        await cache.get("k")
