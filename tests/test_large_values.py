"""Large values (issue #3): above ``min_file_size`` a value lives in its own file under
``values/`` beside the shards, and that file lives exactly as long as its row.

"Exactly as long" is checked after each operation returns: the files on disk are the files
the rows point to, no more (no leftover after a delete, an eviction, a clear or an
overwrite) and no fewer (a row never points to a missing file). A file that goes missing
anyway (a crash, a person cleaning up) reads as a miss and the row is repaired.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sqlite3
import sys
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shardcache import AsyncCache

MIN = 4096  # min_file_size used here: a value above it gets a file
BIG = b"B" * 20_000
HUGE = b"H" * 3_000_000

MakeCache = Callable[..., AsyncCache]


def value_files(directory: Path) -> set[str]:
    """Every file under values/ (a leftover temp file included)."""
    values = directory / "values"
    return {p.name for p in values.iterdir()} if values.exists() else set()


def file_rows(directory: Path) -> dict[bytes, str]:
    """The value file each row points to, read straight from the shard files."""
    rows: dict[bytes, str] = {}
    for shard in sorted(directory.glob("shard-*.db")):
        with contextlib.closing(sqlite3.connect(shard)) as conn:
            rows.update(conn.execute("SELECT key, file FROM entries WHERE file IS NOT NULL"))
    return rows


def assert_files_match_rows(directory: Path) -> None:
    on_disk = value_files(directory)
    pointed = set(file_rows(directory).values())
    assert pointed <= on_disk, f"rows point to missing files: {pointed - on_disk}"
    assert on_disk <= pointed, f"files without a row: {on_disk - pointed}"


# -- round trips ---------------------------------------------------------------------------
LARGE_VALUES: dict[str, Any] = {
    "bytes": BIG,
    "str": "é" * 30_000,
    "list": list(range(10_000)),
    "dict": {f"field{i}": "x" * 100 for i in range(100)},
    "tuple": tuple(range(5_000)),
    "huge": HUGE,
}


@pytest.mark.parametrize("near_cache", [0, 32 * 2**20])
async def test_large_values_round_trip_through_files(
    make_cache: MakeCache, cache_dir: Path, near_cache: int
) -> None:
    cache = make_cache(shards=2, min_file_size=MIN, near_cache=near_cache)
    await cache.set_many(LARGE_VALUES)
    await cache.set("small", b"s" * 100)
    assert len(value_files(cache_dir)) == len(LARGE_VALUES)
    assert len(file_rows(cache_dir)) == len(LARGE_VALUES)
    for name, value in LARGE_VALUES.items():
        got = await cache.get(name)
        assert type(got) is type(value) and got == value, name
        assert await cache.get(name) == value  # again: no near-cache copy of a file row
    assert await cache.get_many([*LARGE_VALUES, "small"]) == {
        **LARGE_VALUES,
        "small": b"s" * 100,
    }
    assert dict([item async for item in cache.items()]) == {**LARGE_VALUES, "small": b"s" * 100}
    assert_files_match_rows(cache_dir)


async def test_no_large_value_stays_in_memory_after_its_write(make_cache: MakeCache) -> None:
    """The writer thread keeps nothing of a committed batch while it waits for the next
    one: a scraper's 20 MB download is not held until the cache closes."""
    cache = make_cache()
    await cache.set("warm", 1)
    tracemalloc.start()
    try:
        for i in range(2):
            value = os.urandom(20_000_000)
            await cache.set(f"big{i}", value)
            del value
            gc.collect()
            held, _ = tracemalloc.get_traced_memory()
            assert held < 5_000_000, f"{held:,} bytes still held after write {i}"
    finally:
        tracemalloc.stop()
    assert len(await cache.get("big1")) == 20_000_000


async def test_only_values_above_the_threshold_get_a_file(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    cache = make_cache(shards=1, min_file_size=MIN)
    await cache.set("below", b"x" * (MIN // 2))
    await cache.set("above", b"x" * (MIN * 2))
    rows = file_rows(cache_dir)
    assert list(rows) != [] and len(rows) == 1
    assert await cache.get("below") == b"x" * (MIN // 2)
    assert await cache.get("above") == b"x" * (MIN * 2)


async def test_default_threshold_is_64_kib(make_cache: MakeCache, cache_dir: Path) -> None:
    cache = make_cache(shards=1)
    await cache.set("inline", b"x" * 60_000)
    assert value_files(cache_dir) == set()
    await cache.set("file", b"x" * 70_000)
    assert len(value_files(cache_dir)) == 1


async def test_value_files_are_private_and_beside_the_shards(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    cache = make_cache(shards=1, min_file_size=MIN)
    await cache.set("k", BIG)
    (name,) = value_files(cache_dir)
    path = cache_dir / "values" / name
    assert path.stat().st_size == len(BIG) + 3  # the encoded value (bin 16 header), as is
    if sys.platform != "win32":
        assert path.stat().st_mode & 0o777 == 0o600
    assert not name.endswith(".tmp")


@pytest.mark.parametrize("durability", ["normal", "full", "off"])
async def test_large_values_survive_reopen(
    make_cache: MakeCache, cache_dir: Path, durability: str
) -> None:
    cache = make_cache(shards=2, min_file_size=MIN, durability=durability)
    await cache.set_many({("big", i): bytes([i]) * 10_000 for i in range(10)})
    await cache.set("huge", HUGE, ttl=3600, tag="t")
    await cache.aclose()
    reopened = make_cache(shards=2, min_file_size=MIN, durability=durability)
    assert await reopened.get_many([("big", i) for i in range(10)]) == {
        ("big", i): bytes([i]) * 10_000 for i in range(10)
    }
    assert await reopened.get("huge") == HUGE
    assert 3500 < (await reopened.ttl("huge") or 0) <= 3600
    assert await reopened.evict("t") == 1
    assert_files_match_rows(cache_dir)
    # Reopened with a higher threshold: old file rows still read, new values go inline.
    await reopened.aclose()
    higher = make_cache(shards=2, min_file_size=10**6)
    assert await higher.get(("big", 3)) == bytes([3]) * 10_000
    await higher.set("new", bytes(10_000))
    assert not any(b"new" in key for key in file_rows(cache_dir))
    assert len(file_rows(cache_dir)) == 10


async def test_concurrent_large_writes_and_reads(make_cache: MakeCache, cache_dir: Path) -> None:
    """Eight tasks write and read large values at once: batches of file writes on the writer
    thread, reads on the loop. (Overwrites of one key racing a read of it: see the
    ``..._racing_an_overwrite`` tests below.)"""
    cache = make_cache(shards=2, min_file_size=MIN)

    async def worker(w: int) -> None:
        for i in range(20):
            value = bytes([w, i]) * 5_000
            await cache.set((w, i % 5), value)  # each key overwritten four times
            assert await cache.get((w, i % 5)) == value

    await asyncio.gather(*(worker(w) for w in range(8)))
    assert await cache.count() == 40
    assert_files_match_rows(cache_dir)


# -- files go with their rows --------------------------------------------------------------
async def test_delete_removes_the_file(make_cache: MakeCache, cache_dir: Path) -> None:
    cache = make_cache(shards=1, min_file_size=MIN)
    await cache.set_many({"a": BIG, "b": BIG, "c": BIG})
    assert len(value_files(cache_dir)) == 3
    assert await cache.delete("a") is True
    assert len(value_files(cache_dir)) == 2
    assert await cache.delete_many(["b", "missing"]) == 1
    assert len(value_files(cache_dir)) == 1
    assert await cache.get("c") == BIG
    assert_files_match_rows(cache_dir)


async def test_pop_returns_the_value_and_removes_the_file(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    cache = make_cache(shards=1, min_file_size=MIN)
    await cache.set("k", HUGE)
    assert await cache.pop("k") == HUGE
    assert value_files(cache_dir) == set()
    assert await cache.pop("k", "gone") == "gone"


async def test_evict_by_tag_removes_the_files(make_cache: MakeCache, cache_dir: Path) -> None:
    cache = make_cache(shards=2, min_file_size=MIN)
    await cache.set_many({("t", i): BIG for i in range(6)}, tag="drop")
    await cache.set("keep", BIG, tag="keep")
    assert await cache.evict("drop") == 6
    assert len(value_files(cache_dir)) == 1
    assert_files_match_rows(cache_dir)


async def test_clear_removes_every_file(make_cache: MakeCache, cache_dir: Path) -> None:
    cache = make_cache(shards=4, min_file_size=MIN)
    await cache.set_many({i: BIG for i in range(20)})
    assert len(value_files(cache_dir)) == 20
    assert await cache.clear() == 20
    assert value_files(cache_dir) == set()
    assert await cache.volume() == 0


async def test_expire_removes_the_files(make_cache: MakeCache, cache_dir: Path) -> None:
    cache = make_cache(shards=1, min_file_size=MIN)
    await cache.set_many({i: BIG for i in range(5)}, ttl=0)
    await cache.set("live", BIG)
    await cache.expire()
    assert len(value_files(cache_dir)) == 1
    assert_files_match_rows(cache_dir)


async def test_overwrite_with_a_large_value_replaces_the_file(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    cache = make_cache(shards=1, min_file_size=MIN)
    await cache.set("k", BIG)
    (first,) = value_files(cache_dir)
    await cache.set("k", b"C" * 30_000)
    (second,) = value_files(cache_dir)
    assert first != second
    assert await cache.get("k") == b"C" * 30_000


async def test_overwrite_with_a_small_value_removes_the_file(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    cache = make_cache(shards=1, min_file_size=MIN)
    await cache.set("k", BIG)
    await cache.set("k", b"small")
    assert await cache.get("k") == b"small"
    assert value_files(cache_dir) == set()


async def test_eviction_by_large_writes_removes_the_files(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    cache = make_cache(shards=1, min_file_size=MIN, size_limit=10 * 20_100)
    for i in range(50):
        await cache.set(i, BIG)
        assert_files_match_rows(cache_dir)
    stats = await cache.stats()
    assert stats.evictions > 0
    assert len(value_files(cache_dir)) == stats.count


async def test_eviction_by_small_writes_removes_the_files(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    cache = make_cache(shards=1, min_file_size=MIN, size_limit=100_000)
    for i in range(4):
        await cache.set(("big", i), BIG)
    for i in range(60):  # small values until the first large one (the oldest) is evicted
        await cache.set(("small", i), b"s" * 1000)
        if len(file_rows(cache_dir)) < 4:
            break
    else:
        pytest.fail("no large value was evicted")
    assert_files_match_rows(cache_dir)


# -- a missing file ------------------------------------------------------------------------
async def _drained(cache: AsyncCache) -> None:
    """Close the cache: aclose() awaits its background repairs, then drains its writes."""
    await cache.aclose()


async def test_a_missing_file_reads_as_a_miss_and_the_row_is_repaired(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    cache = make_cache(shards=1, min_file_size=MIN)
    await cache.set_many({"lost": BIG, "kept": BIG})
    lost = file_rows(cache_dir)[next(k for k in file_rows(cache_dir) if b"lost" in k)]
    os.unlink(cache_dir / "values" / lost)
    assert await cache.get("lost", "default") == "default"
    assert await cache.get("kept") == BIG
    stats = await cache.stats()
    assert (stats.hits, stats.misses) == (1, 1)
    await _drained(cache)
    reopened = make_cache(shards=1, min_file_size=MIN)
    await reopened.open()
    assert await reopened.count() == 1
    assert [k async for k in reopened.keys()] == ["kept"]
    assert (await reopened.check()).ok
    assert_files_match_rows(cache_dir)


@pytest.mark.parametrize("how", ["get_many", "items", "has", "pop", "get_entry"])
async def test_a_missing_file_is_a_miss_for_every_read(
    make_cache: MakeCache, cache_dir: Path, how: str
) -> None:
    cache = make_cache(shards=1, min_file_size=MIN)
    await cache.set("lost", BIG)
    (name,) = value_files(cache_dir)
    os.unlink(cache_dir / "values" / name)
    if how == "get_many":
        assert await cache.get_many(["lost"]) == {}
    elif how == "items":
        assert [item async for item in cache.items()] == []
    elif how == "has":
        assert await cache.has("lost") is False
    elif how == "pop":
        assert await cache.pop("lost", "default") == "default"
    else:
        assert await cache.get_entry("lost") is None
    await _drained(cache)
    reopened = make_cache(shards=1, min_file_size=MIN)
    assert await reopened.get("lost", "default") == "default"
    await _drained(reopened)
    assert file_rows(cache_dir) == {}
    assert (await make_cache(shards=1).check()).ok


def race_an_overwrite(cache_dir: Path, reader: AsyncCache, newer: bytes) -> None:
    """Make another writer replace ``"k"`` between ``reader``'s row read and its file read.

    This is the window of a real race (seen in about one run in five of eight tasks
    overwriting five keys): the row read on the loop thread, then the writer thread (or
    another process) commits an overwrite and unlinks the old file, then the file read.
    The shard's ``read_file`` is the one seam that lets a test stand in that window.
    """
    shard = reader._shards[0]
    original = shard.read_file

    def another_writer_between(name: str) -> bytes | None:
        async def write() -> None:
            async with AsyncCache(cache_dir, shards=1, min_file_size=MIN) as other:
                await other.set("k", newer)

        thread = threading.Thread(target=asyncio.run, args=(write(),))
        thread.start()
        thread.join(30)
        shard.read_file = original  # type: ignore[method-assign]
        return original(name)

    shard.read_file = another_writer_between  # type: ignore[method-assign]


async def test_a_read_racing_an_overwrite_returns_the_new_value(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    cache = make_cache(shards=1, min_file_size=MIN)
    await cache.set("k", BIG)
    newer = b"N" * 30_000
    race_an_overwrite(cache_dir, cache, newer)
    assert await cache.get("k", "default") == newer  # "k" held a value at every instant


async def test_a_read_racing_an_overwrite_never_deletes_the_new_value(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    cache = make_cache(shards=1, min_file_size=MIN)
    await cache.set("k", BIG)
    newer = b"N" * 30_000
    race_an_overwrite(cache_dir, cache, newer)
    await cache.get("k")
    await _drained(cache)
    after = make_cache(shards=1, min_file_size=MIN)
    assert await after.get("k") == newer
    assert_files_match_rows(cache_dir)


_CRASHING_WRITER = """
import asyncio, sys
from shardcache import AsyncCache

async def main():
    cache = AsyncCache(sys.argv[1], shards=2, min_file_size=4096)
    await cache.open()
    print("ready", flush=True)
    i = 0
    while True:  # until SIGKILL: never closed on purpose
        batch = range(i, i + 4)
        await asyncio.gather(*(cache.set(("w", j), bytes([j % 251]) * (j % 3 * 9000 + 10))
                               for j in batch))
        await cache.delete(("w", i - 8))
        for j in batch:
            print("ack", j, flush=True)
        i += 4

asyncio.run(main())
"""


async def test_a_killed_writer_never_leaves_a_row_without_its_file(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CRASHING_WRITER,
        str(cache_dir),
        stdout=asyncio.subprocess.PIPE,
    )
    acked: list[int] = []
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
        while len(acked) < 400:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line.startswith(b"ack "), line
            acked.append(int(line.split()[1]))
    finally:
        proc.kill()  # SIGKILL: no close, no drain, maybe mid-transaction or mid-file
        await asyncio.wait_for(proc.wait(), 30)
    cache = make_cache(shards=2, min_file_size=MIN)
    stored = {key async for key in cache.keys()}
    assert {("w", j) for j in acked[-8:]} <= stored  # acknowledged, never deleted: kept
    values = await cache.get_many(stored)
    assert values.keys() == stored  # every row reads as its value: none lost its file
    for (_, j), value in values.items():
        assert value == bytes([j % 251]) * (j % 3 * 9000 + 10)
    assert any(j % 3 for j in acked[-40:]), "no large value was written"
    pointed = set(file_rows(cache_dir).values())
    assert pointed <= value_files(cache_dir), "a row points to a missing file"
    # What the kill may leave is garbage, not damage: a file of the write it interrupted.
    report = await cache.check()
    assert all(line.endswith("orphan value file") for line in report.problems), report.problems
    await cache.check(fix=True)
    assert (await cache.check()).ok
    assert await cache.get_many(stored) == values


async def test_a_value_file_that_cannot_be_written_fails_only_its_own_write(
    tmp_path: Path,
) -> None:
    """The writes batched with it (same shard, same transaction) still commit: a value
    file's failure comes before its row, so only that write has anything to undo."""
    from shardcache import CacheError

    directory = tmp_path / "c"
    async with AsyncCache(directory, shards=1, min_file_size=1000) as cache:
        await cache.set("k", "old")
        values = directory / "values"
        for path in values.iterdir():
            path.unlink()
        values.rmdir()
        values.write_text("in the way")  # any value file now fails to be created
        results = await asyncio.gather(
            *[cache.set(("small", i), i) for i in range(5)],
            cache.set("k", b"y" * 5000),
            return_exceptions=True,
        )
        assert results[:5] == [None] * 5
        assert isinstance(results[5], CacheError) and str(values) in str(results[5])
        assert await cache.get_many([("small", i) for i in range(5)]) == {
            ("small", i): i for i in range(5)
        }
        assert await cache.get("k") == "old"  # the failed write left the previous value
        values.unlink()
        values.mkdir()
        await cache.set("k", b"y" * 5000)
        assert await cache.get("k") == b"y" * 5000
