"""Cancellation at every await point: never a wedged shard, never half a write.

The sweep starts an operation, lets the loop run ``N`` iterations, then cancels it, for
every ``N`` from 0 (before it starts) to past its end, for set (inline and value-file),
add, incr, set_many, delete, pop, get and get_or_set; on the direct (loop-thread) write
path and, with ``durability="full"``, on the writer thread; on asyncio and uvloop. After
each cancellation:

* the write either fully happened or not at all (each key of a set_many, too), and a write
  whose task finished is there;
* the key takes a new write at once (bounded: a wedged shard fails the test);
* no stampede lease is left behind by a cancelled get_or_set.

At the end ``aclose()`` completes (bounded), and a fresh instance sees the same state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from shardcache import AsyncCache, CacheClosedError

from .conftest import cache_threads, unique_dir

BOUND = 10.0  # seconds: any single wait longer than this is a wedge
SWEEP = range(0, 24)


async def cancel_after(coro: Awaitable[Any], n: int) -> tuple[bool, Any]:
    """Run ``coro`` as a task, cancel it after ``n`` loop iterations; (finished, result)."""
    task = asyncio.ensure_future(coro)
    for _ in range(n):
        if task.done():
            break
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=BOUND)
    assert done, f"a cancelled operation did not end within {BOUND}s: the shard is wedged"
    if task.cancelled():
        return False, None
    return True, task.result()  # it finished before the cancel landed


def big(tag: str) -> bytes:
    return tag.encode() * 2000  # beyond min_file_size: a value file


class Sweep:
    """One operation kind: prepare the key, run it, and say which outcomes are whole.

    ``outcomes[key]`` is ``(allowed, seen)``: the whole outcomes, and the one read after the
    cancellation. A cancelled write may still be committing on the writer thread when the
    cancellation is delivered: it is never half-done, and every write issued after the
    cancellation is ordered after it, so what the read sees is final, and a fresh instance
    must find the same.
    """

    def __init__(self, cache: AsyncCache) -> None:
        self.cache = cache
        self.outcomes: dict[Any, tuple[tuple[Any, ...], Any]] = {}
        self.finished = 0
        self.cancelled = 0

    async def read(self, key: Any, *allowed: Any) -> Any:
        # A write to the key first: queued behind a cancelled write the writer thread may
        # still be committing, so the read below sees its final outcome.
        await asyncio.wait_for(self.cache.touch(key, ttl=None), BOUND)
        got = await asyncio.wait_for(self.cache.get(key, "absent"), BOUND)
        self.outcomes[key] = (allowed, got)
        return got

    async def later_write_wins(self, key: Any, n: int) -> None:
        """On every other run, a write issued after the cancellation must be the survivor."""
        if n % 2 == 0:
            await asyncio.wait_for(self.cache.set(key, "later"), BOUND)
            self.outcomes[key] = (("later",), "later")

    async def run(self, kind: str, n: int) -> None:
        cache = self.cache
        key = (kind, n)
        op: Callable[[], Awaitable[Any]]
        if kind == "set":
            await cache.set(key, "old")
            op, before, after = (lambda: cache.set(key, "new")), "old", "new"
        elif kind == "set-file":
            await cache.set(key, big("old"))
            op, before, after = (lambda: cache.set(key, big("new"))), big("old"), big("new")
        elif kind == "add":
            op, before, after = (lambda: cache.add(key, "added")), "absent", "added"
        elif kind == "incr":
            await cache.set(key, 10)
            op, before, after = (lambda: cache.incr(key, 5)), 10, 15
        elif kind == "delete":
            await cache.set(key, "here")
            op, before, after = (lambda: cache.delete(key)), "here", "absent"
        elif kind == "pop":
            await cache.set(key, "here")
            op, before, after = (lambda: cache.pop(key)), "here", "absent"
        elif kind == "get":
            await cache.set(key, "here")
            op, before, after = (lambda: cache.get(key)), "here", "here"
        elif kind == "get_or_set":

            async def factory() -> str:
                for _ in range(3):
                    await asyncio.sleep(0)
                return "computed"

            op, before, after = (lambda: cache.get_or_set(key, factory)), "absent", "computed"
        elif kind == "set_many":
            keys = [(kind, n, i) for i in range(6)]
            await cache.set_many({k: "old" for k in keys})
            finished, _ = await cancel_after(cache.set_many({k: "new" for k in keys}), n)
            for k in keys:
                got = await self.read(k, "old", "new")
                assert got in ("old", "new"), (k, got)
                assert not finished or got == "new", (k, got)
                await self.later_write_wins(k, n)
            self._count(finished)
            return
        else:
            raise AssertionError(kind)
        finished, result = await cancel_after(op(), n)
        got = await self.read(key, before, after)
        assert got in (before, after), f"{kind} cancelled after {n} iterations left {got!r}"
        if finished:
            assert got == after, f"{kind} finished ({result!r}) but left {got!r}"
        self._count(finished)
        await self.later_write_wins(key, n)
        # Never wedged: the same key takes a write and a read right away.
        await asyncio.wait_for(cache.set(("after", key), n), BOUND)
        assert await asyncio.wait_for(cache.get(("after", key)), BOUND) == n

    def _count(self, finished: bool) -> None:
        if finished:
            self.finished += 1
        else:
            self.cancelled += 1


KINDS = ["set", "set-file", "add", "incr", "set_many", "delete", "pop", "get", "get_or_set"]


@pytest.mark.parametrize("durability", ["normal", "full"])
async def test_cancel_at_every_await_point(tmp_path: Path, durability: str, figures: Any) -> None:
    directory = unique_dir(tmp_path)
    options = {"shards": 2, "min_file_size": 1024, "durability": durability}
    cache = AsyncCache(directory, **options)
    sweep = Sweep(cache)
    await cache.open()
    try:
        for kind in KINDS:
            for n in SWEEP:
                await sweep.run(kind, n)
        # A burst: many writes in flight together (so they combine into batches), half of
        # them cancelled at once, while the writer works.
        tasks = [asyncio.ensure_future(cache.set(("burst", i), i)) for i in range(200)]
        await asyncio.sleep(0)
        for task in tasks[::2]:
            task.cancel()
        done, _ = await asyncio.wait(tasks, timeout=BOUND)
        assert len(done) == len(tasks), "a burst of cancelled writes wedged the shard"
        for i, task in enumerate(tasks):
            got = await sweep.read(("burst", i), "absent", i)
            assert got in ("absent", i)
            if not task.cancelled():
                assert got == i
        # Leases: a cancelled get_or_set leaves none behind (released, or never taken).
        await asyncio.wait_for(cache.set("barrier", 1), BOUND)
        await asyncio.sleep(0.05)  # releases scheduled by cancelled acquisitions land
        leases = 0
        for shard in sorted(directory.glob("shard-*.db")):
            with contextlib.closing(sqlite3.connect(shard)) as conn:
                leases += conn.execute("SELECT count(*) FROM leases").fetchone()[0]
        assert leases == 0, f"{leases} stampede leases outlived their cancelled callers"
    finally:
        await asyncio.wait_for(cache.aclose(), BOUND)
    assert not cache_threads(directory), "aclose() left threads running"
    # The files hold exactly what the sweep saw.
    async with AsyncCache(directory, **options) as fresh:
        for key, (allowed, seen) in sweep.outcomes.items():
            final = await fresh.get(key, "absent")
            assert final in allowed, (key, final, allowed)
            assert final == seen, f"{key}: the sweep saw {seen!r}, the files hold {final!r}"
    figures.add(
        f"{durability}: {sweep.cancelled + sweep.finished} cancellations swept "
        f"({sweep.cancelled} landed mid-operation, {sweep.finished} after it finished), "
        "no partial write, no wedge, no lease left"
    )


async def _wait_idle(lock: Any) -> None:
    deadline = time.monotonic() + BOUND
    while lock.locked():
        assert time.monotonic() < deadline, "the open never finished"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("n", [1, 2, 3])
async def test_aclose_during_open_closes(tmp_path: Path, n: int) -> None:
    directory = unique_dir(tmp_path)
    cache = AsyncCache(directory, shards=4)
    await cancel_after(cache.set("k", 1), n)
    await asyncio.wait_for(cache.aclose(), BOUND)
    await _wait_idle(cache._open_lock)
    try:
        assert not cache_threads(directory), "threads outlived aclose()"
        with pytest.raises(CacheClosedError):
            await cache.get("k")
    finally:
        if cache._state == "open":
            await cache.aclose()  # the bug reopened it: close it for real


@pytest.mark.parametrize("n", [1, 2])
async def test_cancelled_aclose_can_be_finished(tmp_path: Path, n: int) -> None:
    directory = unique_dir(tmp_path)
    cache = AsyncCache(directory, shards=2)
    await cache.open()
    writes = [asyncio.ensure_future(cache.set(("k", i), i)) for i in range(20)]
    await cancel_after(cache.aclose(), n)
    await asyncio.wait_for(cache.aclose(), BOUND)
    await asyncio.wait(writes, timeout=BOUND)
    leaked = cache_threads(directory)
    _stop(leaked)  # what the bug left running: stop it, then report it
    assert not leaked, f"threads outlived a cancelled aclose() and a second one: {leaked}"


_TWO_ACLOSES = """
import asyncio, sys, tempfile
from shardcache import AsyncCache

async def main() -> None:
    for _ in range(20):
        cache = AsyncCache(tempfile.mkdtemp(dir=sys.argv[1]))
        opening = asyncio.ensure_future(cache.open())
        await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(cache.aclose(), cache.aclose()), 10)
        await asyncio.gather(opening, return_exceptions=True)

asyncio.run(main())
print("ok")
"""


def test_two_acloses_while_opening_tear_down_once(tmp_path: Path) -> None:
    """Two aclose() calls racing an open: the second one, back from waiting for the open,
    must join the first one's teardown. Two teardowns closed connections a writer thread
    still used (SIGSEGV, or an aclose that never returned). In a child process: a crash
    must fail this test, not kill the test run."""
    import subprocess
    import sys

    child = subprocess.run(
        [sys.executable, "-c", _TWO_ACLOSES, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0 and child.stdout.strip() == "ok", (
        child.returncode,
        child.stderr[-2000:],
    )


async def test_writes_racing_aclose_of_an_unopened_cache_fail_cleanly(tmp_path: Path) -> None:
    """Writes that wait for the open while aclose() tears the cache down either commit or
    raise CacheClosedError (never an AssertionError from a missing executor)."""
    outcomes: set[str] = set()
    for _ in range(15):
        cache = AsyncCache(unique_dir(tmp_path), shards=2)
        writes = [asyncio.ensure_future(cache.set(f"k{i}", i)) for i in range(20)]
        writes.append(asyncio.ensure_future(cache.set_many({"m": 1})))
        writes.append(asyncio.ensure_future(cache.clear()))
        await asyncio.sleep(0)
        await asyncio.wait_for(cache.aclose(), BOUND)
        for result in await asyncio.gather(*writes, return_exceptions=True):
            assert result is None or isinstance(result, (int, CacheClosedError)), repr(result)
            outcomes.add(type(result).__name__)
    assert outcomes <= {"NoneType", "int", "CacheClosedError"}


def _stop(names: list[str]) -> None:
    for thread in threading.enumerate():
        if thread.name in names:
            cond, stop = getattr(thread, "cond", None), getattr(thread, "stop", None)
            if stop is not None:
                stop()
            elif cond is not None:
                with cond:
                    thread.closing = True  # type: ignore[attr-defined]
                    cond.notify()
            thread.join(BOUND)


def open_files_under(directory: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(f"{directory}/"):
                found.append(target[len(str(directory)) + 1 :])
    return sorted(found)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_aclose_closes_every_file(tmp_path: Path) -> None:
    directory = unique_dir(tmp_path)
    cache = AsyncCache(directory, shards=2)
    await cache.set_many({i: i for i in range(50)})
    assert len(await cache.get_many(range(50))) == 50  # reads in the pool's threads
    assert await cache.count() == 50
    # A bulk read still running in the pool when aclose() is called.
    gate = threading.Event()
    loop = asyncio.get_running_loop()
    assert cache._pool is not None
    running = [loop.run_in_executor(cache._pool, gate.wait, 2.0) for _ in range(2)]
    try:
        await asyncio.wait_for(cache.aclose(), BOUND)
        assert open_files_under(directory) == [], "files outlive aclose()"
    finally:
        gate.set()
        await asyncio.gather(*running)
