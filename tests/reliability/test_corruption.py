"""Corruption: damaged shard files and value files give a clear error or a miss, never a crash
loop, and there is always a way back to service.

Shard files are damaged whole (truncated, zeroed, garbage) or in one page (a leaf of the
``entries`` B-tree, the root of the ``changes`` log); value files are truncated, zeroed,
garbaged or deleted. Every case runs with ``on_corrupt="raise"`` (a
:class:`CacheCorruptError` whose ``path`` names the file, the same on every attempt) and
``on_corrupt="reset"`` (the damaged shard is rebuilt, the others keep their data).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shardcache import AsyncCache, CacheCorruptError, CacheError
from shardcache._keys import encode_key, shard_of

from .conftest import cache_threads, unique_dir

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])

SHARDS = 2
OPTIONS: dict[str, Any] = {"shards": SHARDS, "min_file_size": 1024}
KEYS = [f"key-{i}" for i in range(400)]
BIG = "big"


def value_of(key: str) -> dict[str, Any]:
    return {"key": key, "pad": "x" * 150}


def big_value() -> bytes:
    return bytes(range(256)) * 40  # 10 KiB: its own value file


def shard_path(directory: Path, index: int) -> Path:
    return directory / f"shard-{index:03d}.db"


def keys_of_shard(index: int) -> list[str]:
    return [k for k in KEYS if shard_of(encode_key(k), SHARDS) == index]


async def populate(directory: Path) -> None:
    """Fill both shards and one value file, then close: the WAL is folded into the files."""
    async with AsyncCache(directory, **OPTIONS) as cache:
        await cache.set_many({k: value_of(k) for k in KEYS})
        await cache.set(BIG, big_value())
    assert not list(directory.glob("*-wal")), "a cleanly closed cache leaves no WAL behind"


# -- whole-file damage ----------------------------------------------------------------------
def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2 + 100)


def zero(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


def garbage(path: Path) -> None:
    # Seeded, and led by 0xc1 (a byte MessagePack never uses): garbage, not a lucky value.
    # Planted bytes that do decode as something are the fuzz tests' business.
    path.write_bytes(b"\xc1" + random.Random(1).randbytes(path.stat().st_size - 1))


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": truncate,
    "zeroed": zero,
    "garbage": garbage,
}


@pytest.mark.parametrize("damage", DAMAGE)
async def test_damaged_shard_raises_naming_the_file(tmp_path: Path, damage: str) -> None:
    directory = unique_dir(tmp_path)
    await populate(directory)
    bad = shard_path(directory, 0)
    DAMAGE[damage](bad)
    for _attempt in range(3):  # a clear error, the same on every attempt, nothing left running
        cache = AsyncCache(directory, **OPTIONS, on_corrupt="raise")
        with pytest.raises(CacheCorruptError) as info:
            await cache.get(KEYS[0])
        assert info.value.path == str(bad)
        assert str(bad) in str(info.value)
        await cache.aclose()
        assert not cache_threads(directory)
    # The way back the error points to: reopen with on_corrupt="reset".
    async with AsyncCache(directory, **OPTIONS, on_corrupt="reset") as cache:
        for key in keys_of_shard(1):
            assert await cache.get(key) == value_of(key), "an undamaged shard lost data"
        assert await cache.get(keys_of_shard(0)[0], "miss") == "miss"
        await cache.set("new", 1)
        assert await cache.get("new") == 1
        assert (await cache.check()).ok


@pytest.mark.parametrize("damage", DAMAGE)
async def test_damaged_shard_is_reset(tmp_path: Path, damage: str) -> None:
    directory = unique_dir(tmp_path)
    await populate(directory)
    DAMAGE[damage](shard_path(directory, 0))
    async with AsyncCache(directory, **OPTIONS, on_corrupt="reset") as cache:
        for key in keys_of_shard(1):
            assert await cache.get(key) == value_of(key), "an undamaged shard lost data"
        for key in keys_of_shard(0):
            assert await cache.get(key, "miss") == "miss"
        await cache.set_many({k: k for k in keys_of_shard(0)})
        report = await cache.check()
        assert report.ok, report.problems
    # Reset once, not on every start: what was written after the reset stays.
    async with AsyncCache(directory, **OPTIONS, on_corrupt="reset") as cache:
        for key in keys_of_shard(0):
            assert await cache.get(key) == key


async def test_empty_shard_file_is_a_new_shard(tmp_path: Path) -> None:
    """A zero-length file is what a crash between creating and initializing a shard leaves:
    it opens as an empty shard (not an error), whatever ``on_corrupt`` says."""
    directory = unique_dir(tmp_path)
    await populate(directory)
    os.truncate(shard_path(directory, 0), 0)
    async with AsyncCache(directory, **OPTIONS, on_corrupt="raise") as cache:
        assert await cache.get(keys_of_shard(0)[0], "miss") == "miss"
        assert await cache.get(keys_of_shard(1)[0]) == value_of(keys_of_shard(1)[0])
        await cache.set(keys_of_shard(0)[0], 1)
        assert await cache.get(keys_of_shard(0)[0]) == 1


# -- damage inside the file: one page ------------------------------------------------------
def _pages(path: Path, table: str, leaf: bool) -> list[int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        if not leaf:
            return [
                conn.execute(
                    "SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)
                ).fetchone()[0]
            ]
        try:
            rows = conn.execute(
                "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno",
                (table,),
            ).fetchall()
        except sqlite3.OperationalError:
            pytest.skip("this SQLite has no dbstat table to find a leaf page with")
    return [r[0] for r in rows]


def garbage_page(path: Path, page: int) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(os.urandom(size))


async def _read_all(cache: AsyncCache, keys: list[str]) -> tuple[int, list[BaseException]]:
    good = 0
    errors: list[BaseException] = []
    for key in keys:
        try:
            got = await cache.get(key, "miss")
        except CacheCorruptError as exc:
            errors.append(exc)
        else:
            assert got in ("miss", value_of(key)), f"{key}: a damaged page gave a wrong value"
            good += got != "miss"
    return good, errors


async def test_damaged_page_raises_on_read_naming_the_file(tmp_path: Path) -> None:
    directory = unique_dir(tmp_path)
    await populate(directory)
    bad = shard_path(directory, 0)
    leaves = _pages(bad, "entries", leaf=True)
    garbage_page(bad, leaves[len(leaves) // 2])
    async with AsyncCache(directory, **OPTIONS, on_corrupt="raise") as cache:
        good, errors = await _read_all(cache, keys_of_shard(0))
        assert errors, "a garbage leaf page went unnoticed"
        assert all(e.path == str(bad) for e in errors)
        assert good > 0, "one bad page took the whole shard down"
        report = await cache.check()
        assert not report.ok
        assert any(str(bad) in p for p in report.problems), report.problems
        # Other shards, and writes, are unaffected.
        for key in keys_of_shard(1):
            assert await cache.get(key) == value_of(key)


async def test_check_fix_runs(tmp_path: Path) -> None:
    """Regression: check(fix=True) once raised TypeError on every call."""
    directory = unique_dir(tmp_path)
    await populate(directory)
    async with AsyncCache(directory, **OPTIONS) as cache:
        report = await cache.check(fix=True)
        assert report.ok, report.problems


@pytest.mark.xfail(
    strict=True,
    reason="LIMITATION: a damaged page of the entries table is beyond check(fix=True) "
    "(REINDEX rebuilds indexes only); the report says to reopen with on_corrupt='reset', "
    "which rebuilds the shard (test_reset_returns_a_damaged_page_to_service)",
)
async def test_check_fix_returns_a_damaged_page_to_service(tmp_path: Path) -> None:
    directory = unique_dir(tmp_path)
    await populate(directory)
    bad = shard_path(directory, 0)
    leaves = _pages(bad, "entries", leaf=True)
    garbage_page(bad, leaves[len(leaves) // 2])
    async with AsyncCache(directory, **OPTIONS, on_corrupt="raise") as cache:
        await cache.check(fix=True)
        assert (await cache.check()).ok
        _good, errors = await _read_all(cache, keys_of_shard(0))
        assert not errors, "still corrupt after check(fix=True)"
        for key in keys_of_shard(1):
            assert await cache.get(key) == value_of(key)


async def test_reset_returns_a_damaged_page_to_service(tmp_path: Path) -> None:
    directory = unique_dir(tmp_path)
    await populate(directory)
    bad = shard_path(directory, 0)
    leaves = _pages(bad, "entries", leaf=True)
    garbage_page(bad, leaves[len(leaves) // 2])
    for _restart in range(2):
        async with AsyncCache(directory, **OPTIONS, on_corrupt="reset") as cache:
            _good, errors = await _read_all(cache, keys_of_shard(0))
            assert not errors, f"{len(errors)} reads raised with on_corrupt='reset'"


@pytest.mark.parametrize("on_corrupt", ["raise", "reset"])
async def test_damaged_change_log_at_open(tmp_path: Path, on_corrupt: str) -> None:
    directory = unique_dir(tmp_path)
    await populate(directory)
    bad = shard_path(directory, 0)
    (root,) = _pages(bad, "changes", leaf=False)
    garbage_page(bad, root)
    cache = AsyncCache(directory, **OPTIONS, on_corrupt=on_corrupt)
    try:
        if on_corrupt == "raise":
            with pytest.raises(CacheCorruptError) as info:
                await cache.open()
            assert info.value.path == str(bad)
        else:
            await cache.set("k", 1)
            assert await cache.get("k") == 1
            assert await cache.get(keys_of_shard(1)[0]) == value_of(keys_of_shard(1)[0])
    finally:
        await cache.aclose()


async def test_check_fix_repairs_an_unopenable_shard(tmp_path: Path) -> None:
    directory = unique_dir(tmp_path)
    await populate(directory)
    garbage(shard_path(directory, 0))
    cache = AsyncCache(directory, **OPTIONS, on_corrupt="raise")
    try:
        report = await cache.check(fix=True)
        assert report.fixed
        assert (await cache.check()).ok
        assert await cache.get(keys_of_shard(1)[0]) == value_of(keys_of_shard(1)[0])
    finally:
        await cache.aclose()


# -- value files ----------------------------------------------------------------------------
def value_file(directory: Path) -> Path:
    (path,) = (directory / "values").iterdir()
    return path


VALUE_DAMAGE: dict[str, Callable[[Path], None]] = {
    **DAMAGE,
    "emptied": lambda p: p.write_bytes(b""),
    "deleted": lambda p: p.unlink(),
}


@pytest.mark.parametrize("on_corrupt", ["raise", "reset"])
@pytest.mark.parametrize("damage", VALUE_DAMAGE)
async def test_damaged_value_file_is_a_miss_or_corrupt_error(
    tmp_path: Path, damage: str, on_corrupt: str
) -> None:
    directory = unique_dir(tmp_path)
    await populate(directory)
    path = value_file(directory)
    VALUE_DAMAGE[damage](path)
    async with AsyncCache(directory, **OPTIONS, on_corrupt=on_corrupt) as cache:
        for _attempt in range(2):
            try:
                got = await cache.get(BIG, "miss")
            except CacheCorruptError as exc:
                assert damage != "deleted", "a missing value file is a miss"
                assert exc.path == str(path)
            else:
                assert got == "miss", "a damaged value file gave a value"
        for key in KEYS[:50]:
            assert await cache.get(key) == value_of(key)
    # Writing the key again returns it to service (in a new instance: the first one's
    # repair of the row is test_set_after_reading_a_missing_value_file_is_kept's business).
    async with AsyncCache(directory, **OPTIONS, on_corrupt=on_corrupt) as cache:
        await cache.set(BIG, big_value())
        assert await cache.get(BIG) == big_value()
        assert (await cache.check()).ok


async def test_set_after_reading_a_missing_value_file_is_kept(tmp_path: Path) -> None:
    """Regression: the repair of a row whose value file is missing (a background delete)
    once deleted the key by name, destroying a set() issued right after the miss."""
    directory = unique_dir(tmp_path)
    await populate(directory)
    value_file(directory).unlink()
    async with AsyncCache(directory, **OPTIONS) as cache:
        assert await cache.get(BIG, "miss") == "miss"
        await cache.set(BIG, b"recomputed")  # what every cache-aside caller does on a miss
        assert await cache.get(BIG, "miss") == b"recomputed", "the acknowledged set is lost"


@pytest.mark.parametrize("damage", ["truncated", "zeroed", "garbage"])
async def test_damaged_value_file_is_named(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    directory = unique_dir(tmp_path)
    await populate(directory)
    path = value_file(directory)
    VALUE_DAMAGE[damage](path)
    async with AsyncCache(directory, **OPTIONS) as cache:
        with caplog.at_level(logging.WARNING, logger="shardcache"):
            try:
                await cache.get(BIG)
            except CacheError as exc:
                told = str(exc)
            else:
                told = caplog.text
    assert path.name in told, f"the operator is not told which file is damaged: {told!r}"


async def test_check_fix_repairs_value_files(tmp_path: Path) -> None:
    """check(fix=True) drops entries whose value file is missing and removes orphan files
    (older than a minute: younger ones may belong to a write in flight)."""
    directory = unique_dir(tmp_path)
    await populate(directory)
    value_file(directory).unlink()
    orphan = directory / "values" / "000-0123456789abcdef0123456789abcdef.val"
    orphan.write_bytes(b"left by a writer killed between its file and its commit")
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    async with AsyncCache(directory, **OPTIONS) as cache:
        report = await cache.check()
        assert len(report.problems) == 2, report.problems
        report = await cache.check(fix=True)
        assert len(report.fixed) == 2, report.fixed
        assert not orphan.exists()
        assert (await cache.check()).ok
        assert await cache.get(BIG, "miss") == "miss"
