"""A child process of ``procs.py``: ``python worker.py '<json spec>'``.

Modes: ``mixed`` (one of the multiproc processes), ``writer`` (SET c64 flat out until ``stop``),
``rss`` (MIXED over a populated directory, then report ``VmHWM``). Messages are JSON lines on
the original stdout; anything a library prints goes to stderr instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TextIO

from systems import make
from workloads import (
    WORKLOADS,
    Deadline,
    RunStats,
    build_plans,
    flat_out,
    last_writes,
    release_values,
    run,
    run_on,
)

Spec = dict[str, Any]
RSS_ROUND = 5_000
"""Operations per freshly built plan in ``rss`` mode (a few hundred kB of harness objects)."""
COUNTS = ("misses", "failed_writes", "errors")


def vm_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmHWM``: this process's own peak RSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class Channel:
    def __init__(self) -> None:
        self._out: TextIO = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)  # stray prints must not corrupt the protocol

    def emit(self, event: str, **payload: Any) -> None:
        self._out.write(json.dumps({"event": event, **payload}) + "\n")
        self._out.flush()

    async def command(self) -> str:
        """The next line from the parent ("" at EOF), without a thread."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str] = loop.create_future()
        fd = sys.stdin.fileno()

        def readable() -> None:
            if not fut.done():
                fut.set_result(os.read(fd, 4096).decode().strip())

        loop.add_reader(fd, readable)
        try:
            return await fut
        finally:
            loop.remove_reader(fd)


async def mixed(spec: Spec, ch: Channel) -> None:
    system = make(spec["system"], redis_url=spec["redis_url"])
    await system.setup(spec["dir"])
    plans = build_plans(
        n_keys=spec["keys"],
        n_ops=spec["ops"],
        concurrency=64,
        write_fraction=WORKLOADS["MIXED"].write_fraction,
        seed=spec["seed"] * 100 + spec["index"],
        owner=(spec["index"], spec["workers"]),
    )
    ch.emit("ready")
    await ch.command()
    stats = await run(system, plans, Deadline(spec["seconds"]))
    await system.close()  # drains pending writes: everything reported below must be on disk
    ch.emit(
        "result",
        metrics=stats.metrics(),
        started_ns=stats.started_ns,
        ended_ns=stats.ended_ns,
        first_error=stats.first_error,
        expected=last_writes(plans, stats.done),
    )


async def writer(spec: Spec, ch: Channel) -> None:
    system = make(spec["system"], redis_url=spec["redis_url"])
    await system.setup(spec["dir"])
    plans = build_plans(
        n_keys=spec["keys"], n_ops=20_000, concurrency=64, write_fraction=1.0, seed=spec["seed"]
    )
    ch.emit("ready")
    await ch.command()
    deadline = Deadline(spec["seconds"])
    stopper = asyncio.ensure_future(ch.command())
    stopper.add_done_callback(lambda _: deadline.stop())
    started = asyncio.get_running_loop().time()
    ops, failed = await flat_out(system, plans, deadline)
    seconds = asyncio.get_running_loop().time() - started
    await system.close()
    await stopper
    ch.emit("result", metrics={"ops_per_s": ops / seconds, "failed_writes": failed})


async def rss(spec: Spec, ch: Channel) -> None:
    imported = vm_kib("VmHWM")
    system = make(spec["system"], redis_url=spec["redis_url"])
    await system.setup(spec["dir"])
    opened = vm_kib("VmHWM")
    concurrency = 1 if system.is_sync else 64
    deadline = Deadline(spec["seconds"])
    rounds: list[RunStats] = []
    # Small plans, rebuilt every round: the harness's own objects must not be what is measured.
    while not deadline.passed() and sum(r.ops for r in rounds) < spec["ops"]:
        plans = build_plans(
            n_keys=spec["keys"],
            n_ops=RSS_ROUND,
            concurrency=concurrency,
            write_fraction=WORKLOADS["MIXED"].write_fraction,
            seed=spec["seed"] * 100_000 + len(rounds),
        )
        rounds.append(await run(system, plans, deadline))
        del plans
        release_values()
    await system.close()
    ops, seconds = sum(r.ops for r in rounds), sum(r.seconds for r in rounds)
    counts = {k: float(sum(getattr(r, k) for r in rounds)) for k in COUNTS}
    ch.emit(
        "result",
        metrics={"ops": ops, "seconds": seconds, "ops_per_s": ops / seconds, **counts},
        concurrency=concurrency,
        first_error=next((r.first_error for r in rounds if r.first_error), ""),
        rss_mb=vm_kib("VmHWM") / 1024,
        rss_import_mb=imported / 1024,
        rss_open_mb=opened / 1024,
    )


MODES: dict[str, Callable[[Spec, Channel], Coroutine[Any, Any, None]]] = {
    "mixed": mixed,
    "writer": writer,
    "rss": rss,
}


def main() -> int:
    spec: Spec = json.loads(sys.argv[1])
    ch = Channel()
    try:
        run_on(spec["loop"], MODES[spec["mode"]](spec, ch))
    except Exception as exc:
        ch.emit("error", error=repr(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
