"""Many real processes on one directory: the normal deployment (API.md §1), not an edge case.

Children run ``_helpers.py`` with ``sys.executable`` (half on asyncio, half on uvloop), start
their work together on a ``go`` line, and report what was acknowledged to them; the test
then checks the directory with a fresh cache of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from _helpers import Child, child_value
from shardcache import AsyncCache

LOOPS = ["asyncio", "uvloop"] if sys.platform != "win32" else ["asyncio"]
PROCESSES = 4


def _start_together(
    cache_dir: Path, command: str, options: dict[str, Any], *extra: str
) -> tuple[ExitStack, list[Child]]:
    """Start the children, wait until each is ready, then let them all go at once."""
    with ExitStack() as guard:  # a child that fails to get ready takes the others down
        children = [
            guard.enter_context(
                Child(
                    command,
                    str(cache_dir),
                    json.dumps(options),
                    LOOPS[i % len(LOOPS)],
                    *(a.format(index=i) for a in extra),
                )
            )
            for i in range(PROCESSES)
        ]
        for child in children:
            child.expect("ready")
        for child in children:
            child.send("go")
        return guard.pop_all(), children  # all ready: the caller owns them now


def test_four_processes_hammering_one_directory(cache_dir: Path) -> None:
    n = 600
    options = {"shards": 4}
    stack, children = _start_together(cache_dir, "hammer", options, "{index}", str(n))
    with stack:
        reports = [json.loads(child.line()) for child in children]
        for child in children:
            child.finish()

    async def verify() -> None:
        async with AsyncCache(cache_dir, **options) as cache:
            for index, report in enumerate(reports):
                assert report["acked"] == list(range(n))
                keys = [("w", index, i) for i in report["acked"]]
                stored = await cache.get_many(keys)
                assert stored == {key: [index, key[2]] for key in keys}
            # incr is atomic across processes: not one increment lost.
            assert await cache.get("counter") == sum(r["incremented"] for r in reports)
            assert await cache.get("counter") == PROCESSES * (n // 2)
            # add wins exactly once per key, and the stored value is the winner's.
            for j in range(n // 8):
                winners = [i for i, r in enumerate(reports) if j in r["won"]]
                assert len(winners) == 1, (j, winners)
                assert await cache.get(("add", j)) == winners[0]
            assert await cache.count() == PROCESSES * n + 1 + n // 8
            report = await cache.check()
            assert report.ok, report.problems

    asyncio.run(verify())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_killed_writer_loses_no_acknowledged_write(cache_dir: Path, loop: str) -> None:
    options = {"shards": 4, "min_file_size": 4096}
    acked: list[int] = []
    with Child("writer", str(cache_dir), json.dumps(options), loop) as writer:
        writer.expect("ready")
        while len(acked) < 400:
            word, index = writer.line().split()
            assert word == "ack"
            acked.append(int(index))
        os.kill(writer.proc.pid, signal.SIGKILL)  # mid-stream: more writes are in flight
        writer.proc.wait(60)
        assert writer.proc.returncode == -signal.SIGKILL

    async def verify() -> None:
        async with AsyncCache(cache_dir, **options) as cache:
            stored = await cache.get_many([("w", i) for i in acked])
            missing = [i for i in acked if ("w", i) not in stored]
            assert missing == []
            wrong = [i for i in acked if stored[("w", i)] != child_value(i)]
            assert wrong == []
            # A kill mid-write may leave the file of the write it interrupted: garbage,
            # never damage; check(fix=True) removes it.
            report = await cache.check()
            assert all(p.endswith("orphan value file") for p in report.problems), report
            await cache.check(fix=True)
            assert (await cache.check()).ok
            # The cache keeps working after the crash.
            await cache.set("after", 1)
            assert await cache.get("after") == 1

    asyncio.run(verify())


def test_get_or_set_computes_once_across_processes(cache_dir: Path) -> None:
    options = {"shards": 4}
    stack, children = _start_together(cache_dir, "compute", options)
    with stack:
        values = [json.loads(child.line()) for child in children]
        for child in children:
            child.finish()
    assert len(set(values)) == 1, values

    async def verify() -> None:
        async with AsyncCache(cache_dir, **options) as cache:
            assert await cache.get("factory-calls") == 1
            assert await cache.get("shared") == values[0]

    asyncio.run(verify())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("loop", LOOPS)
def test_a_fork_during_writes_leaves_the_child_no_lock(cache_dir: Path, loop: str) -> None:
    # A child forked while the parent's writer thread was mid-transaction inherited
    # SQLite's record of that transaction's locks, and its own writes to that shard
    # waited 10 s for a lock nobody held. Forks now wait for the transaction (_fork).
    with Child("fork-busy", str(cache_dir), loop) as script:
        assert script.line() == "ok"
        script.finish()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("loop", LOOPS)
def test_a_forked_child_uses_the_parents_instance(cache_dir: Path, loop: str) -> None:
    # The whole scenario runs in a helper process (forking pytest itself is not safe):
    # open, fork, use the inherited instance in the child, exit the child normally, then
    # check that the parent's own connections, threads and near cache are intact.
    with Child("fork", str(cache_dir), loop) as script:
        assert script.line() == "ok"
        script.finish()

    async def verify() -> None:
        async with AsyncCache(cache_dir, shards=2) as cache:
            assert await cache.get_many(["parent", "child", "n"]) == {
                "parent": "p2",
                "child": "c1",
                "n": 2,
            }
            assert await cache.count() == 103
            assert (await cache.check()).ok

    asyncio.run(verify())
