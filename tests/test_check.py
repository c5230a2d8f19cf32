"""``check(fix=False)`` and ``vacuum()`` (issue #3): integrity problems are reported with the
file they concern, ``fix=True`` repairs them, and a check never reports what is not wrong.

Damage is made the way it happens in the field: a value file removed by hand, a file left
by a crashed writer (made older than the 60 s grace with ``os.utime``), the byte total
edited behind the cache's back with sqlite3, an index out of step with its table.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from shardcache import AsyncCache, CheckReport

MIN = 4096
BIG = b"B" * 20_000

MakeCache = Callable[..., AsyncCache]


def shard_db(directory: Path, index: int = 0) -> Path:
    return directory / f"shard-{index:03d}.db"


def on_disk(directory: Path) -> int:
    """Bytes of every shard file with its write-ahead log."""
    return sum(p.stat().st_size for p in directory.glob("shard-*.db*") if p.suffix != ".db-shm")


def sql(directory: Path, statement: str, index: int = 0) -> list[tuple[object, ...]]:
    """Run one statement on a shard file from outside the cache (another tool, a person)."""
    with contextlib.closing(sqlite3.connect(shard_db(directory, index))) as conn:
        rows = conn.execute(statement).fetchall()
        conn.commit()
    return rows


def make_old(path: Path, seconds: float = 120) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def plant_orphan(directory: Path, index: int = 0, suffix: str = ".val") -> Path:
    """A value file no row points to, as a writer killed before its commit leaves it."""
    path = directory / "values" / f"{index:03d}-{uuid.uuid4().hex}{suffix}"
    path.write_bytes(b"orphan" * 1000)
    return path


def only_file(directory: Path) -> Path:
    (path,) = (directory / "values").iterdir()
    return path


def mentions(report: CheckReport, text: str) -> bool:
    return any(text in line for line in report.problems)


# -- healthy ---------------------------------------------------------------------------------
async def test_a_healthy_cache_checks_ok(make_cache: MakeCache, cache_dir: Path) -> None:
    cache = make_cache(shards=3, min_file_size=MIN)
    await cache.set_many({i: BIG if i % 4 == 0 else i for i in range(60)})
    await cache.delete_many(range(0, 60, 8))
    for path in (cache_dir / "values").iterdir():
        make_old(path, 3600)  # old files of live rows are not orphans
    report = await cache.check()
    assert isinstance(report, CheckReport)
    assert (report.ok, report.problems, report.fixed) == (True, [], [])


async def test_fix_on_a_healthy_cache_changes_nothing(make_cache: MakeCache) -> None:
    cache = make_cache(shards=2, min_file_size=MIN)
    data = {i: BIG if i % 4 == 0 else i for i in range(40)}
    await cache.set_many(data)
    volume = await cache.volume()
    report = await cache.check(fix=True)
    assert (report.ok, report.problems, report.fixed) == (True, [], [])
    assert await cache.get_many(data) == data
    assert await cache.volume() == volume


# -- orphan files --------------------------------------------------------------------------
async def test_an_old_orphan_file_is_reported(make_cache: MakeCache, cache_dir: Path) -> None:
    cache = make_cache(shards=2, min_file_size=MIN)
    await cache.set("k", BIG)
    orphan = plant_orphan(cache_dir, index=1)
    make_old(orphan)
    report = await cache.check()
    assert not report.ok
    assert mentions(report, orphan.name)
    assert len(report.problems) == 1
    assert report.fixed == []
    assert orphan.exists(), "fix=False removed the file"


async def test_a_fresh_orphan_file_is_reported(make_cache: MakeCache, cache_dir: Path) -> None:
    """No age threshold: check() holds each shard's write lock while it compares files and
    rows, and a value file is only ever written inside the transaction storing its row."""
    cache = make_cache(shards=1, min_file_size=MIN)
    await cache.set("k", BIG)
    orphan = plant_orphan(cache_dir)
    report = await cache.check()
    assert mentions(report, orphan.name)
    assert orphan.exists()
    assert mentions(await cache.check(fix=True), orphan.name)
    assert not orphan.exists()


async def test_writes_in_flight_are_never_taken_for_orphans(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    """Large values written flat out by another process while this one checks: a file
    whose row has not committed yet is never reported, let alone removed."""
    cache = make_cache(shards=1, min_file_size=MIN)
    await cache.open()
    script = (
        "import asyncio, sys\n"
        "from shardcache import AsyncCache\n"
        "async def main():\n"
        f"    async with AsyncCache(sys.argv[1], shards=1, min_file_size={MIN}) as c:\n"
        "        for i in range(400):\n"
        f"            await c.set(i % 20, bytes([i % 256]) * {len(BIG)})\n"
        "asyncio.run(main())\n"
    )
    writer = await asyncio.create_subprocess_exec(sys.executable, "-c", script, str(cache_dir))
    try:
        checks = 0
        while writer.returncode is None and checks < 200:
            report = await cache.check(fix=checks % 2 == 1)
            assert not mentions(report, "orphan"), report.problems
            checks += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait(), 0.001)
        assert await asyncio.wait_for(writer.wait(), 60) == 0
    finally:
        if writer.returncode is None:
            writer.kill()
            await writer.wait()
    assert checks > 0
    assert len(await cache.get_many(range(20))) == 20  # every last write has its file
    assert (await cache.check()).ok


async def test_an_old_temp_file_is_an_orphan(make_cache: MakeCache, cache_dir: Path) -> None:
    cache = make_cache(shards=1, min_file_size=MIN)
    await cache.open()
    leftover = plant_orphan(cache_dir, suffix=".tmp")  # killed between write and rename
    make_old(leftover)
    assert mentions(await cache.check(), leftover.name)


async def test_fix_removes_orphan_files(make_cache: MakeCache, cache_dir: Path) -> None:
    cache = make_cache(shards=2, min_file_size=MIN)
    await cache.set_many({"a": BIG, "b": BIG})
    orphans = [plant_orphan(cache_dir, 0), plant_orphan(cache_dir, 1, ".tmp")]
    report = await cache.check(fix=True)
    assert len(report.problems) == 2
    assert len(report.fixed) == 2
    assert all(any(o.name in line for line in report.fixed) for o in orphans)
    assert not any(o.exists() for o in orphans)
    assert await cache.get_many(["a", "b"]) == {"a": BIG, "b": BIG}
    assert (await cache.check()).ok


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
async def test_a_file_vanishing_during_the_check_is_not_an_error(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    cache = make_cache(shards=1, min_file_size=MIN)
    await cache.set("k", BIG)
    # A dangling link is listed by the glob but cannot be stat()ed: exactly what a file
    # renamed or unlinked by a concurrent writer looks like to the check (seen under load).
    (cache_dir / "values" / f"000-{uuid.uuid4().hex}.tmp").symlink_to(cache_dir / "gone")
    report = await cache.check()
    assert not mentions(report, "missing")


# -- missing files -------------------------------------------------------------------------
async def test_a_missing_file_is_reported(make_cache: MakeCache, cache_dir: Path) -> None:
    cache = make_cache(shards=1, min_file_size=MIN)
    await cache.set("k", BIG)
    path = only_file(cache_dir)
    path.unlink()
    report = await cache.check()
    assert not report.ok
    assert mentions(report, path.name)
    assert report.fixed == []
    assert sql(cache_dir, "SELECT count(*) FROM entries") == [(1,)]  # fix=False: left alone


async def test_fix_drops_the_entry_of_a_missing_file(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    cache = make_cache(shards=1, min_file_size=MIN)
    await cache.set("lost", BIG)
    path = only_file(cache_dir)
    await cache.set_many({"kept": BIG, "small": 1})
    path.unlink()
    volume = await cache.volume()
    report = await cache.check(fix=True)
    assert mentions(report, path.name)
    assert len(report.fixed) == 1 and path.name in report.fixed[0]
    assert await cache.get("lost", "default") == "default"
    assert await cache.get_many(["kept", "small"]) == {"kept": BIG, "small": 1}
    assert await cache.count() == 2
    assert await cache.volume() < volume - len(BIG)
    assert (await cache.check()).ok


# -- size accounting -----------------------------------------------------------------------
@pytest.mark.parametrize("drift", [12_345, -500])
async def test_size_accounting_drift_is_reported(
    make_cache: MakeCache, cache_dir: Path, drift: int
) -> None:
    cache = make_cache(shards=2, min_file_size=MIN)
    await cache.set_many({i: BIG if i % 3 == 0 else i for i in range(30)})
    volume = await cache.volume()
    sql(cache_dir, f"UPDATE settings SET value = value + {drift} WHERE name = 'volume'", 1)
    assert await cache.volume() == volume + drift
    report = await cache.check()
    assert not report.ok
    assert len(report.problems) == 1
    assert mentions(report, shard_db(cache_dir, 1).name)
    assert await cache.volume() == volume + drift  # fix=False: left alone


async def test_fix_resets_size_accounting(make_cache: MakeCache, cache_dir: Path) -> None:
    cache = make_cache(shards=1, min_file_size=MIN)
    await cache.set_many({i: BIG if i % 3 == 0 else i for i in range(30)})
    volume = await cache.volume()
    sql(cache_dir, "UPDATE settings SET value = 7 WHERE name = 'volume'")
    report = await cache.check(fix=True)
    assert len(report.fixed) == 1
    assert await cache.volume() == volume
    assert (await cache.check()).ok


async def test_eviction_uses_the_repaired_accounting(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    """A total inflated behind the cache's back makes every write evict; once fixed, the
    cache holds what its limit allows again."""
    cache = make_cache(shards=1, size_limit=200_000)
    await cache.set("a", b"x" * 1000)
    sql(cache_dir, "UPDATE settings SET value = value + 10000000 WHERE name = 'volume'")
    await cache.check(fix=True)
    fits = {("b", i): b"x" * 1000 for i in range(150)}  # ~160 KB: under the limit
    await cache.set_many(fits)
    assert await cache.get_many(fits) == fits
    assert (await cache.check()).ok


# -- SQLite integrity ----------------------------------------------------------------------
def damage_an_index(directory: Path) -> None:
    """Make an index disagree with its table (what a torn page does), with the cache closed.

    The tag index: it exists from the start (the culling indexes only once a shard is half
    full) and holds an entry for every tagged row.
    """
    with contextlib.closing(sqlite3.connect(shard_db(directory))) as conn:
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute(
            "UPDATE sqlite_master SET sql = "
            "'CREATE INDEX entries_tag ON entries(expire_time) WHERE tag IS NOT NULL' "
            "WHERE name = 'entries_tag'"
        )
        conn.commit()


async def test_an_integrity_problem_is_reported_not_raised(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    cache = make_cache(shards=2)
    await cache.set_many({("k", i): i for i in range(50)}, tag="t")
    await cache.aclose()
    damage_an_index(cache_dir)
    reopened = make_cache(shards=2)
    report = await reopened.check()
    assert not report.ok
    assert all(shard_db(cache_dir).name in line for line in report.problems)
    assert mentions(report, "entries_tag")


async def test_fix_repairs_a_damaged_index(make_cache: MakeCache, cache_dir: Path) -> None:
    cache = make_cache(shards=1)
    data = {("k", i): i for i in range(50)}
    await cache.set_many(data, tag="t")
    await cache.aclose()
    damage_an_index(cache_dir)
    reopened = make_cache(shards=1)
    report = await reopened.check(fix=True)
    assert report.fixed
    assert (await reopened.check()).ok
    assert await reopened.get_many(data) == data


# -- vacuum --------------------------------------------------------------------------------
async def test_vacuum_keeps_values_and_files(make_cache: MakeCache, cache_dir: Path) -> None:
    cache = make_cache(shards=2, min_file_size=MIN)
    data = {i: BIG if i % 10 == 0 else b"x" * 2000 for i in range(1000)}
    await cache.set_many(data)
    await cache.delete_many(range(0, 1000, 2))
    size = on_disk(cache_dir)
    assert await cache.vacuum() is None
    assert on_disk(cache_dir) < size * 0.75
    kept = {i: v for i, v in data.items() if i % 2}
    assert await cache.get_many(range(1000)) == kept
    assert (await cache.check()).ok


async def test_vacuum_while_writing(make_cache: MakeCache) -> None:
    cache = make_cache(shards=2, min_file_size=MIN)
    await cache.set_many({("old", i): b"x" * 3000 for i in range(500)})
    await cache.delete_many([("old", i) for i in range(0, 500, 2)])

    async def writer() -> None:
        for i in range(200):
            await cache.set(("new", i), BIG if i % 20 == 0 else i)

    await asyncio.wait_for(asyncio.gather(cache.vacuum(), writer()), 60)
    assert await cache.count() == 250 + 200
    assert (await cache.check()).ok


async def test_vacuum_as_the_first_call_reclaims_space(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    cache = make_cache(shards=1)
    await cache.set_many({i: b"x" * 2000 for i in range(1000)})
    await cache.delete_many(range(900))
    await cache.aclose()
    size = on_disk(cache_dir)
    await make_cache(shards=1).vacuum()
    assert on_disk(cache_dir) < size / 2
