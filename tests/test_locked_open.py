"""Another process holds a shard's lock: opening the cache, and a leader's own writes.

A shard made before is checked in a read transaction: a lock another process holds (its
own write, a long ``vacuum()``) does not hold up the open. A shard another process is still
creating does (its journal-mode switch needs the file to itself); ``@acached`` then waits
no longer than its ``lock_timeout`` and runs the function instead (fail open), and
``get_or_set`` raises ``CacheTimeoutError``. A leader whose store and lease release meet a
lock waits ``lock_timeout`` for each at most; the writes go on in the background.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from _helpers import Child, locked, unmade_shards, wait_for_condition
from shardcache import AsyncCache, CacheTimeoutError, acached

# Far below the open's own 30 s wait for a lock: what these tests tell apart.
BOUND = 8.0


def _shard_files(directory: Path, shards: int) -> list[str]:
    return [str(directory / f"shard-{i:03d}.db") for i in range(shards)]


async def test_a_made_cache_opens_while_another_process_keeps_its_shards_locked(
    cache_dir: Path,
) -> None:
    async with AsyncCache(cache_dir, shards=2) as cache:
        await cache.set_many({i: f"v{i}" for i in range(20)})
    with Child("lock", *_shard_files(cache_dir, 2)) as locker:
        locker.expect("locked")
        cache = AsyncCache(cache_dir, shards=2)
        try:
            # Every shard's write lock is taken: the open and the reads need none of them.
            got = await asyncio.wait_for(cache.get_many(range(20)), BOUND)
            assert got == {i: f"v{i}" for i in range(20)}
            write = asyncio.create_task(cache.set(0, "after the lock"))
            await asyncio.sleep(0.2)
            assert not write.done()  # the write does wait for the lock
            locker.send("release")
            locker.expect("released")
            await asyncio.wait_for(write, BOUND)
            locker.finish()
            assert await cache.get(0) == "after the lock"
        finally:
            await cache.aclose()


@pytest.mark.asyncio(loop_factories=["asyncio"])  # waits on another process: once is enough
async def test_acached_waits_for_an_open_no_longer_than_lock_timeout(
    cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = unmade_shards(cache_dir, 2)  # shards another process is creating right now
    cache = AsyncCache(cache_dir, shards=2)
    runs: list[int] = []

    @acached(cache, ttl=60, lock_timeout=0.5)
    async def double(x: int) -> int:
        runs.append(x)
        return 2 * x

    with locked(*files):
        with caplog.at_level(logging.WARNING, logger="shardcache"):
            # The open waits for the lock (up to 30 s); the calls give up on it after
            # lock_timeout, all of them on the one open in progress, and fail open.
            got = await asyncio.wait_for(asyncio.gather(*(double(i) for i in range(5))), BOUND)
        assert got == [0, 2, 4, 6, 8]
        assert sorted(runs) == [0, 1, 2, 3, 4]
        assert "open failed" in caplog.text
    try:
        # The lock gone, the open in progress completes and the cache serves as usual.
        assert await asyncio.wait_for(double(21), BOUND) == 42
        assert await asyncio.wait_for(double(21), BOUND) == 42
        assert runs.count(21) == 1
    finally:
        await asyncio.wait_for(cache.aclose(), BOUND)


@pytest.mark.asyncio(loop_factories=["asyncio"])  # waits on another process: once is enough
async def test_get_or_set_raises_cache_timeout_error_after_lock_timeout(cache_dir: Path) -> None:
    files = unmade_shards(cache_dir, 2)
    cache = AsyncCache(cache_dir, shards=2)
    runs: list[str] = []

    async def factory() -> str:
        runs.append("ran")
        return "computed"

    with locked(*files):
        with pytest.raises(CacheTimeoutError):  # get_or_set does not fail open
            await asyncio.wait_for(cache.get_or_set("k", factory, lock_timeout=0.3), BOUND)
        assert runs == []
    try:
        assert await asyncio.wait_for(cache.get_or_set("k", factory), BOUND) == "computed"
        assert await cache.get("k") == "computed"
    finally:
        await asyncio.wait_for(cache.aclose(), BOUND)


@pytest.mark.asyncio(loop_factories=["asyncio"])  # waits on another process: once is enough
async def test_a_leader_gets_its_result_within_lock_timeout_when_its_store_waits(
    cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The shards get locked while the function runs: its store and its lease release
    would each wait SQLite's busy timeout (10 s); the caller waits lock_timeout for each at
    most, and the store lands once the lock is gone."""
    cache = AsyncCache(cache_dir, shards=2)
    await cache.set("seed", 1)  # made and open: the lease below is taken at once
    lockers: list[Child] = []

    @acached(cache, ttl=60, lock_timeout=0.3)
    async def slow(x: int) -> int:
        locker = Child("lock", *_shard_files(cache_dir, 2))
        lockers.append(locker)
        await asyncio.to_thread(locker.expect, "locked")
        return 2 * x

    try:
        with caplog.at_level(logging.WARNING, logger="shardcache"):
            assert await asyncio.wait_for(slow(4), BOUND) == 8
        assert "write failed" in caplog.text and "in the background" in caplog.text
        lockers[0].send("release")
        lockers[0].expect("released")
        lockers[0].finish()
        # The store went on meanwhile, and committed once the lock was gone.
        key = slow.cache_key(4)

        async def stored() -> bool:
            return bool(await cache.get(key) == 8)

        await wait_for_condition(stored, timeout=BOUND, what="the store after the lock")
    finally:
        for locker in lockers:
            locker.kill()
            locker.__exit__()
        await asyncio.wait_for(cache.aclose(), 30)
