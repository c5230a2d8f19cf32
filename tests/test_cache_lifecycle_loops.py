"""An ``AsyncCache`` over the life of real programs: closed from another event loop than
the one that used it, after a close that its loop cancelled, collected without a close,
pickled into another process.

Each scenario runs in a child process: a hang or a leaked thread then fails one test (the
child's timeout, its exit status), not the run, and thread and descriptor counts are the
child's own.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

_PRELUDE = """
import asyncio, gc, os, sys, threading, time
from shardcache import AsyncCache, acached

directory = sys.argv[1]


def ours():
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("shardcache"))


def no_threads_left(deadline=20.0):
    # The threads end on their own once closed: join them, bounded.
    end = time.monotonic() + deadline
    for thread in [t for t in threading.enumerate() if t.name.startswith("shardcache")]:
        thread.join(max(0.0, end - time.monotonic()))
    assert not ours(), ours()
"""


def run(script: str, directory: Path) -> None:
    code = _PRELUDE + textwrap.dedent(script) + "\nprint('ok')\n"
    path = directory.parent / "scenario.py"  # a file: spawned children import its functions
    path.write_text(code)
    proc = subprocess.run(
        [sys.executable, "-W", "ignore::ResourceWarning", str(path), str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr


def test_a_close_that_its_loop_cancelled_is_finished_by_the_next(tmp_path: Path) -> None:
    """asyncio.run cancels the teardown a timed-out aclose() left running; the next
    aclose() (in another asyncio.run) resumes it: writes kept, threads ended."""
    run(
        """
        cache = AsyncCache(directory, shards=2)

        async def first():
            await cache.set("k", "v")
            try:
                await asyncio.wait_for(cache.aclose(), 1e-6)
            except asyncio.TimeoutError:
                pass

        asyncio.run(first())
        asyncio.run(cache.aclose())
        asyncio.run(cache.aclose())  # idempotent
        no_threads_left()

        async def check():
            async with AsyncCache(directory, shards=2) as again:
                assert await again.get("k") == "v"

        asyncio.run(check())
        """,
        tmp_path / "c",
    )


def test_close_waits_for_a_refresh_running_in_another_threads_loop(tmp_path: Path) -> None:
    """A stale refresh started by a loop in another thread is waited for (its write
    lands) by an aclose() from the main thread's loop."""
    run(
        """
        cache = AsyncCache(directory, shards=2)
        started, calls = threading.Event(), []

        @acached(cache, ttl=0.05, stale_ttl=60)
        async def answer():
            calls.append(1)
            if len(calls) > 1:
                started.set()
                await asyncio.sleep(0.5)
            return len(calls)

        def other_thread():
            async def main():
                assert await answer() == 1
                await asyncio.sleep(0.1)  # expired, inside its stale window
                assert await answer() == 1  # stale at once; the refresh runs in this loop
                await asyncio.sleep(2)  # the loop stays up while the refresh finishes

            asyncio.run(main())

        thread = threading.Thread(target=other_thread)
        thread.start()
        assert started.wait(20)
        asyncio.run(cache.aclose())
        thread.join(20)
        no_threads_left()

        async def check():
            async with AsyncCache(directory, shards=2) as again:
                entry = await again.get_entry(answer.cache_key())
                assert entry is not None and entry.value == 2, entry

        asyncio.run(check())
        """,
        tmp_path / "c",
    )


def test_close_after_the_loop_of_a_pending_refresh_was_closed(tmp_path: Path) -> None:
    run(
        """
        cache = AsyncCache(directory, shards=2)

        @acached(cache, ttl=0.05, stale_ttl=60)
        async def answer():
            await asyncio.sleep(0.3)
            return "x"

        async def main():
            await answer()
            await asyncio.sleep(0.1)
            await answer()  # starts a refresh, left pending when the loop closes

        loop = asyncio.new_event_loop()
        loop.run_until_complete(main())
        loop.close()  # without cancelling its tasks
        asyncio.run(cache.aclose())
        no_threads_left()
        """,
        tmp_path / "c",
    )


def test_a_misfit_read_in_one_loop_does_not_reach_a_read_in_another(tmp_path: Path) -> None:
    """get_entry(type=) drops a stored value that no longer fits; a get(type=) in
    another loop (another thread's, or the next asyncio.run) must not await that drop."""
    run(
        """
        import msgspec

        class Point(msgspec.Struct):
            x: int

        cache = AsyncCache(directory, shards=1)

        async def first():
            await cache.set("bad", {"x": "not an int"})
            await cache.set("good", 5)
            assert await cache.get_entry("bad", type=Point) is None

        asyncio.run(first())

        async def second():
            assert await cache.get("good", type=int) == 5
            await cache.aclose()

        asyncio.run(second())
        """,
        tmp_path / "c",
    )


def test_a_cache_collected_without_close_commits_and_ends_its_threads(tmp_path: Path) -> None:
    run(
        """
        def fds():
            return len(os.listdir("/proc/self/fd"))

        baseline = fds()
        for i in range(10):

            async def one():
                cache = AsyncCache(os.path.join(directory, str(i)), shards=2)
                await cache.set("k", i)
                asyncio.get_running_loop().create_task(cache.set("queued", i))

            asyncio.run(one())
            gc.collect()
        no_threads_left()
        assert fds() <= baseline + 2, (baseline, fds())

        async def check():
            for i in range(10):
                async with AsyncCache(os.path.join(directory, str(i)), shards=2) as again:
                    assert await again.get("k") == i
        asyncio.run(check())
        """,
        tmp_path / "c",
    )


def test_a_pickled_cache_opens_the_same_files_in_a_spawned_process(tmp_path: Path) -> None:
    run(
        """
        import multiprocessing, pickle

        def child(cache, queue):
            async def main():
                async with cache:
                    queue.put(await cache.get("k"))
                    await cache.set("from-child", 1)

            asyncio.run(main())

        if __name__ == "__main__":
            cache = AsyncCache(directory, shards=3, default_ttl=60, near_cache=0)
            copy = pickle.loads(pickle.dumps(cache))
            assert copy is not cache and copy.directory == cache.directory

            async def main():
                async with cache:
                    await cache.set("k", {"v": 1})
                context = multiprocessing.get_context("spawn")
                queue = context.Queue()
                process = context.Process(target=child, args=(copy, queue))
                process.start()
                assert queue.get(timeout=60) == {"v": 1}
                process.join(60)
                assert process.exitcode == 0
                async with copy:
                    assert await copy.get("from-child") == 1
                    assert 59 < await copy.ttl("from-child") <= 60

            asyncio.run(main())
        """,
        tmp_path / "c",
    )


async def test_a_pickled_copy_has_every_option(tmp_path: Path) -> None:
    """Same secret, serializer and compression: what one writes, the other reads."""
    import pickle

    from shardcache import AsyncCache

    options = {"shards": 3, "compression": "zlib", "secret": b"s", "default_ttl": 60.0}
    async with AsyncCache(tmp_path / "c", **options) as cache:  # type: ignore[arg-type]
        copy = pickle.loads(pickle.dumps(cache))
        async with copy:
            await copy.set("k", "x" * 5000)
            assert await cache.get("k") == "x" * 5000
            assert 59 < await cache.ttl("k") <= 60
        # The copy signed with the original's secret: another secret reads a miss.
        other = AsyncCache(tmp_path / "c", shards=3, compression="zlib", secret=b"other")
        async with other:
            assert await other.get("k") is None
