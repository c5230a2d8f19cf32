"""Measure shardcache and its peers in one run, on one workload, and print same-run ratios.

    python benchmarks/run.py [--quick] [--json out.json] [--only core,memo,...]
                             [--loop asyncio|uvloop|both] [--reps N] [--seconds S]

Sections: core, multiproc, loophealth, scale, durability, memo (see benchmarks/README.md).
A progress line per measurement goes to stderr; the report goes to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any, NoReturn

import procs
import report
import sections
from harness import Config, progress
from redis_server import RedisServer
from results import Results
from workloads import LOOPS, loop_available

SECTIONS: dict[str, Callable[[Config, Results], None]] = {
    "core": sections.core,
    "multiproc": procs.multiproc,
    "loophealth": procs.loophealth,
    "scale": sections.scale,
    "durability": sections.durability,
    "memo": sections.memo,
}
PACKAGES = (
    "shardcache",
    "msgspec",
    "diskcache",
    "aiosqlite",
    "redis",
    "cashews",
    "aiocache",
    "async-lru",
    "uvloop",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short caps, 1 rep, 10k/100k scale")
    p.add_argument("--json", metavar="PATH", help="write every raw number here")
    p.add_argument(
        "--only", metavar="NAMES", help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    p.add_argument("--loop", choices=[*LOOPS, "both"], default="both")
    p.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    p.add_argument("--seconds", type=float, help="time cap per measurement (default 2, quick 0.5)")
    p.add_argument(
        "--ops", type=int, help="operation cap per measurement (default 300k, quick 100k)"
    )
    p.add_argument("--tmpdir", help="where the cache directories go (default: system temp)")
    args = p.parse_args(argv)
    chosen = args.only.split(",") if args.only else list(SECTIONS)
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in chosen]
    if args.reps is not None and args.reps < 1:
        p.error("--reps must be >= 1")
    return args


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _command(*args: str) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def meta(cfg: Config, argv: list[str]) -> dict[str, Any]:
    here = os.path.dirname(os.path.abspath(__file__))
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "redis_server": _command("redis-server", "--version") if cfg.redis_url else None,
        "git": _command("git", "-C", here, "rev-parse", "--short", "HEAD"),
        "packages": {p: _version(p) for p in PACKAGES},
        "argv": argv,
    }


def _terminate(signum: int, frame: object) -> NoReturn:
    raise SystemExit(128 + signum)  # unwinds through every `finally`: children and redis stop


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    loops: tuple[str, ...] = LOOPS if args.loop == "both" else (args.loop,)
    res = Results()
    for loop in loops:
        reason = loop_available(loop)
        if reason:
            res.skip("all", loop, reason)
    loops = tuple(lp for lp in loops if not loop_available(lp))
    tmp = tempfile.mkdtemp(prefix="shardcache-bench-", dir=args.tmpdir)
    started = time.perf_counter()
    try:
        with RedisServer(tmp) as redis:
            cfg = Config.for_mode(
                quick=args.quick,
                reps=args.reps,
                loops=loops,
                tmp=tmp,
                seconds=args.seconds,
                ops=args.ops,
            )
            cfg = replace(cfg, redis_url=redis.url, redis_note=redis.note)
            info = meta(cfg, sys.argv if argv is None else argv)
            progress(f"sections {args.sections}, loops {list(loops)}, {cfg.reps} rep(s), "
                     f"caps {cfg.seconds}s / {cfg.ops:,} ops per measurement, in {tmp}")  # fmt: skip
            for name in args.sections:
                progress(f"== {name}")
                try:
                    SECTIONS[name](cfg, res)
                except Exception as exc:  # report what was measured so far, and why it stopped
                    res.skip(name, "(section)", f"crashed: {exc!r}")
                    progress(f"== {name} CRASHED: {exc!r}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - started
    verdicts = report.evaluate(
        res,
        report.targets(sections.size_label(max(sections.scale_sizes(cfg)))),
        loops,
        args.sections,
    )
    lines = [
        f"shardcache benchmarks, {info['date']}, {info['host']}: {info['cpus']} cpus, "
        f"Python {info['python']}, SQLite {info['sqlite']}, {cfg.reps} rep(s), "
        f"{'quick' if cfg.quick else 'full'} mode, {elapsed:.0f}s",
        "versions: " + ", ".join(f"{k} {v}" for k, v in info["packages"].items()),
    ]
    lines += [
        f"skipped everywhere: {s.system}: {s.reason}" for s in res.skips if s.section == "all"
    ]
    for name in args.sections:
        lines += ["", *report.section_text(res, name, loops)]
    lines += ["", *report.targets_text(verdicts, loops), "", *report.sanity_text(res)]
    print("\n".join(lines))
    if args.json:
        doc = {"meta": info, "config": asdict(cfg), "elapsed_s": elapsed, **res.to_json()}
        doc["targets"] = report.verdicts_json(verdicts)
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        progress(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
