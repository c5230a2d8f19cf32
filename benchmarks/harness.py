"""What every section shares: the run configuration, progress lines, directories, and
``measure`` — warm up, drive the timing loop once, record one row."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import math
import os
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from results import Results, Row
from workloads import (
    WORKLOADS,
    AsyncSystem,
    Deadline,
    Op,
    SyncSystem,
    System,
    build_plans,
    chunks,
    key,
    run,
)

POPULATE_CHUNK = 10_000


@dataclass(frozen=True)
class Config:
    quick: bool
    reps: int
    loops: tuple[str, ...]
    seconds: float
    """Time cap of one measurement."""
    ops: int
    """Operation cap of one measurement (all tasks together)."""
    tmp: str
    keys: int = 10_000
    warmup_ops: int = 2_000
    warmup_seconds: float = 0.25
    populate_seconds: float = 300.0
    """Cap on pre-populating one directory (1M entries in the scale section)."""
    redis_url: str | None = None
    redis_note: str = ""

    @classmethod
    def for_mode(
        cls,
        *,
        quick: bool,
        reps: int | None,
        loops: tuple[str, ...],
        tmp: str,
        seconds: float | None = None,
        ops: int | None = None,
    ) -> Config:
        """Quick: 0.5 s / 100k ops per measurement, 1 rep; full: 2 s / 300k ops, 3 reps."""
        return cls(
            quick=quick,
            reps=reps or (1 if quick else 3),
            loops=loops,
            tmp=tmp,
            seconds=seconds or (0.5 if quick else 2.0),
            ops=ops or (100_000 if quick else 300_000),
            populate_seconds=60.0 if quick else 300.0,
        )


_STARTED = time.perf_counter()


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


def workdir(cfg: Config, *parts: object) -> str:
    """A fresh, empty directory under the run's temporary root."""
    path = os.path.join(cfg.tmp, "-".join(str(p) for p in parts))
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def discard(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def fmt_us(us: float) -> str:
    return "-" if math.isnan(us) else (f"{us:.1f}" if us < 100 else f"{us:,.0f}")


def describe(row: Row, reps: int) -> str:
    m = defaultdict(lambda: math.nan, row.metrics)
    where = f"[{row.section} rep {row.rep + 1}/{reps} {row.loop}]"
    text = f"{where} {row.system} {row.workload} c{row.concurrency}: {m['ops_per_s']:,.0f} ops/s"
    if "p50_us" in row.metrics:
        text += f" p50 {fmt_us(m['p50_us'])}us p99 {fmt_us(m['p99_us'])}us"
        text += f" p99.9 {fmt_us(m['p999_us'])}us"
    text += f" ({m['ops']:,.0f} ops in {m['seconds']:.2f}s)"
    bad = {k: int(m[k]) for k in ("misses", "failed_writes", "errors") if m.get(k)}
    return text + (f" {bad} {row.note}" if bad else "")


async def populate(system: System, n_keys: int, cfg: Config) -> float:
    """Pre-populate ``user:0..n_keys-1`` in chunks (bulk paths), bounded by ``populate_seconds``."""
    started = time.perf_counter()
    for pairs in chunks(n_keys, POPULATE_CHUNK):
        await system.populate(pairs, 3600.0)
        if time.perf_counter() - started > cfg.populate_seconds:
            raise TimeoutError(f"populating {n_keys:,} keys took over {cfg.populate_seconds}s")
    return time.perf_counter() - started


@contextlib.contextmanager
def frozen_gc() -> Iterator[None]:
    """Plans are up to millions of objects: keep them out of the collector's sight while
    timing, so that a GC pause in the timed loop is the system's own garbage."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def read_every_key(system: System, n_keys: int, cfg: Config) -> None:
    """Read each key once (not timed), so every system starts the GETs in its steady state:
    page caches filled, shardcache's near cache populated. Bounded by ``populate_seconds``."""
    width = 1 if system.is_sync else 64
    plans: list[list[Op]] = [
        [(key(i), None) for i in range(t, n_keys, width)] for t in range(width)
    ]
    await run(system, plans, Deadline(cfg.populate_seconds))


@functools.lru_cache(maxsize=12)  # the warm-up and timed plans of one block
def _plans(n_keys: int, n_ops: int, concurrency: int, workload: str, seed: int) -> list[list[Op]]:
    # Every system of a repetition replays the same operations, so build them once.
    w = WORKLOADS[workload]
    return build_plans(
        n_keys=n_keys,
        n_ops=n_ops,
        concurrency=concurrency,
        write_fraction=w.write_fraction,
        seed=seed,
    )


async def measure(
    cfg: Config,
    res: Results,
    system: System,
    *,
    section: str,
    workload: str,
    concurrency: int,
    loop: str,
    rep: int,
    n_keys: int,
    label: str | None = None,
    pace: bool = False,
) -> Row:
    """Warm up, then one bounded measurement of ``workload`` at ``concurrency``; recorded."""
    seed = rep * 1_000 + concurrency * 10 + list(WORKLOADS).index(workload)
    warm = _plans(n_keys, min(cfg.warmup_ops, cfg.ops), concurrency, workload, seed + 500)
    await run(system, warm, Deadline(cfg.warmup_seconds), pace=pace)
    plans = _plans(n_keys, cfg.ops, concurrency, workload, seed)
    before = system.hidden_misses()
    # A hung system must not hang the run: the deadline ends a healthy one long before this.
    with frozen_gc():
        stats = await asyncio.wait_for(
            run(system, plans, Deadline(cfg.seconds), pace=pace), timeout=cfg.seconds * 5 + 30
        )
    metrics = stats.metrics()
    metrics["misses"] += system.hidden_misses() - before
    row = Row(section, system.name, label or workload, concurrency, loop, rep, metrics)
    row.note = stats.first_error
    res.add(row)
    progress(describe(row, cfg.reps))
    return row


async def measure_systems(
    cfg: Config,
    res: Results,
    *,
    section: str,
    names: Sequence[str],
    factory: Callable[[str], System],
    unavailable: Callable[[str], str | None],
    matrix: Sequence[tuple[str, int]],
    loop: str,
    rep: int,
    n_keys: int,
    label: Callable[[str], str] = str,
) -> None:
    """For each system: open a fresh directory, populate, measure every (workload,
    concurrency) of ``matrix`` (concurrency 1 only for single-thread systems), close."""
    for name in names:
        reason = unavailable(name)
        if reason is not None:
            res.skip(section, name, reason)
            continue
        directory = workdir(cfg, section, name, loop, rep)
        system = factory(name)
        opened = False
        try:
            await system.setup(directory)
            opened = True
            await populate(system, n_keys, cfg)
            await read_every_key(system, n_keys, cfg)
            for workload, concurrency in matrix:
                if system.is_sync and concurrency > 1:
                    continue
                await measure(
                    cfg,
                    res,
                    system,
                    section=section,
                    workload=workload,
                    concurrency=concurrency,
                    loop=loop,
                    rep=rep,
                    n_keys=n_keys,
                    label=label(workload),
                )
        except Exception as exc:  # one broken system must not end the run; it is reported
            res.skip(section, name, f"{loop}, rep {rep + 1}: failed: {exc!r}")
            progress(f"[{section} {loop}] {name} FAILED: {exc!r}")
        finally:
            if opened:
                await close_quietly(res, section, system)
            discard(directory)


async def close_quietly(res: Results, section: str, system: System) -> None:
    try:
        await asyncio.wait_for(system.close(), timeout=60)
    except Exception as exc:
        res.skip(section, system.name, f"close failed: {exc!r}")


async def read(system: System, k: str) -> object:
    """One get outside the timing loop (verification), whatever the system's kind."""
    if isinstance(system, AsyncSystem):
        return await system.get(k)
    if isinstance(system, SyncSystem):
        return system.get(k)
    raise TypeError(f"not a system: {system!r}")
