"""Disk full: writes raise a clear CacheError, reads keep working, nothing stored is lost,
and writes work again once space returns. ``@acached`` fails open meanwhile.

The cache lives on a real 2 MiB filesystem (tmpfs, or a loop device) that the test fills
with one file, so SQLite and the value files meet ENOSPC exactly as in production.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from shardcache import AsyncCache, CacheError, acached

from .conftest import fill_up

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])

OPTIONS: dict[str, Any] = {"shards": 2, "min_file_size": 2048}
KEEP: dict[str, Any] = {f"keep-{i}": {"i": i, "pad": "k" * 100} for i in range(100)}
BIG_KEEP = bytes(range(256)) * 32  # 8 KiB, in its own value file


def assert_clear(exc: BaseException) -> None:
    assert isinstance(exc, CacheError), f"not a CacheError: {exc!r}"
    assert not isinstance(exc, sqlite3.Error)
    assert "full" in str(exc) or "space" in str(exc), f"does not say the disk is full: {exc}"


async def test_disk_full(small_fs: Path, free_space: Any, caplog: pytest.LogCaptureFixture) -> None:
    directory = small_fs / "cache"
    expected: dict[str, Any] = {**KEEP, "big-keep": BIG_KEEP, "counter": 5}
    async with AsyncCache(directory, **OPTIONS) as cache:
        await cache.set_many({k: v for k, v in expected.items() if k != "counter"})
        await cache.incr("counter", 5)
        filler = fill_up(small_fs)
        assert free_space(small_fs) < 4096

        # Writes fail with a clear CacheError and change nothing. (A small one may still
        # fit in space SQLite already holds, such as a recycled WAL: then it must work.)
        def gone(key: str) -> None:
            expected.pop(key)

        def put(key: str, value: Any) -> None:
            expected[key] = value

        attempts: dict[str, tuple[Any, Any]] = {
            "set": (lambda: cache.set("keep-1", "x" * 3000), lambda _: put("keep-1", "x" * 3000)),
            "set big": (lambda: cache.set("big-keep", b"n" * 50_000), None),
            "set_many": (lambda: cache.set_many({f"new-{i}": "v" * 500 for i in range(50)}), None),
            "add": (
                lambda: cache.add("new-add", "v" * 3000),
                lambda r: r and put("new-add", "v" * 3000),
            ),
            "incr": (lambda: cache.incr("counter"), lambda r: put("counter", r)),
            "delete": (lambda: cache.delete("keep-2"), lambda _: gone("keep-2")),
            "pop": (lambda: cache.pop("keep-3"), lambda _: gone("keep-3")),
            "touch": (lambda: cache.touch("keep-4", ttl=3600), None),
        }
        failed = []
        for what, (attempt, on_success) in attempts.items():
            try:
                result = await attempt()
            except Exception as exc:
                assert_clear(exc)
                failed.append(what)
            else:
                assert on_success is not None, f"{what} succeeded with no space for it"
                on_success(result)
        assert {"set big", "set_many"} <= set(failed), failed

        # Reads keep working, and nothing stored was lost.
        assert await cache.get_many(list(expected)) == expected
        assert await cache.get("new-0") is None

        # @acached fails open: the function runs and its result comes back.
        calls: list[int] = []

        @acached(cache, ttl=60)
        async def compute(x: int) -> int:
            calls.append(x)
            return x * 2

        with caplog.at_level(logging.WARNING, logger="shardcache"):
            assert await compute(21) == 42
            assert await compute(21) == 42
        assert calls == [21, 21], "the wrapped function must run when the cache cannot store"
        assert "fail open" in caplog.text

        # Space returns: writes work again, on the same open cache.
        filler.unlink()
        await cache.set("after", b"a" * 10_000)
        put("after", b"a" * 10_000)
        put("counter", await cache.incr("counter"))
        assert await compute(21) == 42
        assert await compute(21) == 42
        assert calls == [21, 21, 21], "once stored, the result comes from the cache"
        report = await cache.check()
        assert report.ok, report.problems
    # And after a restart, everything is still there.
    async with AsyncCache(directory, **OPTIONS) as cache:
        assert await cache.get_many(list(expected)) == expected


async def test_failed_large_write_leaves_no_temp_file(small_fs: Path) -> None:
    directory = small_fs / "cache"
    async with AsyncCache(directory, **OPTIONS) as cache:
        await cache.set("k", 1)
        filler = fill_up(small_fs)
        for i in range(5):
            with pytest.raises(CacheError):
                await cache.set(("big", i), b"b" * 50_000)
        filler.unlink()
        leftovers = sorted(p.name for p in (directory / "values").iterdir())
        assert leftovers == [], f"failed writes left files behind: {leftovers}"


async def test_opening_on_a_full_disk(small_fs: Path) -> None:
    filler = fill_up(small_fs)
    directory = small_fs / "cache"
    cache = AsyncCache(directory, **OPTIONS)
    try:
        with pytest.raises(CacheError) as info:
            await cache.set("k", 1)
        assert not isinstance(info.value, sqlite3.Error)
    finally:
        await cache.aclose()
    filler.unlink()
    # Whatever the failed open left behind opens fine once there is space.
    async with AsyncCache(directory, **OPTIONS) as cache:
        await cache.set("k", 1)
        assert await cache.get("k") == 1
        assert (await cache.check()).ok


async def test_a_process_opening_the_cache_on_a_full_disk(small_fs: Path) -> None:
    """A worker (re)started while the disk is full: its reads work, or fail saying the disk
    is full (SQLite cannot create the -shm file it needs); never a bare "disk I/O error"."""
    directory = small_fs / "cache"
    async with AsyncCache(directory, **OPTIONS) as cache:
        await cache.set_many(KEEP)
    filler = fill_up(small_fs)
    cache = AsyncCache(directory, **OPTIONS)
    try:
        try:
            got = await cache.get_many(list(KEEP))
        except Exception as exc:
            assert_clear(exc)
        else:
            assert got == KEEP
    finally:
        await cache.aclose()
    filler.unlink()
    async with AsyncCache(directory, **OPTIONS) as cache:
        assert await cache.get_many(list(KEEP)) == KEEP


async def test_vacuum_on_a_full_disk(small_fs: Path) -> None:
    directory = small_fs / "cache"
    async with AsyncCache(directory, **OPTIONS) as cache:
        await cache.set_many(KEEP)
        filler = fill_up(small_fs)
        try:
            await cache.vacuum()  # rewrites each file: needs room for a copy
        except Exception as exc:
            assert_clear(exc)
        assert await cache.get_many(list(KEEP)) == KEEP
        filler.unlink()
        await cache.vacuum()
        assert await cache.get_many(list(KEEP)) == KEEP
