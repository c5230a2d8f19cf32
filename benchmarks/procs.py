"""Sections with more than one process: ``multiproc``, ``loophealth`` (one of whose scenarios,
``SET/cpu-bound-loop``, runs in this process alone), and the peak-RSS probe.

Children are ``worker.py`` processes speaking JSON lines on stdout (``ready``, ``result``,
``error``) and taking ``go`` / ``stop`` on stdin; every wait on them has a timeout and every
child is stopped by its pid, also when the parent fails or is interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import systems
from harness import (
    Config,
    close_quietly,
    describe,
    discard,
    frozen_gc,
    populate,
    progress,
    read,
    workdir,
)
from results import Results, Row
from workloads import (
    TTL,
    AsyncSystem,
    Deadline,
    RunStats,
    TaskResult,
    Value,
    build_plans,
    flat_out,
    key,
    percentiles_us,
    run,
    run_on,
    summarize,
    ticker,
    value,
)

WORKER = str(Path(__file__).with_name("worker.py"))
PROCESSES = 4
MULTIPROC = ("shardcache", "diskcache-to_thread")
LOOPHEALTH = ("shardcache", "diskcache-to_thread", "aiosqlite")
GET_SCENARIOS = ("GET/idle", "GET/writer-process", "GET/set-c64-same-loop")
CPU_BOUND = "SET/cpu-bound-loop"
SCENARIOS = (*GET_SCENARIOS, CPU_BOUND)
CPU_BOUND_ONLY = ("aiosqlite",)
"""Systems measured in ``SET/cpu-bound-loop`` alone (no writer-process mode in worker.py)."""
BUSY_TASKS = 4
BUSY_SPIN_S = 0.002
"""Each busy task spins the CPU this long, then yields once (``await asyncio.sleep(0)``)."""
WRITERS = 4
BATCH = 8
"""Keys per timed write in ``SET/cpu-bound-loop`` (one ``set_many``)."""
Batch = list[tuple[str, Value]]
START_TIMEOUT = 60.0


class Child:
    """One ``worker.py`` process; ``with Child(spec) as c: c.expect("ready")``."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, WORKER, json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        self._buf = b""

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next message, which must be ``event``; raises on error, exit or timeout."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"worker {self.proc.pid}: no {event!r} within {timeout:.0f}s")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    code = self.proc.wait()
                    raise RuntimeError(f"worker {self.proc.pid} exited ({code}) before {event!r}")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        if message.get("event") != event:
            raise RuntimeError(f"worker {self.proc.pid}: {message.get('error') or message}")
        return message

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write(command.encode() + b"\n")

    def stop(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _spec(
    cfg: Config, mode: str, system: str, directory: str, loop: str, **kw: Any
) -> dict[str, Any]:
    return {
        "mode": mode,
        "system": system,
        "dir": directory,
        "loop": loop,
        "keys": cfg.keys,
        "ops": cfg.ops,
        "seconds": cfg.seconds,
        "redis_url": cfg.redis_url,
        **kw,
    }


async def _prepare(cfg: Config, name: str, directory: str) -> None:
    system = systems.make(name, redis_url=cfg.redis_url)
    await system.setup(directory)
    try:
        await populate(system, cfg.keys, cfg)
    finally:
        await system.close()


async def _lost_writes(cfg: Config, name: str, directory: str, expected: dict[str, int]) -> int:
    """Keys whose stored ``seq`` is not the last one its writer reported."""
    system = systems.make(name, redis_url=cfg.redis_url)
    await system.setup(directory)
    try:
        lost = 0
        for k, seq in expected.items():
            v = await read(system, k)
            lost += not (isinstance(v, dict) and v.get("seq") == seq)
        return lost
    finally:
        await system.close()


# -- multiproc -------------------------------------------------------------------------------


def multiproc(cfg: Config, res: Results) -> None:
    """4 processes x MIXED c64 on one directory; aggregate ops/s; then check every last write."""
    for rep in range(cfg.reps):
        for loop in cfg.loops:
            for name in MULTIPROC:
                reason = systems.unavailable(name, redis_url=cfg.redis_url)
                if reason is not None:
                    res.skip("multiproc", name, reason)
                    continue
                directory = workdir(cfg, "multiproc", name, loop, rep)
                try:
                    res.add(_multiproc_once(cfg, name, directory, loop, rep))
                    progress(describe(res.rows[-1], cfg.reps) + _lost_note(res.rows[-1]))
                except Exception as exc:
                    res.skip("multiproc", name, f"{loop}, rep {rep + 1}: failed: {exc!r}")
                    progress(f"[multiproc {loop}] {name} FAILED: {exc!r}")
                finally:
                    discard(directory)


def _lost_note(row: Row) -> str:
    return f"; lost writes {row.metrics['lost_writes']:.0f}/{row.metrics['checked_keys']:.0f}"


def _multiproc_once(cfg: Config, name: str, directory: str, loop: str, rep: int) -> Row:
    run_on("asyncio", _prepare(cfg, name, directory))
    with contextlib.ExitStack() as stack:
        children = [
            stack.enter_context(
                Child(
                    _spec(cfg, "mixed", name, directory, loop, index=i, workers=PROCESSES, seed=rep)
                )
            )
            for i in range(PROCESSES)
        ]
        for c in children:
            c.expect("ready", START_TIMEOUT)
        for c in children:
            c.send("go")
        out = [c.expect("result", cfg.seconds * 5 + START_TIMEOUT) for c in children]
    expected = {k: v for o in out for k, v in o["expected"].items()}
    lost = run_on("asyncio", _lost_writes(cfg, name, directory, expected))
    ms = [o["metrics"] for o in out]
    ops = sum(m["ops"] for m in ms)
    seconds = (max(o["ended_ns"] for o in out) - min(o["started_ns"] for o in out)) / 1e9
    metrics = {
        "ops": ops,
        "seconds": seconds,
        "ops_per_s": ops / seconds,
        "p50_us": statistics.median(m["p50_us"] for m in ms),
        "p99_us": max(m["p99_us"] for m in ms),
        "p999_us": max(m["p999_us"] for m in ms),
        "max_us": max(m["max_us"] for m in ms),
        "process_min_ops_per_s": min(m["ops_per_s"] for m in ms),
        "process_max_ops_per_s": max(m["ops_per_s"] for m in ms),
        "lost_writes": float(lost),
        "checked_keys": float(len(expected)),
    }
    for k in ("misses", "failed_writes", "errors"):
        metrics[k] = sum(m[k] for m in ms)
    note = next((o["first_error"] for o in out if o["first_error"]), "")
    return Row("multiproc", name, "MIXED", 64, loop, rep, metrics, note)


# -- loophealth ------------------------------------------------------------------------------


def loophealth(cfg: Config, res: Results) -> None:
    """GET c1 (paced) latency and event-loop lag: idle, beside a writer process, beside a
    SET c64 load on the same loop."""
    for rep in range(cfg.reps):
        for loop in cfg.loops:
            for name in LOOPHEALTH:
                reason = systems.unavailable(name, redis_url=cfg.redis_url)
                if reason is not None:
                    res.skip("loophealth", name, reason)
                    continue
                directory = workdir(cfg, "loophealth", name, loop, rep)
                try:
                    run_on("asyncio", _prepare(cfg, name, directory))
                    for scenario in (CPU_BOUND,) if name in CPU_BOUND_ONLY else SCENARIOS:
                        try:
                            row = _loophealth_once(cfg, res, name, directory, loop, rep, scenario)
                        except Exception as exc:
                            where = f"{scenario} ({loop}, rep {rep + 1})"
                            res.skip("loophealth", name, f"{where} failed: {exc!r}")
                            progress(f"[loophealth {loop}] {name} {scenario} FAILED: {exc!r}")
                            continue
                        res.add(row)
                        progress(describe(row, cfg.reps) + _lag_note(row) + _busy_note(row))
                except Exception as exc:
                    res.skip("loophealth", name, f"{loop}, rep {rep + 1}: failed: {exc!r}")
                    progress(f"[loophealth {loop}] {name} FAILED: {exc!r}")
                finally:
                    discard(directory)


def _lag_note(row: Row) -> str:
    m = row.metrics
    return f"; max {m['max_us']:,.0f}us; loop lag p99.9 {m['lag_p999_us']:,.0f}us max {m['lag_max_us']:,.0f}us"


def _busy_note(row: Row) -> str:
    m = row.metrics
    if "busy_share" not in m:
        return ""
    return f"; {BATCH}-key writes; busy tasks {m['load_ops_per_s']:,.0f} spins/s ({m['busy_share']:.0%} of the loop)"


def _loophealth_once(
    cfg: Config, res: Results, name: str, directory: str, loop: str, rep: int, scenario: str
) -> Row:
    if scenario == CPU_BOUND:
        metrics = run_on(loop, _cpu_bound(cfg, res, name, directory, rep))
        return Row("loophealth", name, scenario, WRITERS, loop, rep, metrics)
    if scenario != "GET/writer-process":
        metrics = run_on(loop, _probe(cfg, res, name, directory, scenario, rep))
        return Row("loophealth", name, scenario, 1, loop, rep, metrics)
    spec = _spec(cfg, "writer", name, directory, loop, seconds=cfg.seconds * 4 + 30, seed=rep)
    with Child(spec) as writer:
        writer.expect("ready", START_TIMEOUT)
        writer.send("go")
        metrics = run_on(loop, _probe(cfg, res, name, directory, scenario, rep))
        writer.send("stop")
        load = writer.expect("result", START_TIMEOUT)["metrics"]
    metrics["load_ops_per_s"] = load["ops_per_s"]
    metrics["load_failed_writes"] = load["failed_writes"]
    return Row("loophealth", name, scenario, 1, loop, rep, metrics)


async def _probe(
    cfg: Config, res: Results, name: str, directory: str, scenario: str, rep: int
) -> dict[str, float]:
    """GET c1, yielding to the loop between gets like a handler would, beside a 1 ms ticker
    (and a SET c64 load in the same loop for that scenario)."""
    system = systems.make(name, redis_url=cfg.redis_url)
    await system.setup(directory)
    try:
        plan = functools.partial(build_plans, n_keys=cfg.keys, seed=rep * 7 + 3)
        # 3x the usual operation cap: the time cap should end this one, the tail is the point.
        gets = plan(n_ops=cfg.ops * 3, concurrency=1, write_fraction=0.0)
        sets = plan(n_ops=20_000, concurrency=64, write_fraction=1.0)
        await run(system, gets, Deadline(cfg.warmup_seconds), pace=True)
        load: asyncio.Future[tuple[int, int]] | None = None
        with frozen_gc():
            deadline = Deadline(cfg.seconds)
            lag = asyncio.ensure_future(ticker(deadline))
            if scenario == "GET/set-c64-same-loop":
                load = asyncio.ensure_future(flat_out(system, sets, deadline))
            stats = await run(system, gets, deadline, pace=True)
            deadline.stop()
            lags = await lag
            load_ops, load_failed = await load if load is not None else (0, 0)
        metrics = stats.metrics()
        if load is not None:
            metrics |= {
                "load_ops_per_s": load_ops / stats.seconds,
                "load_failed_writes": load_failed,
            }
        p50, p99, p999, mx = percentiles_us(lags)
        metrics |= {"lag_p50_us": p50, "lag_p99_us": p99, "lag_p999_us": p999, "lag_max_us": mx}
        return metrics
    finally:
        await close_quietly(res, "loophealth", system)


async def _cpu_bound(
    cfg: Config, res: Results, name: str, directory: str, rep: int
) -> dict[str, float]:
    """SET/cpu-bound-loop: 8-key writes (``set_many``) from 4 tasks, timed each, while 4 busy
    tasks keep the loop's thread running Python (2 ms spin, ``sleep(0)``, repeat)."""
    system = systems.make(name, redis_url=cfg.redis_url)
    await system.setup(directory)
    try:
        if not isinstance(system, AsyncSystem):
            raise TypeError(f"{name} is not an async system")
        warm = _batches(cfg.keys, min(cfg.warmup_ops, cfg.ops), seed=rep * 7 + 4)
        batches = _batches(cfg.keys, cfg.ops, seed=rep * 7 + 5)
        await _busy_writes(cfg, system, warm, Deadline(cfg.warmup_seconds))  # untimed
        with frozen_gc():
            deadline = Deadline(cfg.seconds)
            lag = asyncio.ensure_future(ticker(deadline))
            try:
                stats, spins = await _busy_writes(cfg, system, batches, deadline)
            finally:
                deadline.stop()
                lags = await lag
        metrics = stats.metrics()
        p50, p99, p999, mx = percentiles_us(lags)
        metrics |= {"lag_p50_us": p50, "lag_p99_us": p99, "lag_p999_us": p999, "lag_max_us": mx}
        metrics |= {
            "keys_per_s": stats.ops * BATCH / stats.seconds,
            "load_ops_per_s": spins / stats.seconds,
            "busy_share": spins * BUSY_SPIN_S / stats.seconds,
        }
        return metrics
    finally:
        await close_quietly(res, "loophealth", system)


def _batches(n_keys: int, n_ops: int, seed: int) -> list[list[Batch]]:
    """Per writer task: batches of ``BATCH`` distinct random existing keys, ``n_ops`` keys in
    all (the count cap), drawn before the clock starts."""
    per_task = max(1, n_ops // (WRITERS * BATCH))
    out = []
    for task in range(WRITERS):
        rng = random.Random(seed * 1_000_003 + task)
        out.append(
            [
                [(key(i), value(i)) for i in rng.sample(range(n_keys), BATCH)]
                for _ in range(per_task)
            ]
        )
    return out


async def _busy_writes(
    cfg: Config, system: AsyncSystem, batches: list[list[Batch]], deadline: Deadline
) -> tuple[RunStats, int]:
    """One writer task per entry of ``batches`` until ``deadline``, beside ``BUSY_TASKS``
    busy tasks; the statistics of the writes, and the busy tasks' spins. The busy tasks run
    until the last write returned, so every timed write met the same loop."""
    hard = cfg.seconds * 5 + 30  # a hung system is abandoned; a healthy one ends long before
    busy_until = Deadline(hard)
    busy = [
        asyncio.ensure_future(_spin(busy_until, int(hard / BUSY_SPIN_S) + 1))
        for _ in range(BUSY_TASKS)
    ]
    started = time.perf_counter_ns()
    try:
        writers = (_write(system.set_many, b, deadline) for b in batches)
        writes = await asyncio.wait_for(asyncio.gather(*writers), timeout=hard)
    finally:
        ended = time.perf_counter_ns()
        busy_until.stop()
        spins = sum(await asyncio.gather(*busy))
    return summarize(writes, started, ended), spins


async def _spin(until: Deadline, rounds: int) -> int:
    """A CPU-bound coroutine: spin ``BUSY_SPIN_S`` in Python, yield once, repeat; rounds done."""
    done = 0
    while done < rounds and not until.passed():
        end = time.perf_counter() + BUSY_SPIN_S
        while time.perf_counter() < end:
            pass
        done += 1
        await asyncio.sleep(0)
    return done


async def _write(
    set_many: Callable[[Batch, float], Awaitable[None]], batches: list[Batch], deadline: Deadline
) -> TaskResult:
    """``set_many`` each batch until ``deadline``; the latency of each whole batch."""
    res = TaskResult([])
    record = res.latencies.append
    for batch in batches:
        t0 = time.perf_counter_ns()
        if t0 > deadline.ns:
            break
        try:
            await set_many(batch, TTL)
        except Exception as exc:  # counted and reported, never hidden
            res.first_error = res.first_error or repr(exc)
            res.failed_writes += 1
        record(time.perf_counter_ns() - t0)
        await asyncio.sleep(0)  # between two writes other tasks run, as between two requests
    return res


# -- peak RSS --------------------------------------------------------------------------------


def rss(
    cfg: Config,
    res: Results,
    name: str,
    directory: str,
    n_keys: int,
    loop: str,
    rep: int,
    label: str,
) -> None:
    """Peak RSS (``VmHWM``) of a fresh process running MIXED over ``n_keys`` entries."""
    reason = systems.unavailable(name, redis_url=cfg.redis_url)
    if reason is not None:
        res.skip("scale", name, reason)
        return
    # Longer caps than one measurement: the near cache should reach its bound.
    seconds, ops = max(3.0, cfg.seconds * 3), cfg.ops * 2
    spec = _spec(cfg, "rss", name, directory, loop, keys=n_keys, seed=rep, seconds=seconds, ops=ops)
    try:
        with Child(spec) as child:
            out = child.expect("result", seconds * 5 + START_TIMEOUT)
    except Exception as exc:
        res.skip("scale", name, f"{label} failed: {exc!r}")
        progress(f"[scale {loop}] {name} {label} FAILED: {exc!r}")
        return
    metrics = out["metrics"] | {k: out[k] for k in ("rss_mb", "rss_import_mb", "rss_open_mb")}
    row = Row("scale", name, label, out["concurrency"], loop, rep, metrics, out["first_error"])
    res.add(row)
    progress(
        f"{describe(row, cfg.reps)}; peak RSS {out['rss_mb']:.1f} MB (after imports "
        f"{out['rss_import_mb']:.1f} MB, after opening {out['rss_open_mb']:.1f} MB)"
    )
