"""One ``AsyncCache`` used by event loops in several threads at once.

A cache's loop-thread connections belong to one loop at a time (``_owner``); the other
loops read through the read pool and write through the writer thread. Without that, two
loops used one SQLite connection concurrently: wrong answers, "Recursive use of cursors",
failed writes that still applied, or a segfault. So each scenario runs in a child process
(a crash fails the test instead of ending the run) and checks every answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys, threading
    from shardcache import AsyncCache, acached

    directory, near = sys.argv[1], int(sys.argv[2])
    cache = AsyncCache(directory, shards=2, near_cache=near)
    errors, wrong, acked = [], [], {"incr": 0}

    @acached(cache, ttl=60)
    async def square(x):
        return x * x

    def worker(name):
        async def main():
            for round in range(150):
                i = round % 40
                await cache.set((name, i), [name, round])
                got = await cache.get((name, i))
                if got != [name, round]:
                    wrong.append(["get", name, i, got])
                await cache.incr("shared")
                acked["incr"] += 1
                if await square(i) != i * i:
                    wrong.append(["square", i])
                many = await cache.get_many([(name, j) for j in range(5)])
                if any(v[0] != name for v in many.values()):
                    wrong.append(["many", name])
                if round % 10 == 0:
                    await cache.set_many({(name, "m", j): j for j in range(12)})
                    await cache.delete((name, "m", 0))
        try:
            asyncio.run(asyncio.wait_for(main(), 60))
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)

    async def after():
        async with cache:
            total = await cache.get("shared")
            # The loops are gone: a new one takes the connections over.
            await cache.set("after", 1)
            return total, await cache.get("after"), await cache.count()

    total, after_value, count = asyncio.run(after())
    print(json.dumps({"errors": errors, "wrong": wrong, "acked": acked["incr"],
                      "total": total, "after": after_value, "count": count}))
    """
)


@pytest.mark.parametrize("near", [64 << 20, 0], ids=["near", "no-near"])
def test_loops_in_three_threads_share_one_cache(tmp_path: Path, near: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "cache"), str(near)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == [] and result["wrong"] == []
    assert result["acked"] == result["total"] == 3 * 150  # no increment lost or doubled
    assert result["after"] == 1
    # Each thread's 40 keys and its set_many less the deleted key, 40 squares, 2 more.
    assert result["count"] == 3 * 40 + 3 * 11 + 40 + 2
