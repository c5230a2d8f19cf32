"""The in-process sections: ``core``, ``durability``, ``memo`` and ``scale``.

Each section runs ``reps`` repetitions; each repetition runs every selected event loop in turn,
and every system of a (repetition, loop) block replays the same operations.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

import memo as memo_systems
import procs
import systems
from harness import (
    Config,
    close_quietly,
    discard,
    measure,
    measure_systems,
    populate,
    progress,
    workdir,
)
from results import Results
from workloads import System, run_on

CORE_MATRIX = [(w, c) for w in ("GET", "SET", "MIXED") for c in (1, 64)]
DURABILITY = ("shardcache-full", "diskcache-to_thread")
MEMO_KEYS = 1_000
"""Distinct arguments of the memoized function (all warmed: every timed call is a hit)."""
SCALE = ("shardcache-nonear", "sqlite3-raw")
RSS_SYSTEMS = {"shardcache-nonear": "shardcache", "sqlite3-raw": "sqlite3-raw"}
"""The peak-RSS child opens each scale directory with the default near cache."""

Block = Callable[[str, int], Coroutine[Any, Any, None]]


def _storage(cfg: Config) -> tuple[Callable[[str], System], Callable[[str], str | None]]:
    factory = functools.partial(systems.make, redis_url=cfg.redis_url)
    unavailable = functools.partial(
        systems.unavailable, redis_url=cfg.redis_url, redis_note=cfg.redis_note
    )
    return factory, unavailable


def _every_block(cfg: Config, block: Block) -> None:
    for rep in range(cfg.reps):
        for loop in cfg.loops:
            run_on(loop, block(loop, rep))


def core(cfg: Config, res: Results) -> None:
    """GET / SET / MIXED at concurrency 1 and 64 for every storage system."""
    factory, unavailable = _storage(cfg)
    _every_block(
        cfg,
        lambda loop, rep: measure_systems(
            cfg,
            res,
            section="core",
            names=systems.CORE,
            factory=factory,
            unavailable=unavailable,
            matrix=CORE_MATRIX,
            loop=loop,
            rep=rep,
            n_keys=cfg.keys,
        ),
    )


def durability(cfg: Config, res: Results) -> None:
    """SET c64 with ``durability="full"`` (an fsync per batch) against diskcache's defaults."""
    factory, unavailable = _storage(cfg)
    _every_block(
        cfg,
        lambda loop, rep: measure_systems(
            cfg,
            res,
            section="durability",
            names=DURABILITY,
            factory=factory,
            unavailable=unavailable,
            matrix=[("SET", 64)],
            loop=loop,
            rep=rep,
            n_keys=cfg.keys,
        ),
    )


def memo(cfg: Config, res: Results) -> None:
    """Memoization hits at concurrency 1 (``HIT`` rows)."""
    _every_block(
        cfg,
        lambda loop, rep: measure_systems(
            cfg,
            res,
            section="memo",
            names=memo_systems.MEMO,
            factory=memo_systems.make,
            unavailable=memo_systems.unavailable,
            matrix=[("GET", 1)],
            loop=loop,
            rep=rep,
            n_keys=MEMO_KEYS,
            label=lambda _: "HIT",
        ),
    )


# -- scale -----------------------------------------------------------------------------------


def scale_sizes(cfg: Config) -> list[int]:
    return [10_000, 100_000] if cfg.quick else [10_000, 100_000, 1_000_000]


def size_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1_000}k"


async def _fill(cfg: Config, system: System, directory: str, n_keys: int) -> float:
    await system.setup(directory)
    try:
        return await populate(system, n_keys, cfg)
    finally:
        await system.close()


def _fill_all(cfg: Config, res: Results) -> dict[tuple[str, int], tuple[str, float]]:
    """Populate one directory per (system, size) once; reused by every repetition."""
    factory, unavailable = _storage(cfg)
    dirs: dict[tuple[str, int], tuple[str, float]] = {}
    for name in SCALE:
        reason = unavailable(name)
        if reason is not None:
            res.skip("scale", name, reason)
            continue
        for n in scale_sizes(cfg):
            directory = workdir(cfg, "scale", name, size_label(n))
            try:
                seconds = run_on("asyncio", _fill(cfg, factory(name), directory, n))
            except Exception as exc:
                res.skip("scale", name, f"populating {n:,} entries failed: {exc!r}")
                progress(f"[scale] {name}: populating {n:,} FAILED: {exc!r}")
                discard(directory)
                break
            progress(f"[scale] {name}: populated {n:,} entries in {seconds:.1f}s")
            dirs[(name, n)] = (directory, seconds)
    return dirs


async def _scale_block(
    cfg: Config,
    res: Results,
    dirs: dict[tuple[str, int], tuple[str, float]],
    loop: str,
    rep: int,
) -> None:
    factory, _ = _storage(cfg)
    for (name, n), (directory, fill_seconds) in dirs.items():
        system = factory(name)
        try:
            await system.setup(directory)
        except Exception as exc:
            res.skip("scale", name, f"open failed: {exc!r}")
            continue
        try:
            row = await measure(
                cfg,
                res,
                system,
                section="scale",
                workload="GET",
                concurrency=1,
                loop=loop,
                rep=rep,
                n_keys=n,
                label=f"GET@{size_label(n)}",
            )
            row.metrics |= {"entries": float(n), "populate_s": fill_seconds}
        except Exception as exc:
            res.skip("scale", name, f"GET@{size_label(n)} failed: {exc!r}")
        finally:
            await close_quietly(res, "scale", system)


def scale(cfg: Config, res: Results) -> None:
    """GET c1 latency at each size with the near cache off; peak RSS at the largest size."""
    dirs = _fill_all(cfg, res)
    try:
        for rep in range(cfg.reps):
            for loop in cfg.loops:
                run_on(loop, _scale_block(cfg, res, dirs, loop, rep))
                for name, rss_system in RSS_SYSTEMS.items():
                    sizes = [n for (s, n) in dirs if s == name]
                    if sizes:
                        n = max(sizes)
                        label = f"RSS@{size_label(n)}"
                        procs.rss(cfg, res, rss_system, dirs[(name, n)][0], n, loop, rep, label)
    finally:
        for directory, _ in dirs.values():
            discard(directory)
