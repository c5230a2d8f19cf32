"""The contract of ``AsyncCache`` (API.md §1), method by method, through the public API."""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from _helpers import SHARDS, outlive
from shardcache import AsyncCache, CacheBackend, CacheClosedError, CacheStats, CheckReport

TTL = 0.2  # seconds: short expiries wait on real time, never longer than this plus a margin


# -- lifecycle ----------------------------------------------------------------------------
async def test_open_is_lazy_then_creates_the_directory(cache_dir: Path) -> None:
    cache = AsyncCache(cache_dir)
    assert not cache_dir.exists()
    await cache.open()
    assert cache_dir.is_dir()
    assert sorted(p.name for p in cache_dir.glob("shard-*.db")) == [
        f"shard-{i:03d}.db" for i in range(8)
    ]
    await cache.aclose()


async def test_first_operation_opens(cache_dir: Path) -> None:
    cache = AsyncCache(cache_dir, shards=2)
    try:
        await cache.set("k", "v")
        assert await cache.get("k") == "v"
    finally:
        await cache.aclose()


async def test_async_with_opens_and_closes(cache_dir: Path) -> None:
    async with AsyncCache(cache_dir) as cache:
        assert isinstance(cache, AsyncCache)
        await cache.set("k", 1)
    with pytest.raises(CacheClosedError):
        await cache.get("k")


async def test_aclose_is_idempotent_and_works_unopened(cache_dir: Path) -> None:
    cache = AsyncCache(cache_dir)
    await cache.aclose()
    await cache.aclose()
    assert not cache_dir.exists()
    with pytest.raises(CacheClosedError):
        await cache.set("k", 1)
    opened = AsyncCache(cache_dir)
    await opened.set("k", 1)
    await opened.aclose()
    await opened.aclose()


async def test_aclose_drains_pending_writes(make_cache, cache_dir: Path) -> None:
    cache = make_cache()
    await cache.open()
    tasks = [asyncio.create_task(cache.set(("k", i), i)) for i in range(300)]
    await asyncio.sleep(0)  # one loop turn: every set is now queued, none committed yet
    await cache.aclose()
    done, pending = await asyncio.wait(tasks, timeout=10)
    assert not pending
    assert all(t.exception() is None for t in done)
    reopened = make_cache()
    assert await reopened.get_many([("k", i) for i in range(300)]) == {
        ("k", i): i for i in range(300)
    }


async def test_default_directory_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHARDCACHE_DIR", str(tmp_path / "from-env"))
    async with AsyncCache(shards=1) as cache:
        await cache.set("k", 1)
        assert cache.directory == tmp_path / "from-env"
    assert (tmp_path / "from-env" / "shard-000.db").is_file()


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG cache dir: Linux/BSD")
async def test_default_directory_is_the_user_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHARDCACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = AsyncCache(shards=1)
    assert cache.directory == tmp_path / "xdg" / "shardcache" / "default"
    async with cache:
        await cache.set("k", 1)
    assert (tmp_path / "xdg" / "shardcache" / "default" / "shard-000.db").is_file()


async def test_satisfies_the_backend_protocol(cache: AsyncCache) -> None:
    assert isinstance(cache, CacheBackend)


# -- get / set ------------------------------------------------------------------------------
async def test_get_missing_returns_default(cache: AsyncCache) -> None:
    assert await cache.get("nope") is None
    assert await cache.get("nope", "fallback") == "fallback"


async def test_set_overwrites(cache: AsyncCache) -> None:
    await cache.set("k", 1)
    await cache.set("k", 2)
    assert await cache.get("k") == 2
    assert await cache.count() == 1


async def test_set_returns_none(cache: AsyncCache) -> None:
    assert await cache.set("k", 1) is None


async def test_returned_values_are_private_copies(cache: AsyncCache) -> None:
    await cache.set("k", {"list": [1, 2]})
    first = await cache.get("k")
    first["list"].append(3)
    assert await cache.get("k") == {"list": [1, 2]}


async def test_ttl_expiry(cache: AsyncCache) -> None:
    await cache.set("k", "v", ttl=TTL)
    await cache.set("forever", "v", ttl=None)
    assert await cache.get("k") == "v"
    await outlive(TTL)
    assert await cache.get("k", "gone") == "gone"
    assert not await cache.has("k")
    assert await cache.get("forever") == "v"


async def test_ttl_zero_is_already_expired(cache: AsyncCache) -> None:
    await cache.set("k", "v", ttl=0)
    assert await cache.get("k", "gone") == "gone"


async def test_ttl_infinity_never_expires(cache: AsyncCache) -> None:
    await cache.set("k", "v", ttl=math.inf)
    assert await cache.ttl("k") is None


async def test_default_ttl_applies_when_ttl_omitted(make_cache) -> None:
    cache = make_cache(default_ttl=TTL)
    await cache.set("default", 1)
    await cache.set("explicit-none", 2, ttl=None)
    await cache.set("explicit", 3, ttl=3600)
    assert 0 < await cache.ttl("default") <= TTL
    assert await cache.ttl("explicit-none") is None
    assert TTL < await cache.ttl("explicit") <= 3600
    await outlive(TTL)
    assert await cache.get("default", "gone") == "gone"
    assert await cache.get_many(["default", "explicit-none", "explicit"]) == {
        "explicit-none": 2,
        "explicit": 3,
    }


async def test_an_expired_entry_is_missing_to_every_operation(cache: AsyncCache) -> None:
    names = ["get", "has", "ttl", "add", "delete", "pop", "touch", "incr", "many", "del-many"]
    await cache.set_many({f"expired-{n}": "old" for n in names}, ttl=TTL, tag="t")
    await cache.set("live", "v", tag="t")
    await outlive(TTL)
    assert await cache.get("expired-get", "gone") == "gone"
    assert await cache.has("expired-has") is False
    with pytest.raises(KeyError):
        await cache.ttl("expired-ttl")
    assert await cache.add("expired-add", "new", ttl=None) is True
    assert await cache.get("expired-add") == "new"
    assert await cache.ttl("expired-add") is None
    assert await cache.delete("expired-delete") is False
    assert await cache.pop("expired-pop", "default") == "default"
    assert await cache.touch("expired-touch", ttl=100) is False
    assert await cache.get("expired-touch") is None
    assert await cache.incr("expired-incr", default=7) == 8
    assert await cache.get_many(["expired-many", "live"]) == {"live": "v"}
    assert await cache.delete_many(["expired-del-many"]) == 0
    live = ["live", "expired-add", "expired-incr"]
    assert sorted([k async for k in cache.keys()]) == sorted(live)
    assert sorted(k for k, _ in [kv async for kv in cache.items()]) == sorted(live)
    assert await cache.count() == 3
    assert await cache.evict("t") == 1  # the expired tagged entries are not counted
    assert await cache.count() == 2


# -- add --------------------------------------------------------------------------------------
async def test_add_only_when_missing(cache: AsyncCache) -> None:
    assert await cache.add("k", 1) is True
    assert await cache.add("k", 2) is False
    assert await cache.get("k") == 1


async def test_add_wins_once_among_concurrent_tasks(cache: AsyncCache) -> None:
    results = await asyncio.gather(*(cache.add("k", i) for i in range(100)))
    assert results.count(True) == 1
    assert await cache.get("k") == results.index(True)


async def test_add_with_tag_and_ttl(cache: AsyncCache) -> None:
    assert await cache.add("k", 1, ttl=60, tag="t")
    assert 0 < await cache.ttl("k") <= 60
    assert await cache.evict("t") == 1
    assert not await cache.has("k")


# -- delete / pop / has ------------------------------------------------------------------
async def test_delete(cache: AsyncCache) -> None:
    await cache.set("k", 1)
    assert await cache.delete("k") is True
    assert await cache.delete("k") is False
    assert await cache.get("k") is None


async def test_pop(cache: AsyncCache) -> None:
    await cache.set("k", [1, 2])
    assert await cache.pop("k") == [1, 2]
    assert await cache.pop("k", "default") == "default"
    assert not await cache.has("k")


async def test_pop_of_a_large_value_kept_in_a_file(make_cache) -> None:
    cache = make_cache(min_file_size=1024)
    value = b"v" * 100_000
    await cache.set("k", value)
    assert await cache.pop("k") == value
    assert await cache.get("k") is None
    assert list((cache.directory / "values").glob("*.val")) == []


async def test_pop_is_atomic_among_concurrent_tasks(cache: AsyncCache) -> None:
    await cache.set("k", "only once")
    results = await asyncio.gather(*(cache.pop("k", None) for _ in range(50)))
    assert results.count("only once") == 1
    assert results.count(None) == 49


async def test_has(cache: AsyncCache) -> None:
    assert await cache.has("k") is False
    await cache.set("k", None)
    assert await cache.has("k") is True


# -- touch / ttl ---------------------------------------------------------------------------
async def test_ttl_reports_seconds_left(cache: AsyncCache) -> None:
    await cache.set("k", 1, ttl=100)
    await cache.set("forever", 1)
    left = await cache.ttl("k")
    assert left is not None and 99 < left <= 100
    assert await cache.ttl("forever") is None
    with pytest.raises(KeyError):
        await cache.ttl("missing")


async def test_touch_resets_expiry(cache: AsyncCache) -> None:
    await cache.set("k", 1, ttl=TTL)
    assert await cache.touch("k", ttl=3600) is True
    assert 3500 < await cache.ttl("k") <= 3600
    await outlive(TTL)
    assert await cache.get("k") == 1
    assert await cache.touch("k", ttl=None) is True
    assert await cache.ttl("k") is None


async def test_touch_can_shorten(cache: AsyncCache) -> None:
    await cache.set("k", 1)
    assert await cache.touch("k", ttl=TTL) is True
    await outlive(TTL)
    assert await cache.get("k") is None


async def test_touch_missing_is_false(cache: AsyncCache) -> None:
    assert await cache.touch("missing", ttl=10) is False
    assert not await cache.has("missing")


# -- incr / decr ---------------------------------------------------------------------------
async def test_incr_and_decr(cache: AsyncCache) -> None:
    assert await cache.incr("n") == 1
    assert await cache.incr("n", 5) == 6
    assert await cache.decr("n") == 5
    assert await cache.decr("n", 10) == -5
    assert await cache.get("n") == -5
    assert await cache.incr("m", default=100) == 101
    assert await cache.decr("d", 3, default=10) == 7


async def test_incr_of_an_int_set_before(cache: AsyncCache) -> None:
    await cache.set("n", 41)
    assert await cache.incr("n") == 42
    assert await cache.get("n") == 42


async def test_incr_beyond_64_bits(cache: AsyncCache) -> None:
    await cache.set("n", 2**64 - 1)
    assert await cache.incr("n") == 2**64
    assert await cache.get("n") == 2**64
    assert await cache.decr("n", 2**65) == -(2**64)


async def test_incr_missing_with_default_none_raises(cache: AsyncCache) -> None:
    with pytest.raises(KeyError):
        await cache.incr("n", default=None)
    assert not await cache.has("n")


async def test_incr_of_a_non_int_raises_and_keeps_value(cache: AsyncCache) -> None:
    await cache.set("s", "text")
    await cache.set("f", 1.5)
    with pytest.raises(TypeError):
        await cache.incr("s")
    with pytest.raises(TypeError):
        await cache.incr("f")
    assert await cache.get("s") == "text"
    assert await cache.get("f") == 1.5


@pytest.mark.parametrize("delta", [1.5, "1", True, None])
async def test_incr_rejects_non_int_delta(cache: AsyncCache, delta: object) -> None:
    with pytest.raises(TypeError):
        await cache.incr("n", delta)  # type: ignore[arg-type]
    assert not await cache.has("n")


async def test_incr_keeps_the_expiry(cache: AsyncCache) -> None:
    await cache.set("n", 1, ttl=100)
    await cache.incr("n")
    left = await cache.ttl("n")
    assert left is not None and 0 < left <= 100


async def test_incr_sums_exactly_among_concurrent_tasks(cache: AsyncCache) -> None:
    await asyncio.gather(*(cache.incr("n", i) for i in range(1, 501)))
    assert await cache.get("n") == 500 * 501 // 2


# -- many ---------------------------------------------------------------------------------
async def test_get_many_returns_only_hits(cache: AsyncCache) -> None:
    await cache.set_many({"a": 1, "b": None, ("t", 1): [1]})
    got = await cache.get_many(["a", "b", ("t", 1), "missing", "a"])
    assert got == {"a": 1, "b": None, ("t", 1): [1]}
    assert await cache.get_many([]) == {}


async def test_get_many_across_shards_and_files(make_cache) -> None:
    cache = make_cache(min_file_size=1024)
    values = {i: (b"x" * 5000 if i % 50 == 0 else i) for i in range(1000)}
    await cache.set_many(values)
    assert await cache.get_many(range(-10, 1010)) == values


async def test_set_many_with_ttl_and_tag(cache: AsyncCache) -> None:
    await cache.set_many({"a": 1, "b": 2}, ttl=TTL, tag="batch")
    await cache.set_many({"c": 3}, tag="batch")
    assert await cache.set_many({}) is None
    assert await cache.get_many(["a", "b", "c"]) == {"a": 1, "b": 2, "c": 3}
    await outlive(TTL)
    assert await cache.get_many(["a", "b", "c"]) == {"c": 3}
    assert await cache.evict("batch") == 1


async def test_delete_many_counts_removed_entries(cache: AsyncCache) -> None:
    await cache.set_many({"a": 1, "b": 2, "c": 3})
    assert await cache.delete_many(["a", "b", "a", "missing"]) == 2
    assert await cache.get_many(["a", "b", "c"]) == {"c": 3}
    assert await cache.delete_many([]) == 0


# -- get_or_set ---------------------------------------------------------------------------
async def test_get_or_set_computes_once_and_stores(cache: AsyncCache) -> None:
    calls = 0

    async def factory() -> dict[str, int]:
        nonlocal calls
        calls += 1
        return {"answer": 42}

    assert await cache.get_or_set("k", factory, ttl=60, tag="t") == {"answer": 42}
    assert await cache.get_or_set("k", factory) == {"answer": 42}
    assert calls == 1
    assert await cache.get("k") == {"answer": 42}
    assert 0 < await cache.ttl("k") <= 60
    assert await cache.evict("t") == 1


async def test_get_or_set_single_flight_among_tasks(cache: AsyncCache) -> None:
    calls = 0
    started = asyncio.Event()
    release = asyncio.Event()

    async def factory() -> str:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return "value"

    tasks = [asyncio.create_task(cache.get_or_set("k", factory)) for _ in range(50)]
    await asyncio.wait_for(started.wait(), 10)
    release.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert results == ["value"] * 50
    assert calls == 1
    assert (await cache.stats()).stampede_waits >= 1


async def test_get_or_set_error_is_not_cached(cache: AsyncCache) -> None:
    attempts = 0

    async def failing() -> int:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("boom")

    async def working() -> int:
        return 7

    with pytest.raises(RuntimeError, match="boom"):
        await cache.get_or_set("k", failing)
    assert not await cache.has("k")
    assert await cache.get_or_set("k", working) == 7
    assert attempts == 1


async def test_get_or_set_caches_none(cache: AsyncCache) -> None:
    calls = 0

    async def factory() -> None:
        nonlocal calls
        calls += 1

    assert await cache.get_or_set("k", factory) is None
    assert await cache.get_or_set("k", factory) is None
    assert calls == 1
    assert await cache.has("k")


async def test_get_or_set_recomputes_after_expiry(cache: AsyncCache) -> None:
    values = iter([1, 2])

    async def factory() -> int:
        return next(values)

    assert await cache.get_or_set("k", factory, ttl=TTL) == 1
    await outlive(TTL)
    assert await cache.get_or_set("k", factory, ttl=TTL) == 2


# -- tags, expire, clear, count, volume ---------------------------------------------------
async def test_evict_by_tag(cache: AsyncCache) -> None:
    await cache.set_many({"a": 1, "b": 2}, tag="t1")
    await cache.set("c", 3, tag="t2")
    await cache.set("d", 4)
    assert await cache.evict("t1") == 2
    assert await cache.get_many(["a", "b", "c", "d"]) == {"c": 3, "d": 4}
    assert await cache.evict("t1") == 0
    assert await cache.evict("unknown") == 0


async def test_set_without_tag_removes_the_tag(cache: AsyncCache) -> None:
    await cache.set("k", 1, tag="t")
    await cache.set("k", 2)
    assert await cache.evict("t") == 0
    assert await cache.get("k") == 2


async def test_evict_rejects_non_str_tags(cache: AsyncCache) -> None:
    with pytest.raises(TypeError):
        await cache.evict(1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await cache.set("k", 1, tag=1)  # type: ignore[arg-type]
    assert not await cache.has("k")


async def test_expire_purges_expired_entries(make_cache) -> None:
    cache = make_cache(min_file_size=1024)
    await cache.set_many({f"short{i}": i for i in range(5)}, ttl=TTL)
    await cache.set("big", b"b" * 10_000, ttl=TTL)
    await cache.set_many({"keep1": 1, "keep2": 2})
    volume_before = await cache.volume()
    await outlive(TTL)
    assert await cache.expire() == 6
    assert await cache.expire() == 0
    assert await cache.count() == 2
    assert await cache.volume() < volume_before - 10_000
    assert (await cache.stats()).expirations >= 6
    assert await cache.get_many(["keep1", "keep2"]) == {"keep1": 1, "keep2": 2}


async def test_clear(make_cache) -> None:
    cache = make_cache(min_file_size=1024)
    await cache.set_many({i: i for i in range(100)})
    await cache.set("big", b"b" * 10_000)
    assert await cache.get(5) == 5  # in the near cache now
    assert await cache.clear() == 101
    assert await cache.count() == 0
    assert await cache.volume() == 0
    assert await cache.get(5) is None
    assert [k async for k in cache.keys()] == []
    assert await cache.clear() == 0
    await cache.set("after", 1)
    assert await cache.get("after") == 1


@pytest.mark.parametrize("method", ["count", "volume"])
async def test_count_and_volume_as_the_first_call(make_cache, method: str) -> None:
    writer = make_cache()
    await writer.set("k", 1)
    expected = await getattr(writer, method)()
    assert expected > 0
    assert await getattr(make_cache(), method)() == expected


async def test_volume_follows_the_data(make_cache) -> None:
    cache = make_cache(min_file_size=4096)
    assert await cache.volume() == 0
    await cache.set("small", 1)
    small = await cache.volume()
    assert small > 0
    await cache.set("big", b"x" * 200_000)
    assert await cache.volume() >= small + 200_000
    await cache.delete("big")
    assert await cache.volume() == small


# -- stats ----------------------------------------------------------------------------------
async def test_stats_counters(cache: AsyncCache) -> None:
    await cache.set("a", 1)
    await cache.set_many({"b": 2, "c": 3})
    await cache.add("d", 4)
    await cache.add("d", 5)  # not stored: not a set
    await cache.get("a")
    await cache.get("a")
    await cache.get("missing")
    await cache.get_many(["b", "missing"])
    await cache.delete("c")
    await cache.delete("missing")
    stats = await cache.stats()
    assert isinstance(stats, CacheStats)
    assert (stats.hits, stats.misses, stats.sets, stats.deletes) == (3, 2, 4, 1)
    assert stats.count == 3 == await cache.count()
    assert stats.volume == await cache.volume()
    assert [s.index for s in stats.shards] == list(range(SHARDS))
    assert sum(s.count for s in stats.shards) == 3
    assert sum(s.volume for s in stats.shards) == stats.volume
    assert stats.queue_depth == [0] * SHARDS
    assert stats.stampede_waits == 0


async def test_stats_reset(cache: AsyncCache) -> None:
    await cache.set("a", 1)
    await cache.get("a")
    before = await cache.stats(reset=True)
    assert (before.hits, before.sets) == (1, 1)
    after = await cache.stats()
    assert (after.hits, after.misses, after.sets, after.deletes) == (0, 0, 0, 0)
    assert after.count == 1


async def test_stats_counters_survive_reopen_and_add_up_across_instances(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "c"
    async with AsyncCache(directory) as first:
        await first.set("a", 1)
        await first.get("a")
        await first.get("b")
        await first.delete("a")
    async with AsyncCache(directory) as second, AsyncCache(directory) as third:
        stats = await second.stats()  # the first instance's, saved when it closed
        assert (stats.hits, stats.misses, stats.sets, stats.deletes) == (1, 1, 1, 1)
        await second.get("x")
        await third.set("y", 2)
        stats = await second.stats()  # saved totals plus this instance's own
        assert (stats.hits, stats.misses, stats.sets) == (1, 2, 1)
    async with AsyncCache(directory) as fourth:
        stats = await fourth.stats(reset=True)  # both closed instances added theirs
        assert (stats.hits, stats.misses, stats.sets, stats.deletes) == (1, 2, 2, 1)
        stats = await fourth.stats()
        assert (stats.hits, stats.misses, stats.sets, stats.deletes) == (0, 0, 0, 0)
    async with AsyncCache(directory) as fifth:  # the reset zeroed the saved totals too
        stats = await fifth.stats()
        assert (stats.hits, stats.misses, stats.sets, stats.deletes) == (0, 0, 0, 0)


async def test_stats_reset_keeps_a_total_saved_while_it_ran(tmp_path: Path) -> None:
    """reset=True takes away the totals it read: another instance that closes between that
    read and the reset's write keeps its counts (zeroing would drop them)."""
    directory = tmp_path / "c"
    async with AsyncCache(directory) as earlier:
        await earlier.get("missing")  # a saved total for the reset to take
    closing = AsyncCache(directory)
    for _ in range(3):
        await closing.get("missing")

    class ClosesTheOtherMidReset(AsyncCache):
        async def _in_pool(self, fn: Any, *args: Any) -> Any:
            result = await super()._in_pool(fn, *args)
            if args and "stat." in str(args[-1]):  # the read of the saved totals
                await closing.aclose()  # saves its 3 misses before the reset's write
            return result

    async with ClosesTheOtherMidReset(directory) as resetting:
        await resetting.get("missing")
        stats = await resetting.stats(reset=True)
        assert stats.misses == 2  # the earlier one's and its own: the other's came later
    async with AsyncCache(directory) as later:
        assert (await later.stats()).misses == 3


async def test_stats_counts_evictions(make_cache) -> None:
    cache = make_cache(shards=1, size_limit=20_000)
    for i in range(100):
        await cache.set(i, b"x" * 1000)
    stats = await cache.stats()
    assert stats.evictions > 0
    assert stats.count == await cache.count() < 100


# -- eviction policies --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("eviction", "keeps_the_hot_key"),
    [
        ("least-recently-stored", False),  # key 0 was stored first: it goes first
        ("least-recently-used", True),  # key 0 is read before every write
        ("least-frequently-used", True),  # key 0 is read far more often than any other
    ],
)
async def test_eviction_policy_picks_victims(
    make_cache, eviction: str, keeps_the_hot_key: bool
) -> None:
    cache = make_cache(shards=1, size_limit=100_000, eviction=eviction)
    value = b"x" * 1000
    await cache.set(0, value)
    await cache.set(1, value)  # never read
    stored = 2
    while await cache.count() == stored:  # count() is not an access
        assert await cache.get(0) == value
        await cache.set(stored, value)
        stored += 1
        assert stored < 500, "nothing was ever evicted"
    present = await cache.get_many(range(stored))
    if keeps_the_hot_key:
        assert 0 in present
        assert 1 not in present  # stored second, never read: the first victim
    else:
        assert 0 not in present  # stored first: the first victim, however often read
    assert stored - 1 in present
    assert await cache.volume() <= 100_000


async def test_size_limit_bounds_the_volume(make_cache) -> None:
    cache = make_cache(shards=2, size_limit=50_000)
    for i in range(300):
        await cache.set(i, b"x" * 500)
    assert await cache.volume() <= 50_000
    assert await cache.has(299)


async def test_eviction_none_keeps_everything(make_cache) -> None:
    cache = make_cache(shards=1, size_limit=5_000, eviction="none")
    await cache.set_many({i: b"x" * 1000 for i in range(20)})
    assert await cache.count() == 20


async def test_unbounded_size(make_cache) -> None:
    cache = make_cache(shards=1, size_limit=None)
    await cache.set_many({i: b"x" * 1000 for i in range(50)})
    assert await cache.count() == 50


# -- keys / items ---------------------------------------------------------------------------
async def test_keys_and_items(cache: AsyncCache) -> None:
    data = {"a": 1, 2: "two", ("t", 3): [3], b"b": None}
    await cache.set_many(data)
    keys = [k async for k in cache.keys()]
    assert sorted(map(repr, keys)) == sorted(map(repr, data))
    assert dict([item async for item in cache.items()]) == data


async def test_keys_while_writing(cache: AsyncCache) -> None:
    before = {("old", i): i for i in range(1500)}
    await cache.set_many(before)
    writing = True

    async def writer() -> None:
        i = 0
        while writing:
            await cache.set(("new", i), i)
            await cache.set(("old", i % 1500), -i)  # overwrite: the key stays
            i += 1

    task = asyncio.create_task(writer())
    try:
        keys = [k async for k in cache.keys()]
        items = [kv async for kv in cache.items()]
    finally:
        writing = False
        await asyncio.wait_for(task, 10)
    assert len(keys) == len(set(keys)), "a key was yielded twice"
    assert set(before) <= set(keys), "a key that existed throughout was skipped"
    item_keys = [k for k, _ in items]
    assert len(item_keys) == len(set(item_keys))
    assert set(before) <= set(item_keys)
    for (kind, i), value in items:
        assert value == i or (kind == "old" and value <= 0)


# -- check / vacuum -----------------------------------------------------------------------
async def test_check_on_a_healthy_cache(cache: AsyncCache) -> None:
    await cache.set_many({i: i for i in range(100)})
    report = await cache.check()
    assert isinstance(report, CheckReport)
    assert report.ok and report.problems == [] and report.fixed == []


async def test_vacuum_reclaims_space_and_keeps_data(make_cache) -> None:
    cache = make_cache(shards=1)
    await cache.set_many({i: b"x" * 1000 for i in range(2000)})
    await cache.delete_many(range(100, 2000))

    def footprint() -> int:  # the shard file and its write-ahead log
        files = [cache.directory / "shard-000.db", cache.directory / "shard-000.db-wal"]
        return sum(p.stat().st_size for p in files if p.exists())

    before = footprint()
    assert await cache.vacuum() is None
    assert footprint() < before
    assert await cache.get_many(range(200)) == {i: b"x" * 1000 for i in range(100)}
    assert (await cache.check()).ok
    await cache.set("after", 1)
    assert await cache.get("after") == 1


async def test_vacuum_as_the_first_call(make_cache) -> None:
    cache = make_cache(shards=1)
    await cache.set_many({i: b"x" * 1000 for i in range(2000)})
    await cache.clear()
    await cache.aclose()
    shard = cache.directory / "shard-000.db"
    reopened = make_cache(shards=1)
    await reopened.open()
    await reopened.aclose()  # the last connection out checkpoints the log into the file
    before = shard.stat().st_size
    await make_cache(shards=1).vacuum()
    assert shard.stat().st_size < before


# -- closed ---------------------------------------------------------------------------------
async def _consume(aiter) -> list[object]:  # type: ignore[no-untyped-def]
    return [x async for x in aiter]


async def _factory() -> int:
    return 1


CLOSED_CALLS = {
    "get": lambda c: c.get("k"),
    "set": lambda c: c.set("k", 1),
    "add": lambda c: c.add("k", 1),
    "delete": lambda c: c.delete("k"),
    "pop": lambda c: c.pop("k"),
    "has": lambda c: c.has("k"),
    "touch": lambda c: c.touch("k", ttl=1),
    "ttl": lambda c: c.ttl("k"),
    "incr": lambda c: c.incr("k"),
    "decr": lambda c: c.decr("k"),
    "get_many": lambda c: c.get_many(["k"]),
    "set_many": lambda c: c.set_many({"k": 1}),
    "delete_many": lambda c: c.delete_many(["k"]),
    "get_or_set": lambda c: c.get_or_set("k", _factory),
    "evict": lambda c: c.evict("t"),
    "expire": lambda c: c.expire(),
    "clear": lambda c: c.clear(),
    "count": lambda c: c.count(),
    "volume": lambda c: c.volume(),
    "stats": lambda c: c.stats(),
    "keys": lambda c: _consume(c.keys()),
    "items": lambda c: _consume(c.items()),
    "check": lambda c: c.check(),
    "vacuum": lambda c: c.vacuum(),
    "open": lambda c: c.open(),
}


@pytest.mark.parametrize("call", CLOSED_CALLS.values(), ids=CLOSED_CALLS.keys())
async def test_every_operation_after_aclose_raises(cache: AsyncCache, call) -> None:  # type: ignore[no-untyped-def]
    await cache.set("k", 1)
    await cache.aclose()
    with pytest.raises(CacheClosedError):
        await call(cache)
