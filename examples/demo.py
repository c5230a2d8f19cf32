"""The main job in one minute: a persistent async cache and a memoized slow coroutine.

Run with ``make demo``. Uses the default cache directory ($SHARDCACHE_DIR or the platform
user cache dir + shardcache/default); pass a directory as the first argument to use another.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from shardcache import AsyncCache, acached

cache = AsyncCache(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] != "--child" else None)


@acached(cache, ttl=600, version=1)
async def slow_square(x: int) -> dict[str, int]:
    """Pretend to be an LLM call or a slow query: half a second of 'work'."""
    await asyncio.sleep(0.5)
    return {"x": x, "square": x * x}


async def timed(label: str, coro: object) -> object:
    start = time.perf_counter()
    result = await coro  # type: ignore[misc]
    print(f"  {label:<38} {(time.perf_counter() - start) * 1e3:8.2f} ms  -> {result!r}")
    return result


async def child() -> None:
    async with cache:
        await timed("second process, same call", slow_square(7))


async def main() -> None:
    async with cache:
        print(f"cache directory: {cache.directory}")
        await cache.stats(reset=True)  # counters survive reopening: count this run's only
        print("1. the core API")
        await cache.set("greeting", {"hello": "world", "n": (1, 2, 3)}, ttl=60)
        await timed("get('greeting')", cache.get("greeting"))
        print(f"  ttl left: {await cache.ttl('greeting'):.1f} s")
        n = 20_000
        start = time.perf_counter()
        await cache.set_many({f"user:{i}": {"id": i, "name": f"user {i}"} for i in range(n)})
        print(f"  set_many of {n} entries: {(time.perf_counter() - start) * 1e3:.0f} ms")
        for label in ("from SQLite", "again, from the near cache"):
            start = time.perf_counter()
            for i in range(n):
                await cache.get(f"user:{i}")
            elapsed = time.perf_counter() - start
            print(
                f"  {n} sequential gets {label}: {n / elapsed:,.0f} gets/s "
                f"({elapsed / n * 1e6:.1f} us each)"
            )
        start = time.perf_counter()
        await asyncio.gather(*(cache.set(f"user:{i}", {"id": i}, ttl=300) for i in range(n)))
        elapsed = time.perf_counter() - start
        print(f"  {n} concurrent sets: {n / elapsed:,.0f} sets/s (batched group commits)")

        print("2. @acached on a slow coroutine")
        await slow_square.invalidate(7)
        await timed("cold call (computes)", slow_square(7))
        await timed("warm call (cache hit)", slow_square(7))
        start = time.perf_counter()
        await slow_square.invalidate(8)
        results = await asyncio.gather(*(slow_square(8) for _ in range(100)))
        print(
            f"  100 concurrent cold callers: {(time.perf_counter() - start) * 1e3:.0f} ms, "
            f"one computation, {len(results)} results"
        )
        stats = await cache.stats()
        print(f"  stats: hits={stats.hits} misses={stats.misses} waits={stats.stampede_waits}")
    print("3. another process, same directory")
    subprocess.run([sys.executable, __file__, "--child", *sys.argv[1:2]], check=True, timeout=60)


if __name__ == "__main__":
    if "--child" in sys.argv:
        if len(sys.argv) > 2:
            cache = AsyncCache(sys.argv[2])
            slow_square = acached(cache, ttl=600, version=1)(slow_square.__wrapped__)
        asyncio.run(child())
    else:
        asyncio.run(main())
