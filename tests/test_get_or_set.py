"""``AsyncCache.get_or_set``: the stampede machinery of ``@acached`` behind a zero-argument
async factory, on a real cache in a fresh directory (``cache`` from conftest).

Unlike ``@acached``, ``get_or_set`` is a cache operation: cache failures raise (no fail-open).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shardcache import AsyncCache, CacheClosedError, CacheTimeoutError, ConfigurationError

LONG = 10.0  # bound of every wait that should end much sooner


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = LONG) -> None:
    """Re-check a condition that has no event to await, with backoff, bounded."""

    async def loop() -> None:
        delay = 0.001
        while not await predicate():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    await asyncio.wait_for(loop(), timeout)


def waits_reach(cache: AsyncCache, n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await cache.stats()).stampede_waits >= n

    return check


class Factory:
    """A zero-argument async factory that counts its calls and can be held at a gate."""

    def __init__(self, result: Any = "value", *, error: BaseException | None = None) -> None:
        self.result = result
        self.error = error
        self.calls = 0
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self) -> Any:
        self.calls += 1
        self.started.set()
        await asyncio.wait_for(self.gate.wait(), LONG)
        if self.error is not None:
            raise self.error
        return self.result


async def test_computes_once_then_serves_the_stored_value(cache: AsyncCache) -> None:
    factory = Factory({"answer": 42})
    assert await cache.get_or_set(("user", 1), factory, ttl=60) == {"answer": 42}
    assert await cache.get_or_set(("user", 1), factory, ttl=60) == {"answer": 42}
    assert factory.calls == 1
    assert await cache.get(("user", 1)) == {"answer": 42}
    remaining = await cache.ttl(("user", 1))
    assert remaining is not None and 0 < remaining <= 60


async def test_none_is_cached(cache: AsyncCache) -> None:
    factory = Factory(None)
    factory.gate.clear()
    tasks = [asyncio.create_task(cache.get_or_set("k", factory)) for _ in range(10)]
    await asyncio.wait_for(factory.started.wait(), LONG)
    factory.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*tasks), LONG) == [None] * 10
    assert await cache.get_or_set("k", factory) is None
    assert factory.calls == 1
    assert await cache.has("k")


async def test_100_concurrent_callers_one_call_and_the_stampede_waits_counter(
    cache: AsyncCache,
) -> None:
    factory = Factory("value")
    factory.gate.clear()
    assert (await cache.stats()).stampede_waits == 0
    tasks = [asyncio.create_task(cache.get_or_set("cold", factory)) for _ in range(100)]
    await until(waits_reach(cache, 99))
    factory.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*tasks), LONG) == ["value"] * 100
    assert factory.calls == 1
    stats = await cache.stats(reset=True)
    assert stats.stampede_waits == 99  # everyone but the one that computed
    assert (await cache.stats()).stampede_waits == 0
    assert await cache.get_or_set("cold", factory) == "value"  # a hit waits for nobody
    assert (await cache.stats()).stampede_waits == 0


async def test_hits_and_misses_count_in_stats(cache: AsyncCache) -> None:
    factory = Factory(5)
    await cache.stats(reset=True)
    assert await cache.get_or_set("g", factory) == 5  # a miss, computed
    assert await cache.get_or_set("g", factory) == 5  # a hit
    assert await cache.get_or_set("g", factory) == 5  # a hit
    stats = await cache.stats()
    assert (stats.hits, stats.misses, stats.sets) == (2, 1, 1)


async def test_waiters_each_get_their_own_copy(cache: AsyncCache) -> None:
    factory = Factory({"a": [1]})
    factory.gate.clear()
    tasks = [asyncio.create_task(cache.get_or_set("k", factory)) for _ in range(5)]
    await until(waits_reach(cache, 4))
    factory.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), LONG)
    results[0]["a"].append(2)
    assert [r["a"] for r in results[1:]] == [[1]] * 4
    assert await cache.get("k") == {"a": [1]}


async def test_different_keys_compute_concurrently(cache: AsyncCache) -> None:
    a, b = Factory("a"), Factory("b")
    a.gate.clear()
    b.gate.clear()
    ta = asyncio.create_task(cache.get_or_set("a", a))
    tb = asyncio.create_task(cache.get_or_set("b", b))
    # Both are running at once: one key's flight never holds up another's.
    await asyncio.wait_for(asyncio.gather(a.started.wait(), b.started.wait()), LONG)
    a.gate.set()
    b.gate.set()
    assert await asyncio.wait_for(asyncio.gather(ta, tb), LONG) == ["a", "b"]


async def test_error_reaches_every_waiter_once_and_is_not_cached(cache: AsyncCache) -> None:
    error = LookupError("upstream said no")
    failing = Factory(error=error)
    failing.gate.clear()
    tasks = [asyncio.create_task(cache.get_or_set("k", failing)) for _ in range(20)]
    await until(waits_reach(cache, 19))
    failing.gate.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), LONG)
    assert all(o is error for o in outcomes)
    assert failing.calls == 1
    assert not await cache.has("k")
    working = Factory(7)
    assert await cache.get_or_set("k", working) == 7
    assert working.calls == 1


async def test_cancelled_caller_does_not_stop_the_others(cache: AsyncCache) -> None:
    factory = Factory("value")
    factory.gate.clear()
    first = asyncio.create_task(cache.get_or_set("k", factory))
    await asyncio.wait_for(factory.started.wait(), LONG)
    others = [asyncio.create_task(cache.get_or_set("k", factory)) for _ in range(5)]
    await until(waits_reach(cache, 5))
    first.cancel()
    factory.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*others), LONG) == ["value"] * 5
    assert factory.calls == 1
    assert first.cancelled()


async def test_stale_value_served_while_one_refresh_runs(cache: AsyncCache) -> None:
    await cache.set("k", "old", ttl=0, stale_ttl=30)  # expired, inside its stale window
    factory = Factory("new")
    factory.gate.clear()
    results = [await cache.get_or_set("k", factory, ttl=60, stale_ttl=30) for _ in range(10)]
    assert results == ["old"] * 10  # at once, while the refresh is held at its gate
    await asyncio.wait_for(factory.started.wait(), LONG)
    assert factory.calls == 1
    factory.gate.set()

    async def refreshed() -> bool:
        return await cache.get("k") == "new"

    await until(refreshed)
    assert await cache.get_or_set("k", factory, ttl=60) == "new"
    assert factory.calls == 1


async def test_stale_entry_past_its_window_is_a_miss(cache: AsyncCache) -> None:
    await cache.set("k", "old", ttl=0, stale_ttl=0)
    factory = Factory("new")
    assert await cache.get_or_set("k", factory) == "new"
    assert factory.calls == 1


async def test_waits_for_a_lease_held_by_another_process(cache: AsyncCache) -> None:
    factory = Factory("mine")
    assert await cache.acquire_lease("k", "another-process", 30)
    call = asyncio.create_task(cache.get_or_set("k", factory))
    await until(waits_reach(cache, 1))  # it noticed the lease and waits for the value
    await cache.set("k", "theirs")
    assert await asyncio.wait_for(call, LONG) == "theirs"
    assert factory.calls == 0


async def test_gives_up_waiting_after_lock_timeout(cache: AsyncCache) -> None:
    factory = Factory("mine")
    assert await cache.acquire_lease("k", "a-hung-process", 30)
    assert await asyncio.wait_for(cache.get_or_set("k", factory, lock_timeout=0.3), LONG) == (
        "mine"
    )
    assert factory.calls == 1
    assert await cache.get("k") == "mine"


async def test_lock_timeout_must_be_finite_and_positive(cache: AsyncCache) -> None:
    factory = Factory()
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigurationError, match="lock_timeout"):
            await cache.get_or_set("k", factory, lock_timeout=bad)
    assert factory.calls == 0


@pytest.mark.parametrize(
    ("option", "error"),
    [
        ({"ttl": -1}, ConfigurationError),
        ({"ttl": float("nan")}, ConfigurationError),
        ({"ttl": "10"}, ConfigurationError),
        ({"stale_ttl": -1}, ConfigurationError),
        ({"stale_ttl": float("inf")}, ConfigurationError),
        ({"tag": 5}, TypeError),
    ],
)
async def test_bad_options_raise_before_the_factory_runs_on_a_miss_and_on_a_hit(
    cache: AsyncCache, option: dict[str, Any], error: type[Exception]
) -> None:
    """A factory's side effects (a paid API call, an e-mail) must not happen for a value
    that is then refused; and a bad call is bad whether or not the key is stored."""
    factory = Factory()
    with pytest.raises(error):
        await cache.get_or_set("missing", factory, **option)
    assert factory.calls == 0
    assert await cache.get("missing", "absent") == "absent"
    await cache.set("stored", 1)
    with pytest.raises(error):
        await cache.get_or_set("stored", factory, **option)


class Point(msgspec.Struct):
    x: int
    y: int


async def test_type_decodes_a_hit_into_what_the_factory_returned(cache: AsyncCache) -> None:
    factory = Factory(Point(1, 2))
    first = await cache.get_or_set("p", factory, type=Point)
    second = await cache.get_or_set("p", factory, type=Point)
    assert first == second == Point(1, 2)
    assert type(second) is Point
    assert factory.calls == 1
    assert await cache.get_or_set("p", factory) == {"x": 1, "y": 2}  # without type=: a dict
    with pytest.raises(TypeError):
        await cache.get_or_set("p", factory, type=5)  # type: ignore[call-overload]


async def test_a_stored_value_that_no_longer_fits_type_is_computed_again(
    cache: AsyncCache,
) -> None:
    await cache.set("p", {"x": "not an int"})
    factory = Factory(Point(3, 4))
    assert await cache.get_or_set("p", factory, type=Point) == Point(3, 4)
    assert factory.calls == 1
    assert await cache.get("p", type=Point) == Point(3, 4)


async def test_incr_during_a_computation_is_not_overwritten_by_its_result(
    cache: AsyncCache,
) -> None:
    """Like set, add, delete and pop: a write that lands while the key is being computed
    wins over the computation's late result."""
    factory = Factory("computed")
    factory.gate.clear()
    call = asyncio.create_task(cache.get_or_set("k", factory))
    await asyncio.wait_for(factory.started.wait(), LONG)
    assert await cache.incr("k", 5) == 5
    factory.gate.set()
    assert await asyncio.wait_for(call, LONG) == "computed"  # the caller gets its result
    assert await cache.get("k") == 5


async def test_expire_keeps_an_entry_inside_its_stale_window(cache: AsyncCache) -> None:
    """A cron job's expire() must not end stale-while-revalidate: the stale entry is
    still served at once while one refresh runs."""
    await cache.set("k", "old", ttl=0.05, stale_ttl=30)
    await cache.set("kept", "y", ttl=0.05, stale_ttl=30)
    await cache.set("gone", "x", ttl=0.05)
    await asyncio.sleep(0.1)
    assert await cache.expire() == 1  # "gone" only
    assert (await cache.get_entry("kept")) is not None
    factory = Factory("new")
    factory.gate.clear()
    assert await cache.get_or_set("k", factory, ttl=60, stale_ttl=30) == "old"
    factory.gate.set()


async def test_bad_key_raises_before_the_factory_runs(cache: AsyncCache) -> None:
    factory = Factory()
    with pytest.raises(TypeError, match="key"):
        await cache.get_or_set(["not", "a", "key"], factory)  # type: ignore[arg-type]
    assert factory.calls == 0


async def test_cache_failures_raise_unlike_acached(tmp_path: Path) -> None:
    cache = AsyncCache(tmp_path)
    await cache.aclose()
    factory = Factory()
    with pytest.raises(CacheClosedError):
        await cache.get_or_set("k", factory)
    assert factory.calls == 0


async def test_locked_shard_raises_cache_timeout_within_lock_timeout(tmp_path: Path) -> None:
    async with AsyncCache(tmp_path, shards=1) as cache:
        await cache.set("warm", 1)
        blocker = sqlite3.connect(tmp_path / "shard-000.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        factory = Factory()
        try:
            with pytest.raises(CacheTimeoutError) as info:
                await asyncio.wait_for(cache.get_or_set("k", factory, lock_timeout=0.3), LONG)
            assert isinstance(info.value, TimeoutError)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert factory.calls == 0
