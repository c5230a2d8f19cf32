"""``size_limit`` and eviction (issue #3): the bound holds, each policy picks the victims it
should, reads stay reads, and the counters say what happened.

Every scenario uses real SQLite files in a fresh directory. Policy scenarios use ``shards=1``
and a limit counted in entries of one size (``unit``, measured with ``volume()``), so which
key goes is decided by the policy alone. Buffered LRU/LFU bookkeeping reaches the shard with
its next write batch; a ``delete`` of a key that does not exist is such a batch that changes
nothing else, and is used below to flush it on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from _helpers import outlive
from shardcache import AsyncCache, CacheStats

POLICIES = ("least-recently-stored", "least-recently-used", "least-frequently-used")
VALUE = b"v" * 1000
TTL = 0.2

MakeCache = Callable[..., AsyncCache]


def k(i: int) -> str:
    """Keys of one encoded length, so every entry of ``VALUE`` has the same size."""
    return f"k{i:03d}"


async def unit_size(make_cache: MakeCache, tmp_path: Path) -> int:
    """The accounted size of one ``k(i) -> VALUE`` entry, as volume() reports it."""
    probe = make_cache(tmp_path / "probe", shards=1)
    await probe.set(k(0), VALUE)
    size = await probe.volume()
    await probe.aclose()
    return size


async def live_keys(cache: AsyncCache) -> set[Any]:
    """The keys present, read without touching LRU/LFU bookkeeping (iteration is no access)."""
    return {key async for key in cache.keys()}


async def flush_access(cache: AsyncCache) -> None:
    """A write batch that changes no entry: it carries the buffered access bookkeeping."""
    assert await cache.delete(("no", "such", "key")) is False


def assert_evicted_in_order(present: set[Any], order: Sequence[Any], at_least: int) -> None:
    """The missing keys are exactly the first ones of ``order`` (the policy's victim order).

    Only a prefix is checked: how many victims one cull takes is the engine's business, as
    long as it is at least what brings the shard back under its limit.
    """
    evicted = [key for key in order if key not in present]
    assert len(evicted) >= at_least, f"only {evicted} were evicted"
    assert evicted == list(order[: len(evicted)]), (
        f"evicted {evicted}, expected the first {len(evicted)} of {list(order)}"
    )


def shard_volume(directory: Path, index: int = 0) -> int:
    with contextlib.closing(sqlite3.connect(directory / f"shard-{index:03d}.db")) as conn:
        value: int = conn.execute("SELECT value FROM settings WHERE name = 'volume'").fetchone()[0]
    return value


# -- the bound ------------------------------------------------------------------------------
@pytest.mark.parametrize("eviction", POLICIES)
@pytest.mark.parametrize("shards", [1, 4])
async def test_volume_stays_within_the_limit_while_writing_ten_times_it(
    make_cache: MakeCache, eviction: str, shards: int
) -> None:
    limit = 200_000
    cache = make_cache(shards=shards, size_limit=limit, eviction=eviction, min_file_size=4096)
    rng = random.Random(3)
    written = biggest = 0
    i = 0
    while written < 10 * limit:
        # 16 concurrent writes: several land in one writer batch, which culls for all of them.
        sizes = [rng.choice((200, 900, 2500, 6000)) for _ in range(16)]
        await asyncio.gather(*(cache.set(("key", i + j), b"x" * n) for j, n in enumerate(sizes)))
        i += len(sizes)
        written += sum(sizes)
        biggest = max(biggest, *sizes)
        if eviction != "least-recently-stored" and i % 64 == 0:
            await cache.get_many([("key", j) for j in range(i - 64, i, 3)])
            await cache.get(("key", i - 5))
        volume = await cache.volume()
        assert volume <= limit * 1.1 + biggest + 100, (
            f"volume {volume} after writing {written} bytes (limit {limit})"
        )
    stats = await cache.stats()
    assert stats.volume == await cache.volume() == sum(s.volume for s in stats.shards)
    assert stats.evictions > 0
    assert stats.count < i
    assert (await cache.check()).ok


def disk_usage(directory: Path) -> int:
    """Bytes of the shard files and their write-ahead logs: what the cache costs the disk."""
    return sum(
        p.stat().st_size for p in directory.glob("shard-*.db*") if not p.name.endswith("-shm")
    )


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_disk_usage_does_not_grow_with_bytes_written(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    cache = make_cache(shards=1, size_limit=2**20)
    value = b"x" * 2000

    async def write(start: int, stop: int) -> None:
        for i in range(start, stop, 16):
            await asyncio.gather(*(cache.set(("k", j), value) for j in range(i, i + 16)))

    await write(0, 5_000)  # 10 MB through a 1 MiB cache
    after_10_mb = disk_usage(cache_dir)
    await write(5_000, 20_000)  # 30 MB more
    after_40_mb = disk_usage(cache_dir)
    assert await cache.volume() <= 2**20
    assert after_40_mb <= after_10_mb * 1.5 + 2**20, (after_10_mb, after_40_mb)


async def test_each_shard_holds_its_share(make_cache: MakeCache, cache_dir: Path) -> None:
    limit = 80_000
    cache = make_cache(shards=4, size_limit=limit)
    await cache.set_many({("s", i): b"x" * 800 for i in range(600)})
    for _ in range(8):  # enough single writes that every shard has had its cull
        await asyncio.gather(*(cache.set(("t", i), b"y" * 800) for i in range(64)))
    stats = await cache.stats()
    for shard in stats.shards:
        assert shard.volume <= limit // 4 + 1000, shard
        assert shard.volume == shard_volume(cache_dir, shard.index)
    assert stats.volume <= limit


async def test_volume_counts_keys_values_and_files(make_cache: MakeCache) -> None:
    cache = make_cache(shards=1, min_file_size=4096)
    await cache.set("small", b"s" * 100)
    small = await cache.volume()
    assert 100 < small < 300
    await cache.set("large", b"L" * 100_000)  # in its own file: counted all the same
    assert await cache.volume() >= small + 100_000


async def test_count_and_volume_are_right_as_the_first_call(make_cache: MakeCache) -> None:
    cache = make_cache(shards=2)
    await cache.set_many({k(i): VALUE for i in range(10)})
    volume = await cache.volume()
    await cache.aclose()
    assert await make_cache(shards=2).volume() == volume
    assert await make_cache(shards=2).count() == 10


async def test_unbounded_never_evicts(make_cache: MakeCache) -> None:
    cache = make_cache(shards=1, size_limit=None)
    await cache.set_many({k(i): VALUE for i in range(300)})
    assert await cache.count() == 300
    assert (await cache.stats()).evictions == 0


async def test_culling_is_amortized_over_batches(
    make_cache: MakeCache, tmp_path: Path, cache_dir: Path
) -> None:
    """Far over the limit (here: reopened with a much smaller one), one write culls a
    bounded amount, not the whole excess; the following writes finish the job."""
    unit = await unit_size(make_cache, tmp_path)
    big = make_cache(shards=1, size_limit=None)
    await big.set_many({k(i): VALUE for i in range(3000)})
    await big.aclose()
    small = make_cache(shards=1, size_limit=10 * unit + unit // 2)
    await small.set(("new", 0), VALUE)
    after_one = await small.count()
    assert 10 < after_one < 3000, f"{after_one} entries left after one write"
    for n in range(1, 200):
        if await small.volume() <= 10 * unit + unit // 2:
            break
        await small.set(("new", n), VALUE)
    else:
        pytest.fail(f"still over the limit after 200 writes: {await small.volume()}")
    assert await small.has(("new", n - 1))
    assert (await small.stats()).evictions == 3000 + n - await small.count()


async def test_a_small_overflow_evicts_only_what_it_must(
    make_cache: MakeCache, tmp_path: Path
) -> None:
    unit = await unit_size(make_cache, tmp_path)
    cache = make_cache(shards=1, size_limit=10 * unit + unit // 2)
    for i in range(11):
        await cache.set(k(i), VALUE)
    # 11 entries do not fit; 10 do: one victim is enough, and it is the oldest.
    assert await live_keys(cache) == {k(i) for i in range(1, 11)}


async def test_a_shard_of_large_values_is_not_emptied_by_one_overflow(
    make_cache: MakeCache,
) -> None:
    value = b"L" * 200_000  # in its own file
    cache = make_cache(shards=1, size_limit=10 * 200_200, min_file_size=64 * 1024)
    for i in range(11):
        await cache.set(k(i), value)
    assert await cache.count() >= 9


@pytest.mark.parametrize("eviction", POLICIES)
async def test_a_value_larger_than_the_shard_share_is_kept_until_the_next_write(
    make_cache: MakeCache, tmp_path: Path, eviction: str
) -> None:
    unit = await unit_size(make_cache, tmp_path)
    cache = make_cache(shards=1, size_limit=10 * unit, eviction=eviction)
    for i in range(10):
        await cache.set(k(i), VALUE)
    big = b"B" * (12 * unit)  # more than the whole share, inline (under min_file_size)
    await cache.set("big", big)
    # Acknowledged, so readable: what it displaced is gone, not the write itself.
    assert await cache.get("big") == big
    # The shard is over its share until its next write, which culls again.
    await cache.set(k(10), VALUE)
    assert await cache.volume() <= 10 * unit
    assert await cache.get(k(10)) == VALUE


@pytest.mark.parametrize("eviction", POLICIES)
async def test_one_set_many_of_ten_times_the_limit_ends_under_it(
    make_cache: MakeCache, tmp_path: Path, eviction: str
) -> None:
    unit = await unit_size(make_cache, tmp_path)
    cache = make_cache(shards=2, size_limit=20 * unit, eviction=eviction)
    await cache.set_many({k(i): VALUE for i in range(20)})
    await cache.set_many({k(i): VALUE for i in range(100, 300)})  # 10x the limit, one call
    assert await cache.volume() <= 20 * unit * 1.1 + unit
    assert await cache.count() >= 2  # each shard keeps at least the batch's last write


@pytest.mark.parametrize("eviction", POLICIES)
async def test_random_writes_keep_the_bound_and_every_single_set_readable(
    make_cache: MakeCache, eviction: str
) -> None:
    """Random sets, concurrent sets and set_many of random sizes, with reads between them:
    after every step each shard is within its share (+10% and one entry), and a plain
    ``set`` that returned reads back."""
    rng = random.Random(7)
    limit, shards = 40_000, 2
    cache = make_cache(shards=shards, size_limit=limit, eviction=eviction)
    largest = 0
    for step in range(120):
        kind = rng.choice(["set", "gather", "many"])
        items = {
            f"s{step}-{i}": b"x" * rng.randrange(100, 3000)
            for i in range(1 if kind == "set" else rng.randrange(2, 40))
        }
        largest = max(largest, *(len(v) + 80 for v in items.values()))
        if kind == "set":
            ((key, value),) = items.items()
            await cache.set(key, value)
            assert await cache.get(key) == value, f"step {step}: a returned set is gone"
        elif kind == "gather":
            await asyncio.gather(*(cache.set(key, value) for key, value in items.items()))
        else:
            await cache.set_many(items)
        for key in rng.sample(sorted(items), min(3, len(items))):
            await cache.get(key)  # reads feed LRU/LFU
        assert await cache.volume() <= limit * 1.1 + shards * largest, f"step {step}"


async def test_an_lfu_newcomer_survives_its_own_write(
    make_cache: MakeCache, tmp_path: Path
) -> None:
    unit = await unit_size(make_cache, tmp_path)
    cache = make_cache(shards=1, size_limit=10 * unit, eviction="least-frequently-used")
    await cache.set_many({k(i): VALUE for i in range(10)})
    for _ in range(2):
        for i in range(10):
            assert await cache.get(k(i)) == VALUE  # all read: a newcomer ranks first
    await flush_access(cache)
    await cache.set(k(10), VALUE)
    assert await cache.get(k(10)) == VALUE  # an LFU newcomer survives its own write
    assert await cache.volume() <= 10 * unit


# -- policies ------------------------------------------------------------------------------
# The scenario shared by the policy tests: 48 entries in three groups of 16, stored in order
# G1, G2, G3; then G2 is read 3 times (at T1); then G1 is read 3 times and G3 once (at T2 >
# T1). Each policy ranks them differently:
G1 = [k(i) for i in range(0, 16)]
G2 = [k(i) for i in range(16, 32)]
G3 = [k(i) for i in range(32, 48)]
VICTIM_ORDER = {
    "least-recently-stored": G1 + G2 + G3,  # store order; reads change nothing
    "least-recently-used": G2 + G1 + G3,  # G2's last read is the oldest
    "least-frequently-used": G3 + G2 + G1,  # G3 read once; G2 and G1 3 times, G2 earlier
}


async def _three_groups(cache: AsyncCache) -> None:
    for key in G1 + G2 + G3:  # one write each: distinct store times
        await cache.set(key, VALUE)
    for _ in range(3):
        for key in G2:
            assert await cache.get(key) == VALUE
    await flush_access(cache)
    for _ in range(3):
        for key in G1:
            assert await cache.get(key) == VALUE
    for key in G3:
        assert await cache.get(key) == VALUE
    await flush_access(cache)


@pytest.mark.parametrize("eviction", POLICIES)
async def test_policy_picks_its_victims(
    make_cache: MakeCache, tmp_path: Path, eviction: str
) -> None:
    unit = await unit_size(make_cache, tmp_path)
    cache = make_cache(shards=1, size_limit=None, eviction=eviction)
    await _three_groups(cache)
    await cache.aclose()  # drains every write; the bookkeeping is on disk
    # Reopened with room for 40 of the 48: the next write batch culls, and no new entry
    # takes part, so the order is the policy's alone.
    bounded = make_cache(shards=1, size_limit=40 * unit + unit // 2, eviction=eviction)
    await flush_access(bounded)
    present = await live_keys(bounded)
    assert_evicted_in_order(present, VICTIM_ORDER[eviction], at_least=8)
    assert await bounded.volume() <= 40 * unit + unit // 2


async def test_policy_none_keeps_everything_over_the_limit(
    make_cache: MakeCache, tmp_path: Path
) -> None:
    unit = await unit_size(make_cache, tmp_path)
    cache = make_cache(shards=1, size_limit=10 * unit, eviction="none")
    for i in range(100):  # 10x the limit, one write batch each
        await cache.set(k(i), VALUE)
    await _three_groups(cache)
    assert await cache.count() == 100
    assert await cache.volume() >= 100 * unit
    assert (await cache.stats()).evictions == 0


async def test_policy_none_still_expires(make_cache: MakeCache, tmp_path: Path) -> None:
    """``none`` never evicts a live entry; TTL is the only thing that removes entries."""
    unit = await unit_size(make_cache, tmp_path)
    cache = make_cache(shards=1, size_limit=10 * unit, eviction="none")
    for i in range(30):
        await cache.set(k(i), VALUE, ttl=TTL)
    for i in range(30, 40):
        await cache.set(k(i), VALUE)
    await outlive(TTL)
    assert await cache.count() == 10
    for i in range(40, 110):  # plain writes purge expired rows a bounded amount at a time
        await cache.set(k(i), VALUE)
    assert await live_keys(cache) == {k(i) for i in range(30, 110)}
    assert await cache.volume() == 80 * unit
    stats = await cache.stats()
    assert (stats.evictions, stats.expirations) == (0, 30)


def shard_rows(directory: Path, statement: str, index: int = 0) -> list[Any]:
    """Read a shard file from outside the cache (what is really on disk)."""
    with contextlib.closing(sqlite3.connect(directory / f"shard-{index:03d}.db")) as conn:
        return conn.execute(statement).fetchall()


def culling_indexes(directory: Path) -> set[str]:
    names = "('entries_purge', 'entries_store', 'entries_access', 'entries_frequency')"
    rows = shard_rows(directory, f"SELECT name FROM sqlite_master WHERE name IN {names}")
    return {name for (name,) in rows}


@pytest.mark.parametrize(
    ("eviction", "index"),
    [
        ("least-recently-stored", "entries_store"),
        ("least-recently-used", "entries_access"),
        ("least-frequently-used", "entries_frequency"),
    ],
)
async def test_culling_indexes_are_built_once_a_shard_is_half_full(
    make_cache: MakeCache, tmp_path: Path, cache_dir: Path, eviction: str, index: str
) -> None:
    """Below half its limit a shard keeps no eviction/purge index (an overwrite would pay
    for it on every write); past half they are built, and culling then follows the policy's
    exact order, including entries stored before the indexes existed."""
    unit = await unit_size(make_cache, tmp_path)
    cache = make_cache(shards=1, size_limit=20 * unit, eviction=eviction)
    for i in range(9):
        await cache.set(k(i), VALUE)
    assert culling_indexes(cache_dir) == set()
    for i in range(9, 12):
        await cache.set(k(i), VALUE)
    assert culling_indexes(cache_dir) == {"entries_purge", index}
    for i in range(12, 30):
        await cache.set(k(i), VALUE)
    present = await live_keys(cache)
    assert len(present) <= 20
    assert_evicted_in_order(present, [k(i) for i in range(30)], at_least=10)


async def test_unbounded_cache_sweeps_expired_rows_off_disk(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    """Without a size limit there is no purge index: expired rows are still deleted from the
    file, by a bounded sweep over the keys that rides on later writes."""
    cache = make_cache(shards=1, size_limit=None)
    await cache.set_many({("old", i): VALUE for i in range(600)}, ttl=TTL)
    await cache.set_many({("kept", i): VALUE for i in range(100)})
    await outlive(TTL)
    assert shard_rows(cache_dir, "SELECT count(*) FROM entries")[0][0] == 700
    for i in range(64):  # 64 write batches: 8 purge passes, each sweeping a window of keys
        await cache.set(("new", i), i)
    assert culling_indexes(cache_dir) == set()
    assert shard_rows(cache_dir, "SELECT count(*) FROM entries")[0][0] == 164
    assert (await cache.stats()).expirations == 600
    assert await cache.count() == 164
    assert await cache.get_many([("kept", i) for i in range(100)]) == {
        ("kept", i): VALUE for i in range(100)
    }


async def test_sweep_keeps_up_with_a_stream_of_new_short_lived_keys(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    """Each sweep covers twice the keys written since the last one: rows that expire as
    fast as new keys arrive do not pile up in an unbounded cache."""
    cache = make_cache(shards=1, size_limit=None)
    rows = []
    for r in range(12):
        for b in range(8):  # 8 batches of 100 new keys, then the sweep of the 8th batch
            await cache.set_many({("stream", r, b, j): j for j in range(100)}, ttl=0.05)
        await outlive(0.05)
        rows.append(shard_rows(cache_dir, "SELECT count(*) FROM entries")[0][0])
    # 9,600 keys were written; what is on disk stays near the last rounds' worth.
    assert max(rows[4:]) <= 2_400, rows


@pytest.mark.parametrize(
    ("eviction", "read_key_survives"),
    [
        ("least-recently-stored", False),
        ("least-recently-used", True),
        ("least-frequently-used", True),
    ],
)
async def test_a_read_counts_from_the_next_write_batch(
    make_cache: MakeCache, tmp_path: Path, eviction: str, read_key_survives: bool
) -> None:
    """The read of the oldest key is buffered; the write that overflows the shard carries it
    and culls in the same batch, after applying it."""
    unit = await unit_size(make_cache, tmp_path)
    cache = make_cache(shards=1, size_limit=20 * unit + unit // 2, eviction=eviction)
    for i in range(20):
        await cache.set(k(i), VALUE)
    assert await cache.get(k(0)) == VALUE
    await cache.set(k(20), VALUE)  # over the limit: culls in this batch
    present = await live_keys(cache)
    assert (k(0) in present) is read_key_survives
    assert k(20) in present
    order = [k(i) for i in range(20)]
    if read_key_survives:
        order.remove(k(0))  # k(1) is now the least recently (and frequently) used
    assert_evicted_in_order(present, order, at_least=1)


async def test_an_evicted_entry_is_not_served_from_the_near_cache(
    make_cache: MakeCache, tmp_path: Path
) -> None:
    unit = await unit_size(make_cache, tmp_path)
    cache = make_cache(shards=1, size_limit=10 * unit + unit // 2, near_cache=2**20)
    for i in range(10):
        await cache.set(k(i), VALUE)
    for i in range(10):
        assert await cache.get(k(i)) == VALUE  # every entry now in the near cache
    for i in range(10, 15):
        await cache.set(k(i), VALUE)
    present = await live_keys(cache)
    assert k(0) not in present
    for i in range(15):
        assert (await cache.get(k(i)) == VALUE) is (k(i) in present), k(i)


async def test_overwrite_makes_an_entry_recently_stored(
    make_cache: MakeCache, tmp_path: Path
) -> None:
    unit = await unit_size(make_cache, tmp_path)
    cache = make_cache(shards=1, size_limit=20 * unit + unit // 2)
    for i in range(20):
        await cache.set(k(i), VALUE)
    await cache.set(k(0), VALUE)  # stored again: now the newest
    await cache.set(k(20), VALUE)
    present = await live_keys(cache)
    assert k(0) in present
    assert_evicted_in_order(present, [k(i) for i in range(1, 20)], at_least=1)


@pytest.mark.parametrize("reads_flushed", [True, False])
async def test_overwrite_resets_the_frequency(
    make_cache: MakeCache, tmp_path: Path, reads_flushed: bool
) -> None:
    """A new value is a new entry: the reads of the old one do not protect it under LFU."""
    unit = await unit_size(make_cache, tmp_path)
    cache = make_cache(shards=1, size_limit=None, eviction="least-frequently-used")
    for i in range(20):
        await cache.set(k(i), VALUE)
    for _ in range(5):
        for i in range(20):
            await cache.get(k(i))
    if reads_flushed:
        await flush_access(cache)
    await cache.set(k(7), VALUE)  # replaced: its five reads are gone
    await cache.aclose()
    bounded = make_cache(
        shards=1, size_limit=19 * unit + unit // 2, eviction="least-frequently-used"
    )
    await flush_access(bounded)
    present = await live_keys(bounded)
    assert k(7) not in present
    assert len(present) >= 1


# -- reads stay reads ----------------------------------------------------------------------
@pytest.mark.parametrize("eviction", ["least-recently-used", "least-frequently-used"])
@pytest.mark.parametrize("near_cache", [0, 2**20])
async def test_reads_stay_reads(
    make_cache: MakeCache, cache_dir: Path, eviction: str, near_cache: int
) -> None:
    cache = make_cache(shards=1, eviction=eviction, near_cache=near_cache)
    await cache.set_many({k(i): i for i in range(100)})
    with contextlib.closing(sqlite3.connect(cache_dir / "shard-000.db")) as observer:

        def version() -> int:
            value: int = observer.execute("PRAGMA data_version").fetchone()[0]
            return value

        def reads_recorded() -> int:
            total: int = observer.execute("SELECT sum(access_count) FROM entries").fetchone()[0]
            return total

        before = version()
        for _ in range(5):
            for i in range(100):
                assert await cache.get(k(i)) == i
        # 500 reads: no transaction committed (data_version moves on any other commit).
        assert version() == before
        assert reads_recorded() == 0
        await cache.set("write", 1)  # the writer's next batch carries the bookkeeping
        assert version() != before
        assert reads_recorded() == 500


async def test_lru_bookkeeping_survives_close(make_cache: MakeCache, cache_dir: Path) -> None:
    cache = make_cache(shards=1, eviction="least-recently-used")
    await cache.set_many({k(i): i for i in range(10)})
    for i in range(10):
        await cache.get(k(i))
    await cache.aclose()  # no write since the reads: closing flushes them
    with contextlib.closing(sqlite3.connect(cache_dir / "shard-000.db")) as conn:
        assert conn.execute("SELECT sum(access_count) FROM entries").fetchone()[0] == 10


async def test_get_or_set_hits_count_as_uses(make_cache: MakeCache, tmp_path: Path) -> None:
    unit = await unit_size(make_cache, tmp_path)
    cache = make_cache(shards=1, size_limit=20 * unit + unit // 2, eviction="least-recently-used")

    async def factory() -> bytes:
        return VALUE

    for i in range(20):
        await cache.set(k(i), VALUE)
    assert await cache.get_or_set(k(0), factory) == VALUE  # a hit: k(0) was just used
    await cache.set(k(20), VALUE)
    assert k(0) in await live_keys(cache)


async def test_get_many_hits_count_as_uses(make_cache: MakeCache, tmp_path: Path) -> None:
    unit = await unit_size(make_cache, tmp_path)
    cache = make_cache(shards=1, size_limit=20 * unit + unit // 2, eviction="least-recently-used")
    for i in range(20):
        await cache.set(k(i), VALUE)
    assert await cache.get_many([k(0)]) == {k(0): VALUE}
    await cache.set(k(20), VALUE)
    assert k(0) in await live_keys(cache)


# -- expired entries go first --------------------------------------------------------------
async def test_an_overflow_removes_expired_entries_before_live_ones(
    make_cache: MakeCache, tmp_path: Path
) -> None:
    unit = await unit_size(make_cache, tmp_path)
    cache = make_cache(shards=1, size_limit=100 * unit)
    keep: list[tuple[Any, ...]] = [("keep", i) for i in range(40)]
    await cache.set_many(dict.fromkeys(keep, VALUE))
    # Eight rounds: a batch of already-expired entries, then a batch of live ones that only
    # fits once the expired ones are gone. Live entries never exceed the limit.
    for r in range(8):
        await cache.set_many({("expired", r, j): VALUE for j in range(55)}, ttl=0)
        await cache.set_many({("live", r, j): VALUE for j in range(5)})
        keep += [("live", r, j) for j in range(5)]
    present = await live_keys(cache)
    assert set(keep) <= present, f"{len(set(keep) - present)} live entries were evicted"
    stats = await cache.stats()
    assert stats.evictions == 0
    assert stats.expirations == 8 * 55


# -- stats ---------------------------------------------------------------------------------
async def test_stats_count_evictions_exactly(make_cache: MakeCache, tmp_path: Path) -> None:
    unit = await unit_size(make_cache, tmp_path)
    cache = make_cache(shards=2, size_limit=30 * unit)
    for i in range(200):
        await cache.set(k(i), VALUE)
    stats = await cache.stats()
    assert isinstance(stats, CacheStats)
    assert stats.sets == 200
    assert stats.evictions == 200 - stats.count > 0
    assert stats.expirations == 0
    assert stats.count == sum(s.count for s in stats.shards) == await cache.count()
    assert stats.volume == sum(s.volume for s in stats.shards) <= 30 * unit
    assert [s.index for s in stats.shards] == [0, 1]


async def test_stats_count_expirations(make_cache: MakeCache) -> None:
    cache = make_cache(shards=2)
    await cache.set_many({k(i): i for i in range(25)}, ttl=TTL)
    await cache.set("stays", 1)
    await outlive(TTL)
    assert (await cache.stats()).expirations == 0  # expired, not yet removed
    assert await cache.expire() == 25
    stats = await cache.stats()
    assert (stats.expirations, stats.evictions, stats.count) == (25, 0, 1)


async def test_stats_reset_zeroes_every_counter(make_cache: MakeCache, tmp_path: Path) -> None:
    unit = await unit_size(make_cache, tmp_path)
    cache = make_cache(shards=1, size_limit=10 * unit)
    for i in range(40):
        await cache.set(k(i), VALUE)
    await cache.set("short", 1, ttl=0)
    await cache.expire()
    await cache.get(k(39))
    await cache.get("missing")
    await cache.delete(k(39))
    before = await cache.stats(reset=True)
    assert before.evictions > 0 and before.expirations == 1
    assert (before.hits, before.misses, before.sets, before.deletes) == (1, 1, 41, 1)
    after = await cache.stats()
    counters = (after.hits, after.misses, after.sets, after.deletes)
    assert (*counters, after.evictions, after.expirations) == (0,) * 6
    assert (after.count, after.volume) == (before.count, before.volume)
    # Counting starts again from zero, not from the old totals.
    for i in range(40, 60):
        await cache.set(k(i), VALUE)
    again = await cache.stats()
    assert again.sets == 20
    assert again.evictions == before.count + 20 - again.count
