"""The in-process near cache: faster repeated reads, never a stale one, within its bound.

Cross-process claims use a real second process (``Peer``) on the same directory, talking
through pipes: every write here is acknowledged before the other process is asked to read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from _helpers import SHARDS, Peer, outlive
from shardcache import AsyncCache, acached
from shardcache._near import _row_size

MISSING = "<missing>"


@pytest.fixture
async def peer(cache_dir: Path, cache: AsyncCache) -> AsyncIterator[Peer]:
    await cache.open()  # created here first, with the fixture's options
    other = await Peer.start(cache_dir, shards=SHARDS)
    yield other
    await other.aclose()


# -- in one process -----------------------------------------------------------------------
async def test_repeated_reads_hit_the_near_cache(cache: AsyncCache) -> None:
    await cache.set("k", {"v": 1})
    for _ in range(10):
        assert await cache.get("k") == {"v": 1}
    stats = await cache.stats()
    assert stats.hits == 10
    assert stats.near_hits >= 1


async def test_near_cache_off(make_cache) -> None:
    cache = make_cache(near_cache=0)
    other = make_cache(near_cache=0)
    await cache.set("k", 1)
    for i in range(20):
        assert await cache.get("k") == i + 1
        assert await other.get("k") == i + 1
        await other.set("k", i + 2)
    await cache.set_many({i: i for i in range(100)})
    assert await other.get_many(range(100)) == {i: i for i in range(100)}
    assert await cache.pop(5) == 5
    assert await other.get(5) is None
    assert (await cache.stats()).near_hits == 0
    assert (await other.stats()).near_hits == 0


async def test_near_cache_respects_its_byte_bound(make_cache) -> None:
    bound = 64 * 1024
    value = "x" * 1000
    cache = make_cache(shards=2, near_cache=bound)
    keys = list(range(400))  # 400 kB of values: six times the bound
    await cache.set_many({k: value for k in keys})
    for k in keys:
        assert await cache.get(k) == value
    await cache.stats(reset=True)
    for k in reversed(keys):  # what is still held is read first: hits until it runs out
        assert await cache.get(k) == value
    near_hits = (await cache.stats()).near_hits
    assert 0 < near_hits <= bound // len(value)


async def test_a_value_larger_than_the_near_cache_is_still_served(make_cache) -> None:
    cache = make_cache(shards=1, near_cache=1024)
    await cache.set("big", "y" * 10_000)
    for _ in range(3):
        assert await cache.get("big") == "y" * 10_000
    await cache.set("big", "z" * 10_000)
    assert await cache.get("big") == "z" * 10_000


async def test_immutable_values_are_kept_decoded_until_they_change_or_expire(
    cache: AsyncCache,
) -> None:
    text = "t" * 300
    await cache.set("s", text, ttl=0.3)
    await cache.set("l", ("a", ["b"]))  # a tuple, but with a list inside: mutable
    first, second = await cache.get("s"), await cache.get("s")
    assert first == second == text
    assert second is await cache.get("s")  # kept decoded: no decode per hit
    await cache.set("s", text + "!", ttl=0.3)
    assert await cache.get("s") == text + "!"
    mutable = await cache.get("l")
    assert mutable == ("a", ["b"]) and mutable is not await cache.get("l")
    await outlive(0.3)
    assert await cache.get("s", MISSING) == MISSING  # expiry is checked on kept values too
    await cache.set("n", text)
    assert await cache.get("n") == await cache.get("n") == text
    assert await cache.get("n", type=int) is None  # type= still decodes (and checks)


async def test_kept_values_count_in_the_byte_bound(make_cache) -> None:
    bound = 64 * 1024
    cache = make_cache(shards=1, near_cache=bound)
    values = {k: f"{k}:" + "v" * 500 for k in range(400)}  # 3x the bound, decoded or not
    await cache.set_many(values)
    for _ in range(2):
        for k, v in values.items():
            assert await cache.get(k) == v
    shard = cache._shards[0]
    assert shard.near_values and set(shard.near_values) <= set(shard.near)
    counted = sum(_row_size(k, row) for k, row in shard.near.items())
    counted += sum(kept[2] for kept in shard.near_values.values())
    assert shard.near_bytes == counted <= bound


# -- across processes ---------------------------------------------------------------------
async def test_no_stale_read_when_writes_alternate_between_processes(
    cache: AsyncCache, peer: Peer
) -> None:
    stale = []
    for i in range(2000):
        key = f"k{i % 3}"
        if i % 2:
            await cache.set(key, i)
            got = await peer.call("get", key, MISSING)
        else:
            await peer.call("set", key, i)
            got = await cache.get(key, MISSING)
        if got != i:
            stale.append((i, key, got))
    assert stale == []


async def test_no_stale_read_of_a_hot_key(cache: AsyncCache, peer: Peer) -> None:
    # Both sides read the key over and over (so it sits in both near caches) while the
    # other side changes it.
    stale = []
    for i in range(500):
        await cache.set("hot", i)
        for _ in range(2):
            if (got := await peer.call("get", "hot", MISSING)) != i:
                stale.append(("peer", i, got))
        await peer.call("incr", "hot")
        for _ in range(2):
            if (got := await cache.get("hot", MISSING)) != i + 1:
                stale.append(("here", i, got))
    assert stale == []
    # The near caches were in play: the second read of each round came from them.
    assert (await cache.stats()).near_hits > 0
    assert (await peer.call("stats"))["near_hits"] > 0


@pytest.mark.parametrize(
    "change",
    ["delete", "pop", "clear", "evict", "expire", "set_many", "delete_many", "incr", "touch"],
)
async def test_a_change_in_one_process_is_seen_by_the_next_get_in_another(
    cache: AsyncCache, peer: Peer, change: str
) -> None:
    await cache.set("k", 10, tag="t", ttl=0.2 if change == "expire" else None)
    await cache.set("other", "kept")
    for side in ("here", "peer"):  # both near caches hold "k" now
        got = await cache.get("k", MISSING) if side == "here" else await peer.call("get", "k")
        assert got == 10
    expected: object = MISSING
    if change == "delete":
        assert await peer.call("delete", "k") is True
    elif change == "pop":
        assert await peer.call("pop", "k") == 10
    elif change == "clear":
        assert await peer.call("clear") == 2
    elif change == "evict":
        assert await peer.call("evict", "t") == 1
    elif change == "expire":
        await outlive(0.2)
        assert await peer.call("expire") == 1
        assert await peer.call("count") == 1
    elif change == "set_many":
        await peer.call("set_many", {"k": 11})
        expected = 11
    elif change == "delete_many":
        assert await peer.call("delete_many", ["k", "nope"]) == 1
    elif change == "incr":
        assert await peer.call("incr", "k", 5) == 15
        expected = 15
    elif change == "touch":
        assert await peer.call("touch", "k", ttl=100) is True
        left = await cache.ttl("k")
        assert left is not None and 0 < left <= 100
        expected = 10
    assert await cache.get("k", MISSING) == expected
    assert await cache.get("other", MISSING) == (MISSING if change == "clear" else "kept")
    # And the other way round: a change here, seen over there.
    await cache.set("k", "back")
    assert await peer.call("get", "k") == "back"
    await cache.delete("k")
    assert await peer.call("get", "k", MISSING) == MISSING


async def test_a_remembered_acached_call_is_never_stale_across_processes(
    cache: AsyncCache, peer: Peer
) -> None:
    runs = 0

    @acached(cache)
    async def f(x: int) -> int:
        nonlocal runs
        runs += 1
        return -x

    assert [await f(1), await f(1)] == [-1, -1]  # the second call is a remembered one
    stale = []
    for i in range(200):
        await peer.call("set", f.cache_key(1), i)
        if (got := await f(1)) != i:
            stale.append((i, got))
        if (got := await f(1)) != i:
            stale.append((i, got))
    assert stale == []
    assert await peer.call("delete", f.cache_key(1)) is True
    assert await f(1) == -1
    assert runs == 2


async def test_large_values_are_never_stale_across_processes(make_cache, cache_dir: Path) -> None:
    cache = make_cache(min_file_size=1024)
    await cache.open()
    peer = await Peer.start(cache_dir, shards=SHARDS, min_file_size=1024)
    try:
        for i in range(50):
            value = f"{i}:" + "v" * 5000
            if i % 2:
                await cache.set("big", value)
                assert await peer.call("get", "big") == value
            else:
                await peer.call("set", "big", value)
                assert await cache.get("big") == value
    finally:
        await peer.aclose()
