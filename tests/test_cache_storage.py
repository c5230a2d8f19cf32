"""What is on disk: persistence across reopen, file modes, one directory shared in-process."""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from _helpers import outlive
from shardcache import AsyncCache


@pytest.mark.parametrize("durability", ["normal", "full", "off"])
async def test_everything_persists_across_reopen(make_cache, durability: str) -> None:
    options = {"durability": durability, "min_file_size": 4096}
    cache = make_cache(**options)
    await cache.set("plain", {"a": [1, 2]})
    await cache.set("none", None)
    await cache.set("big", b"b" * 100_000)  # its own value file
    await cache.set("expiring", 1, ttl=3600)
    await cache.set("short", 1, ttl=0.2)
    await cache.set("tagged", 1, tag="t")
    await cache.set_many({("many", i): i for i in range(100)})
    await cache.incr("counter", 5)
    await cache.delete(("many", 0))
    written_at = time.time()
    await cache.aclose()

    reopened = make_cache(**options)
    assert await reopened.get("plain") == {"a": [1, 2]}
    assert await reopened.get("none", "default") is None
    assert await reopened.get("big") == b"b" * 100_000
    left = await reopened.ttl("expiring")
    assert left is not None and 3600 - (time.time() - written_at) - 1 < left <= 3600
    assert await reopened.get_many([("many", i) for i in range(100)]) == {
        ("many", i): i for i in range(1, 100)
    }
    assert await reopened.incr("counter") == 6
    assert await reopened.evict("t") == 1
    await outlive(0.2)
    assert await reopened.get("short", "gone") == "gone"
    assert await reopened.count() == 1 + 1 + 1 + 1 + 99 + 1
    assert (await reopened.check()).ok


async def test_reopen_many_times(make_cache) -> None:
    for i in range(5):
        cache = make_cache()
        assert await cache.get_many(range(5)) == {j: j for j in range(i)}
        await cache.set(i, i)
        await cache.aclose()


async def test_files_are_private(make_cache, cache_dir: Path) -> None:
    cache = make_cache(min_file_size=1024)
    await cache.set("small", 1)
    await cache.set("big", b"x" * 10_000)

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(cache_dir) == 0o700
    assert mode(cache_dir / "values") == 0o700
    files = [p for p in cache_dir.rglob("*") if p.is_file()]
    assert {p.name.rsplit("-", 1)[-1] for p in files if "db" in p.name} >= {"wal", "shm"}
    assert any(p.suffix == ".val" for p in files)
    assert {p.name: oct(mode(p)) for p in files} == {p.name: "0o600" for p in files}


async def test_two_instances_in_one_process_see_each_other(make_cache) -> None:
    a = make_cache(min_file_size=4096)
    b = make_cache(min_file_size=4096)
    await a.set("k", 1)
    assert await b.get("k") == 1  # b's near cache holds it now
    await a.set("k", 2)
    assert await b.get("k") == 2
    await b.set("big", b"1" * 10_000)
    assert await a.get("big") == b"1" * 10_000
    await b.set("big", b"2" * 10_000)
    assert await a.get("big") == b"2" * 10_000
    assert await a.incr("k") == 3
    assert await b.get("k") == 3
    await a.touch("k", ttl=100)
    left = await b.ttl("k")
    assert left is not None and 0 < left <= 100
    assert await a.delete("k")
    assert await b.get("k", "gone") == "gone"
    await a.set_many({i: i for i in range(10)}, tag="t")
    assert await b.get(3) == 3
    assert await b.evict("t") == 10
    assert await a.get(3, "gone") == "gone"
    await a.set("x", 1)
    assert await b.get("x") == 1
    assert await b.clear() == 2
    assert await a.get("x", "gone") == "gone"
    assert await a.add("x", "a") is True
    assert await b.add("x", "b") is False
    assert await b.get("x") == "a"


async def test_two_instances_interleaving_writes(make_cache) -> None:
    a = make_cache()
    b = make_cache()
    for i in range(200):
        writer, reader = (a, b) if i % 2 else (b, a)
        await writer.set("k", i)
        assert await reader.get("k") == i
        assert await reader.incr("n") == i + 1
    assert await a.get("n") == await b.get("n") == 200


async def test_closing_one_instance_leaves_the_other_working(make_cache) -> None:
    a = make_cache()
    b = make_cache()
    await a.set("k", 1)
    assert await b.get("k") == 1
    await a.aclose()
    await b.set("k", 2)
    assert await b.get("k") == 2


async def test_an_existing_empty_directory_is_used(tmp_path: Path) -> None:
    directory = tmp_path / "existing"
    directory.mkdir()
    async with AsyncCache(directory, shards=2) as cache:
        await cache.set("k", 1)
    async with AsyncCache(directory, shards=2) as cache:
        assert await cache.get("k") == 1


# -- check() finds and repairs what went wrong on disk ------------------------------------
async def _missing_file(cache: AsyncCache, cache_dir: Path) -> Path:
    await cache.set("big", b"b" * 10_000)
    await cache.set("small", 1)
    (value_file,) = (cache_dir / "values").glob("*.val")
    value_file.unlink()
    return value_file


async def _orphan_file(cache: AsyncCache, cache_dir: Path) -> Path:
    await cache.set("big", b"b" * 10_000)
    # A value file no entry points to, old enough not to be a write in flight (a crash
    # between writing the file and committing its row leaves one).
    orphan = cache_dir / "values" / "000-0123456789abcdef0123456789abcdef.val"
    orphan.write_bytes(b"orphan")
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    return orphan


async def _wrong_accounting(cache: AsyncCache, cache_dir: Path) -> int:
    await cache.set_many({i: "v" * 100 for i in range(10)})
    right: int = await cache.volume()
    for shard in cache_dir.glob("shard-*.db"):
        conn = sqlite3.connect(shard)
        with conn:
            conn.execute("UPDATE settings SET value = value + 12345 WHERE name = 'volume'")
        conn.close()
    return right


async def test_check_finds_a_missing_value_file(make_cache, cache_dir: Path) -> None:
    cache = make_cache(min_file_size=1024)
    value_file = await _missing_file(cache, cache_dir)
    report = await cache.check()
    assert not report.ok
    assert any(value_file.name in problem for problem in report.problems)
    assert report.fixed == []
    # The entry whose file is gone reads as a miss; the others are untouched.
    assert await cache.get("big", "gone") == "gone"
    assert await cache.get_many(["big", "small"]) == {"small": 1}


async def test_check_finds_an_orphan_value_file(make_cache, cache_dir: Path) -> None:
    cache = make_cache(min_file_size=1024)
    orphan = await _orphan_file(cache, cache_dir)
    report = await cache.check()
    assert [problem for problem in report.problems if str(orphan) in problem]
    assert orphan.exists()  # check() alone repairs nothing
    assert await cache.get("big") == b"b" * 10_000


async def test_check_finds_wrong_size_accounting(make_cache, cache_dir: Path) -> None:
    cache = make_cache(shards=1)
    await _wrong_accounting(cache, cache_dir)
    report = await cache.check()
    assert not report.ok
    assert any("size" in problem for problem in report.problems)


@pytest.mark.parametrize("problem", ["missing-file", "orphan-file", "accounting"])
async def test_check_fix_repairs(make_cache, cache_dir: Path, problem: str) -> None:
    cache = make_cache(shards=1, min_file_size=1024)
    if problem == "missing-file":
        await _missing_file(cache, cache_dir)
    elif problem == "orphan-file":
        orphan = await _orphan_file(cache, cache_dir)
    else:
        right = await _wrong_accounting(cache, cache_dir)
    report = await cache.check(fix=True)
    assert report.fixed
    assert (await cache.check()).ok
    if problem == "missing-file":
        assert await cache.get_many(["big", "small"]) == {"small": 1}
    elif problem == "orphan-file":
        assert not orphan.exists()
        assert await cache.get("big") == b"b" * 10_000
    else:
        assert await cache.volume() == right


# -- secret: signed entries -----------------------------------------------------------------
async def test_entries_that_do_not_verify_read_as_misses(make_cache, cache_dir: Path) -> None:
    signed = make_cache(secret="one")
    await signed.set("signed", "value")
    await signed.aclose()
    other_secret = make_cache(secret="two")
    assert await other_secret.get("signed", "miss") == "miss"
    await other_secret.aclose()

    unsigned = make_cache()
    await unsigned.set("unsigned", "planted")
    await unsigned.aclose()
    with_secret = make_cache(secret="one")
    assert await with_secret.get("unsigned", "miss") == "miss"
    assert await with_secret.get("signed") == "value"


async def test_a_tampered_entry_reads_as_a_miss(make_cache, cache_dir: Path) -> None:
    cache = make_cache(shards=1, secret=b"key")
    await cache.set("k", "genuine")
    await cache.set("other", "untouched")
    await cache.aclose()
    conn = sqlite3.connect(cache_dir / "shard-000.db")
    with conn:
        changed = conn.execute(
            "UPDATE entries SET value = CAST(replace(value, CAST('genuine' AS BLOB), "
            "CAST('forged!' AS BLOB)) AS BLOB)"
        ).rowcount
    conn.close()
    assert changed == 2  # both rows rewritten; only one of them differs
    reopened = make_cache(shards=1, secret=b"key")
    assert await reopened.get("k", "miss") == "miss"
    assert await reopened.get("other") == "untouched"
