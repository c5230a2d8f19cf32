"""Cancellation storms: a cancelled operation happened entirely or not at all, and the
cache keeps serving afterwards (no wedged writer, no leaked queue entries, no bad files).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest

from shardcache import AsyncCache

MISSING = "<missing>"
BOUND = 30.0


class Storm:
    """1,000 concurrent operations with known expected outcomes, a random third cancelled."""

    def __init__(self, cache: AsyncCache, seed: int) -> None:
        self.cache = cache
        self.rng = random.Random(seed)
        self.tasks: list[tuple[str, Any, Any, asyncio.Task[Any]]] = []  # kind, key, value

    def launch(self, count: int) -> None:
        cache = self.cache
        for i in range(count):
            kind = self.rng.choice(["get", "get", "set", "set", "big", "get_many", "incr", "add"])
            value: Any = None
            if kind == "get":
                key = ("p", self.rng.randrange(200))
                coro = cache.get(key, MISSING)
            elif kind == "get_many":
                key = [("p", self.rng.randrange(200)) for _ in range(5)]
                coro = cache.get_many(key)
            elif kind == "set":
                key, value = ("s", i), ["s", i]
                coro = cache.set(key, value)
            elif kind == "big":
                key, value = ("b", i), bytes([i % 256]) * 10_000  # its own value file
                coro = cache.set(key, value)
            elif kind == "incr":
                key = "counter"
                coro = cache.incr(key)
            else:
                key, value = ("a", i % 50), i
                coro = cache.add(key, value)
            self.tasks.append((kind, key, value, asyncio.ensure_future(coro)))

    async def cancel_randomly(self) -> int:
        """Cancel about a third of the tasks, spread over the first loop iterations."""
        cancelled = 0
        for _ in range(6):
            for *_, task in self.tasks:
                if not task.done() and self.rng.random() < 0.08:
                    task.cancel()
                    cancelled += 1
            await asyncio.sleep(0)  # let some operations start, or finish, in between
        return cancelled


async def _storm(cache: AsyncCache, seed: int) -> Storm:
    await cache.set_many({("p", j): ["p", j] for j in range(200)})
    storm = Storm(cache, seed)
    storm.launch(1000)
    assert await storm.cancel_randomly() > 0
    await asyncio.wait_for(
        asyncio.gather(*(t for *_, t in storm.tasks), return_exceptions=True), BOUND
    )
    return storm


async def _verify(cache: AsyncCache, storm: Storm) -> None:
    outcome: Counter[str] = Counter()
    increments = Counter()
    adds: dict[Any, list[tuple[int, asyncio.Task[Any]]]] = {}
    for kind, key, value, task in storm.tasks:
        cancelled = task.cancelled()
        outcome["cancelled" if cancelled else "done"] += 1
        if not cancelled:
            assert task.exception() is None, (kind, key, task.exception())
        if kind == "get" and not cancelled:
            assert task.result() == ["p", key[1]]
        elif kind == "get_many" and not cancelled:
            assert task.result() == {k: ["p", k[1]] for k in key}
        elif kind in ("set", "big"):
            stored = await cache.get(key, MISSING)
            # Done: it is there. Cancelled: there entirely, or not at all.
            assert stored == value or (cancelled and stored == MISSING), (kind, key)
        elif kind == "incr":
            increments["cancelled" if cancelled else "done"] += 1
        elif kind == "add":
            adds.setdefault(key, []).append((value, task))
    assert outcome["cancelled"] > 0 and outcome["done"] > 0
    counter = await cache.get("counter", 0)
    assert increments["done"] <= counter <= increments["done"] + increments["cancelled"]
    for key, entries in adds.items():
        won = [v for v, t in entries if not t.cancelled() and t.result()]
        assert len(won) <= 1, key
        stored = await cache.get(key, MISSING)
        if won:
            assert stored == won[0]
        elif any(not t.cancelled() for _, t in entries):
            # Every add that finished lost: the winner is one that was cancelled.
            assert stored in {v for v, t in entries if t.cancelled()}
        else:
            assert stored == MISSING or stored in {v for v, _ in entries}
    # The preset entries were never touched.
    assert await cache.get_many([("p", j) for j in range(200)]) == {
        ("p", j): ["p", j] for j in range(200)
    }


async def _still_serves(cache: AsyncCache) -> None:
    await asyncio.wait_for(asyncio.gather(*(cache.set(("after", i), i) for i in range(200))), BOUND)
    assert await cache.get_many([("after", i) for i in range(200)]) == {
        ("after", i): i for i in range(200)
    }
    await asyncio.wait_for(cache.set("one more", 1), BOUND)
    assert await cache.get("one more") == 1
    stats = await cache.stats()
    assert all(depth == 0 for depth in stats.queue_depth)
    report = await cache.check()
    assert report.ok, report.problems


@pytest.mark.parametrize("seed", [1, 2])
async def test_cancellation_storm(make_cache, seed: int) -> None:
    cache = make_cache(min_file_size=4096)
    storm = await _storm(cache, seed)
    await _verify(cache, storm)
    await _still_serves(cache)
    # What the storm left is on disk, not only in this instance.
    expected = {
        key: await cache.get(key, MISSING)
        for kind, key, *_ in storm.tasks
        if kind in ("set", "big", "add")
    }
    await asyncio.wait_for(cache.aclose(), BOUND)
    reopened = make_cache(min_file_size=4096)
    for key, value in expected.items():
        assert await reopened.get(key, MISSING) == value


async def test_writes_cancelled_before_their_batch_began_are_not_written(make_cache) -> None:
    cache = make_cache()
    await cache.open()
    tasks = [asyncio.ensure_future(cache.set(("k", i), i)) for i in range(500)]
    await asyncio.sleep(0)  # one loop turn: every write is queued, none has begun
    for task in tasks[::2]:
        task.cancel()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), BOUND)
    assert all(isinstance(r, asyncio.CancelledError) for r in results[::2])
    assert all(r is None for r in results[1::2])
    stored = await cache.get_many([("k", i) for i in range(500)])
    assert stored == {("k", i): i for i in range(1, 500, 2)}
    await _still_serves(cache)


async def test_cancelling_waiters_of_get_or_set(cache: AsyncCache) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    async def factory() -> str:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return "computed"

    await cache.open()  # so that every caller joins the flight on its first step
    waiters = [asyncio.ensure_future(cache.get_or_set("k", factory)) for _ in range(50)]
    await asyncio.wait_for(started.wait(), BOUND)
    assert (await cache.stats()).stampede_waits == 49
    for waiter in waiters[:-1]:
        waiter.cancel()  # cancelling some waiters never cancels the shared computation
    release.set()
    assert await asyncio.wait_for(waiters[-1], BOUND) == "computed"
    assert calls == 1
    assert await cache.get("k") == "computed"
    assert all(w.cancelled() for w in waiters[:-1])


async def test_cancelling_every_waiter_stores_nothing_and_recovers(cache: AsyncCache) -> None:
    started = asyncio.Event()
    finished = False

    async def never_finishes() -> str:
        nonlocal finished
        started.set()
        await asyncio.Event().wait()
        finished = True
        return "never"

    async def quick() -> str:
        return "second try"

    await cache.open()  # so that every caller joins the flight on its first step
    waiters = [asyncio.ensure_future(cache.get_or_set("k", never_finishes)) for _ in range(10)]
    await asyncio.wait_for(started.wait(), BOUND)
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert not finished
    assert not await cache.has("k")
    # Nothing is left holding the key: the next caller computes at once.
    assert await asyncio.wait_for(cache.get_or_set("k", quick, lock_timeout=5), BOUND) == (
        "second try"
    )
