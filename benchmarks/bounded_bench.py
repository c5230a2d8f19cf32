"""What a size limit costs: the two claims of issue #3, measured in one run, as ratios.

    python benchmarks/bounded_bench.py [--quick] [--slice S] [--rounds N]
                                       [--loop asyncio|uvloop] [--tmpdir DIR]

1. *Reads stay reads.* GET throughput at concurrency 1 and 64 with ``near_cache=0`` (every
   get reaches SQLite on the loop thread) under ``least-recently-used``, which books every
   hit, against ``least-recently-stored``, which books nothing. Target: LRS/LRU <= 1.3x.
2. *Culling is amortized and flat.* SET throughput of new keys into caches full to their
   ``size_limit`` (so every write batch culls) holding 10k, 100k and 1M entries (quick: 10k
   and 100k). Target: the largest keeps >= 0.7x of the 10k rate. For scale, the same writes
   into a cache without a limit (10k entries, nothing culled).

The machines we run on are small and shared, and their speed drifts within seconds. So every
cache compared is open at once in one event loop and measured in short alternating slices
(the order rotating each round); a ratio is the median of the per-round ratios, a rate the
median of the slices. Each slice stops at its time cap, populating at its own cap: the run
is bounded (quick: about 20 s; full: a few minutes, most of it writing the 1M entries).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from shardcache import AsyncCache

LRS = "least-recently-stored"
LRU = "least-recently-used"
READ_KEYS = 10_000
CHECK_EVERY = 16  # operations of one task between two looks at the clock
POPULATE_CHUNK = 10_000
WARMUP = 1.2  # seconds per cache: past the 1 s offload window a cold first read may open

Op = Callable[[int, int], Awaitable[Any]]


def value(i: int) -> dict[str, Any]:
    """A ~200-byte record (msgpack), the size of a typical cached row."""
    return {
        "id": i,
        "name": f"User {i}",
        "email": f"user{i}@example.com",
        "tags": ["python", "asyncio", "sqlite"],
        "score": i * 0.37,
        "bio": f"Likes caching, SQLite and asyncio; user number {i}".ljust(80, "."),
    }


@dataclass(frozen=True)
class Config:
    quick: bool
    slice: float
    rounds: int
    populate_seconds: float
    sizes: tuple[int, ...]
    loop: str
    tmp: str


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def run(cfg: Config, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    if cfg.loop == "uvloop":
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


async def rate(op: Op, concurrency: int, seconds: float) -> float:
    """Operations per second of ``op(task, n)`` run by ``concurrency`` tasks for ``seconds``."""
    done = [0] * concurrency
    start = time.perf_counter()
    deadline = start + seconds

    async def task(t: int) -> None:
        n = 0
        while True:
            for _ in range(CHECK_EVERY):
                await op(t, n)
                n += 1
            if time.perf_counter() > deadline:
                break
        done[t] = n

    await asyncio.gather(*(task(t) for t in range(concurrency)))
    return sum(done) / (time.perf_counter() - start)


@dataclass
class Slices:
    """Rates of alternating slices: ``rates[name][concurrency]`` lists one per round."""

    rates: dict[str, dict[int, list[float]]] = field(default_factory=dict)

    def add(self, name: str, concurrency: int, ops: float) -> None:
        self.rates.setdefault(name, {}).setdefault(concurrency, []).append(ops)

    def median(self, name: str, concurrency: int) -> float:
        return statistics.median(self.rates[name][concurrency])

    def best(self, name: str, concurrency: int) -> float:
        return max(self.rates[name][concurrency])

    def ratio(self, a: str, b: str, concurrency: int) -> float:
        """Median over rounds of rate(a) / rate(b), each pair measured back to back."""
        pairs = zip(self.rates[a][concurrency], self.rates[b][concurrency], strict=True)
        return statistics.median(x / y for x, y in pairs)


async def alternate(cfg: Config, ops: dict[str, Op], what: str) -> Slices:
    """Warm every op up, then measure them in rotating order, round after round."""
    slices = Slices()
    names = list(ops)
    for name in names:
        await rate(ops[name], 64, WARMUP)
    for r in range(cfg.rounds):
        for concurrency in (1, 64):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                slices.add(name, concurrency, await rate(ops[name], concurrency, cfg.slice))
        if r % 5 == 4 or r == cfg.rounds - 1:
            progress(f"{what}: round {r + 1}/{cfg.rounds}")
    return slices


# -- 1. reads under LRU vs LRS ---------------------------------------------------------------
def bench_reads(cfg: Config) -> Slices:
    async def main() -> Slices:
        caches = {
            policy: AsyncCache(
                os.path.join(cfg.tmp, f"reads-{policy}"), eviction=policy, near_cache=0
            )
            for policy in (LRS, LRU)
        }
        try:
            for cache in caches.values():
                await cache.set_many({f"user:{i}": value(i) for i in range(READ_KEYS)})
            rng = random.Random(1)
            keys = [[f"user:{rng.randrange(READ_KEYS)}" for _ in range(4096)] for _ in range(64)]

            def getter(cache: AsyncCache) -> Op:
                async def get(t: int, n: int) -> None:
                    if await cache.get(keys[t][n % 4096]) is None:
                        raise AssertionError("a populated key read as a miss")

                return get

            return await alternate(cfg, {p: getter(c) for p, c in caches.items()}, "GET")
        finally:
            for cache in caches.values():
                await cache.aclose()

    return run(cfg, main)


# -- 2. SET while over the limit, as the cache grows -----------------------------------------
NO_LIMIT = "no limit"


@dataclass
class Filled:
    directory: str
    entries: int
    volume: int


def populate(cfg: Config, name: str, size: int) -> Filled | None:
    directory = os.path.join(cfg.tmp, name)

    async def main() -> tuple[int, int]:
        async with AsyncCache(directory, size_limit=None, near_cache=0) as cache:
            deadline = time.perf_counter() + cfg.populate_seconds
            stored = 0
            while stored < size and time.perf_counter() < deadline:
                stop = min(size, stored + POPULATE_CHUNK)
                await cache.set_many({("old", i): value(i) for i in range(stored, stop)})
                stored = stop
            return stored, await cache.volume()

    started = time.perf_counter()
    stored, volume = run(cfg, main)
    took = time.perf_counter() - started
    progress(f"{name}: {stored:,} entries ({volume / 2**20:.0f} MiB) written in {took:.1f}s")
    if stored < size:
        progress(f"{name}: not full after {cfg.populate_seconds}s, left out")
        return None
    return Filled(directory, stored, volume)


@dataclass
class CullRun:
    slices: Slices
    filled: dict[str, Filled]
    evictions: dict[str, int]
    over: dict[str, int]  # largest volume seen above the limit, in bytes


def bench_cull(cfg: Config) -> CullRun:
    filled = {
        f"{size:,}": f
        for size in cfg.sizes
        if (f := populate(cfg, f"cull-{size}", size)) is not None
    }
    free = populate(cfg, "no-limit", cfg.sizes[0])
    assert free is not None

    async def main() -> CullRun:
        # Each full cache's limit is its populated volume: from the first write on, every
        # write batch pushes a shard over its share and culls in the same transaction.
        caches = {
            name: AsyncCache(f.directory, size_limit=f.volume, near_cache=0)
            for name, f in filled.items()
        }
        caches[NO_LIMIT] = AsyncCache(free.directory, size_limit=None, near_cache=0)
        counter = iter(range(10**12))
        over = dict.fromkeys(caches, 0)

        def putter(name: str) -> Op:
            cache = caches[name]

            async def put(t: int, n: int) -> None:
                i = next(counter)
                await cache.set(("new", i), value(i))

            return put

        try:
            slices = await alternate(cfg, {name: putter(name) for name in caches}, "SET")
            evictions = {}
            for name, cache in caches.items():
                stats = await cache.stats()
                evictions[name] = stats.evictions
                if name != NO_LIMIT:
                    over[name] = stats.volume - filled[name].volume
        finally:
            for cache in caches.values():
                await cache.aclose()
        return CullRun(slices, filled, evictions, over)

    return run(cfg, main)


# -- report ----------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def report(cfg: Config, reads: Slices, cull: CullRun, took: float, load: str) -> None:
    print(
        f"bounded_bench{' --quick' if cfg.quick else ''}: {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, loop {cfg.loop}; {cfg.rounds} rounds of "
        f"{cfg.slice}s slices; {took:.0f}s in all; load average {load}"
    )
    print()
    print(f"1. Reads stay reads: GET, near_cache=0, {READ_KEYS:,} keys (target LRS/LRU <= 1.3x)")
    print(
        f"   {'':<5} {'LRS /s':>10} {'LRU /s':>10} {'LRS/LRU':>8}        "
        f"{'best LRS':>10} {'best LRU':>10} {'ratio':>7}"
    )
    for c in (1, 64):
        ratio = reads.ratio(LRS, LRU, c)
        best = reads.best(LRS, c) / reads.best(LRU, c)
        print(
            f"   c{c:<4} {reads.median(LRS, c):>10,.0f} {reads.median(LRU, c):>10,.0f} "
            f"{ratio:>7.2f}x {verdict(ratio <= 1.3):<6} "
            f"{reads.best(LRS, c):>10,.0f} {reads.best(LRU, c):>10,.0f} {best:>6.2f}x "
            f"{verdict(best <= 1.3)}"
        )
    print(
        "   (medians of the slices, ratio = median of back-to-back pairs; 'best' = fastest "
        "slice, the least disturbed by other load)"
    )
    print()
    s = cull.slices
    names = list(cull.filled)
    print("2. Cull cost: SET of new keys into caches full to their size_limit")
    print(
        f"   {'entries':>10} {'limit MiB':>10} {'SET c1 /s':>10} {'SET c64 /s':>11} "
        f"{'vs ' + names[0] + ' c1/c64':>20} {'evicted':>9} {'over limit':>11}"
    )
    for name in names:
        f = cull.filled[name]
        r1, r64 = s.ratio(name, names[0], 1), s.ratio(name, names[0], 64)
        print(
            f"   {name:>10} {f.volume / 2**20:>10.1f} {s.median(name, 1):>10,.0f} "
            f"{s.median(name, 64):>11,.0f} {f'{r1:.2f}x / {r64:.2f}x':>20} "
            f"{cull.evictions[name]:>9,} {max(0, cull.over[name]):>10,}B"
        )
    print(
        f"   {NO_LIMIT:>10} {'-':>10} {s.median(NO_LIMIT, 1):>10,.0f} "
        f"{s.median(NO_LIMIT, 64):>11,.0f}   ({names[0]} entries, nothing culled)"
    )
    first = names[0]
    print(
        f"   culling at {first}: {s.ratio(first, NO_LIMIT, 1):.2f}x (c1) and "
        f"{s.ratio(first, NO_LIMIT, 64):.2f}x (c64) of the SET rate without a limit"
    )
    if len(names) > 1:
        worst = min(s.ratio(names[-1], first, c) for c in (1, 64))
        print(
            f"   {names[-1]} vs {first} entries: worst {worst:.2f}x   target >= 0.7x   "
            f"{verdict(worst >= 0.7)}"
        )


def _load() -> str:
    """The 1-minute load average: on a shared machine, what else was running."""
    with contextlib.suppress(OSError, AttributeError):
        return f"{os.getloadavg()[0]:.1f}"
    return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="10k and 100k only, short runs")
    parser.add_argument("--slice", type=float, help="seconds of one measured slice")
    parser.add_argument("--rounds", type=int, help="rounds of alternating slices")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--tmpdir", help="where the cache directories go (removed at the end)")
    args = parser.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="bounded-bench-", dir=args.tmpdir)
    cfg = Config(
        quick=args.quick,
        slice=args.slice or (0.1 if args.quick else 0.25),
        rounds=args.rounds or (12 if args.quick else 24),
        populate_seconds=60.0 if args.quick else 300.0,
        sizes=(10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000),
        loop=args.loop,
        tmp=tmp,
    )
    began = time.perf_counter()
    load_before = _load()
    try:
        reads = bench_reads(cfg)
        cull = bench_cull(cfg)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(cfg, reads, cull, time.perf_counter() - began, f"{load_before} -> {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
