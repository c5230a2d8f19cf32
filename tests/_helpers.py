"""Test helpers, and the script that child processes run (``python _helpers.py CMD ...``).

Cross-process claims are tested with real processes: each child runs this file with
``sys.executable``, opens the same cache directory, and talks to the test through its
stdin/stdout, one JSON document per line. Every wait on a child is bounded.

Child commands (``main``):

* ``peer DIR OPTIONS LOOP``: answer ``[op, args, kwargs]`` requests with
  ``["ok", result]`` or ``["err", type name, message]``, calling ``getattr(cache, op)``.
* ``hammer DIR OPTIONS LOOP INDEX N``: after ``go``, write ``N`` own keys, ``incr`` one
  shared counter ``N // 2`` times and race for ``N // 8`` ``add`` keys; print a summary.
* ``writer DIR OPTIONS LOOP``: write keys forever, printing ``ack I`` once each is stored.
* ``compute DIR OPTIONS LOOP``: after ``go``, ``get_or_set`` one shared key whose factory
  counts its calls; print the value it got.
* ``fork DIR LOOP``: open a cache, fork, use the inherited instance in the child, check
  in the parent that its own connections still work.
* ``lock SHARD``: hold the write lock of one shard file until told ``release``.
* ``open DIR``: open a cache and write one key; print the error, if any.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

HELPER = Path(__file__).resolve()
SHARDS = 4  # the fixtures' shard count: several shards, at half the default's opening cost
TIMEOUT = 60.0  # seconds: the bound of every wait on a child; a failure, never a hang


# -- used by the tests ------------------------------------------------------------------
def loop_name() -> str:
    """``"uvloop"`` or ``"asyncio"``: the kind of loop running now (children use the same)."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


@contextlib.contextmanager
def locked(*shards: str) -> Iterator[None]:
    """Another process holds the write lock of each of ``shards`` for the block."""
    with Child("lock", *shards) as locker:
        locker.expect("locked")
        try:
            yield
        finally:
            locker.send("release")
            locker.expect("released")
            locker.finish()


def unmade_shards(directory: Path, shards: int) -> list[str]:
    """Empty shard files in a new ``directory``, as while another process creates them
    (lock them with ``Child("lock", *files)``: an open then waits for them)."""
    directory.mkdir(parents=True)
    files = [directory / f"shard-{i:03d}.db" for i in range(shards)]
    for file in files:
        file.touch(mode=0o600)
    return [str(file) for file in files]


def child_value(index: int) -> Any:
    """The value the writer children store under key ``("w", index)``."""
    if index % 10 == 0:
        return bytes([index % 251]) * 20_000  # beyond min_file_size: its own value file
    return {"i": index, "pad": "x" * (index % 7 * 50)}


async def outlive(ttl: float) -> None:
    """Wait until an entry written before this call with ``ttl`` has expired.

    Expiry is measured on the wall clock, so this waits on it (not on the loop's clock).
    """
    deadline = time.time() + ttl
    while (left := deadline - time.time()) >= 0:
        await asyncio.sleep(left + 0.01)


async def wait_for_condition(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Re-check ``check`` with backoff until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


class ChildFailed(AssertionError):
    """A child process failed or answered with an error."""


class Child:
    """A child process (``python _helpers.py ARGS``) driven line by line, synchronously."""

    def __init__(self, *args: str, prefix: list[str] | None = None) -> None:
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, str(HELPER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
            cwd=tempfile.gettempdir(),
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def line(self, timeout: float = TIMEOUT) -> str:
        """The next line the child printed."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise ChildFailed(f"no output from the child in {timeout}s:\n{self.stderr()}") from None
        if line is None:
            self.proc.wait(timeout)
            raise ChildFailed(f"the child exited ({self.proc.returncode}) early:\n{self.stderr()}")
        return line

    def expect(self, text: str, timeout: float = TIMEOUT) -> None:
        line = self.line(timeout)
        if line != text:
            raise ChildFailed(f"expected {text!r} from the child, got {line!r}:\n{self.stderr()}")

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = TIMEOUT) -> None:
        """Close stdin and wait for a clean exit."""
        with contextlib.suppress(BrokenPipeError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ChildFailed(f"the child did not exit in {timeout}s:\n{self.stderr()}") from None
        if code != 0:
            raise ChildFailed(f"the child exited with {code}:\n{self.stderr()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(TIMEOUT)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        self._reader.join(TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


class Peer:
    """Another process with its own cache on the same directory, called from async tests.

    ``await peer.call("get", key, default)`` runs ``cache.get(key, default)`` over there.
    Arguments and results travel as JSON (so keys are str or int, values JSON values).
    """

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Any) -> None:
        self.proc = proc
        self._stderr = stderr

    @classmethod
    async def start(cls, directory: Path, **options: Any) -> Peer:
        stderr = tempfile.TemporaryFile()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HELPER),
            "peer",
            str(directory),
            json.dumps(options),
            loop_name(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            cwd=tempfile.gettempdir(),
        )
        peer = cls(proc, stderr)
        assert await peer.call("open") is None
        return peer

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    async def call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps([op, args, kwargs]).encode() + b"\n")
        await self.proc.stdin.drain()
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), TIMEOUT)
        except asyncio.TimeoutError:
            raise ChildFailed(f"the peer did not answer {op}:\n{self.stderr()}") from None
        if not line:
            raise ChildFailed(f"the peer exited during {op}:\n{self.stderr()}")
        answer = json.loads(line)
        if answer[0] == "err":
            raise ChildFailed(f"{op} failed in the peer: {answer[1]}: {answer[2]}")
        return answer[1]

    async def aclose(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), TIMEOUT)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._stderr.close()


# -- the child side -----------------------------------------------------------------------
def _run(coro: Coroutine[Any, Any, Any], loop: str) -> Any:
    if loop == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def _say(*parts: Any) -> None:
    sys.stdout.write(" ".join(map(str, parts)) + "\n")
    sys.stdout.flush()


async def _lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _peer(directory: str, options: dict[str, Any]) -> None:
    from shardcache import AsyncCache

    reader = await _lines()
    async with AsyncCache(directory, **options) as cache:
        while line := await reader.readline():
            op, args, kwargs = json.loads(line)
            try:
                if op in ("keys", "items"):
                    result: Any = [item async for item in getattr(cache, op)()]
                elif op == "stats":
                    stats = await cache.stats()
                    result = {f: getattr(stats, f) for f in ("hits", "misses", "near_hits")}
                else:
                    result = await getattr(cache, op)(*args, **kwargs)
                answer = ["ok", result]
            except Exception as exc:
                answer = ["err", type(exc).__name__, str(exc)]
            _say(json.dumps(answer))


async def _hammer(directory: str, options: dict[str, Any], index: int, n: int) -> None:
    from shardcache import AsyncCache

    reader = await _lines()
    async with AsyncCache(directory, **options) as cache:
        _say("ready")
        assert (await reader.readline()).strip() == b"go"

        async def writes() -> list[int]:
            acked: list[int] = []
            for start in range(0, n, 16):
                batch = range(start, min(start + 16, n))
                await asyncio.gather(*(cache.set(("w", index, i), [index, i]) for i in batch))
                acked.extend(batch)
                # Read what another process wrote: exercises the near cache under writes.
                other = (index + 1) % 4
                got = await cache.get(("w", other, start))
                assert got in (None, [other, start]), got
            return acked

        async def counts() -> int:
            for _ in range(n // 2):
                await cache.incr("counter")
            return n // 2

        async def adds() -> list[int]:
            return [j for j in range(n // 8) if await cache.add(("add", j), index)]

        acked, incremented, won = await asyncio.gather(writes(), counts(), adds())
        _say(json.dumps({"acked": acked, "incremented": incremented, "won": won}))


async def _writer(directory: str, options: dict[str, Any]) -> None:
    from shardcache import AsyncCache

    cache = AsyncCache(directory, **options)
    await cache.open()
    _say("ready")

    async def one(i: int) -> None:
        await cache.set(("w", i), child_value(i))
        _say("ack", i)

    i = 0
    while True:  # until SIGKILL: never closed on purpose
        await asyncio.gather(*(one(j) for j in range(i, i + 8)))
        i += 8


async def _compute(directory: str, options: dict[str, Any]) -> None:
    from shardcache import AsyncCache

    reader = await _lines()
    async with AsyncCache(directory, **options) as cache:
        _say("ready")
        assert (await reader.readline()).strip() == b"go"

        async def factory() -> str:
            await cache.incr("factory-calls")
            await asyncio.sleep(0.3)  # a slow computation: the others must wait for it
            return f"computed by {os.getpid()}"

        _say(json.dumps(await cache.get_or_set("shared", factory, ttl=60, lock_timeout=20)))


def _fork(directory: str, loop: str) -> int:
    from shardcache import AsyncCache

    cache = AsyncCache(directory, shards=2)

    async def before() -> None:
        await cache.set("parent", "p1")
        assert await cache.get("parent") == "p1"  # now in the parent's near cache too

    _run(before(), loop)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:

            async def child() -> None:
                assert await cache.get("parent") == "p1"
                await cache.set("child", "c1")
                await cache.set("parent", "p2")
                assert await cache.incr("n") == 1
                assert await cache.count() == 3
                await cache.aclose()

            _run(child(), loop)
            code = 0
        except BaseException:
            traceback.print_exc()
        # A normal exit: finalizers and atexit handlers run in the child, as they would
        # in a worker process, and must not touch what the parent owns.
        sys.exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        _say("child failed")
        return 1

    async def after() -> None:
        # The parent's own connections, threads and near cache still work, and see the
        # child's writes (the stale near-cache copy of "parent" is gone).
        assert await cache.get("parent") == "p2"
        assert await cache.get("child") == "c1"
        assert await cache.incr("n") == 2
        await cache.set_many({f"k{i}": i for i in range(100)})
        assert await cache.count() == 103
        report = await cache.check()
        assert report.ok, report.problems
        await cache.aclose()

    _run(after(), loop)
    _say("ok")
    return 0


def _fork_busy(directory: str, loop: str) -> int:
    """Fork while the parent's writer thread is mid-transaction; each child opens a cache
    of its own on the directory and writes, bounded (the children inherit no lock)."""
    from shardcache import AsyncCache

    cache = AsyncCache(directory, shards=2)
    pids: list[int] = []

    async def parent() -> None:
        await cache.set("parent", 1)
        for i in range(8):
            writes = asyncio.gather(*(cache.set(("p", i, j), "x" * 500) for j in range(100)))
            await asyncio.sleep(0.001)  # the writer thread is committing them now
            pid = os.fork()
            if pid == 0:
                _child_write(directory, i, loop)  # never returns
            pids.append(pid)
            await writes

    _run(parent(), loop)
    failed = 0
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        failed += os.waitstatus_to_exitcode(status) != 0

    async def verify() -> None:
        found = await cache.get_many([("child", i) for i in range(8)])
        assert found == {("child", i): i for i in range(8)}, found
        assert await cache.count() == 1 + 8 * 100 + 8
        await cache.aclose()

    _run(verify(), loop)
    _say("ok" if not failed else f"{failed} children failed")
    return 0


def _child_write(directory: str, index: int, loop: str) -> None:
    from shardcache import AsyncCache

    code = 1
    try:

        async def child() -> None:
            async with AsyncCache(directory, shards=2) as mine:
                # Bounded far below SQLite's 10 s busy wait: the stall this guards against.
                await asyncio.wait_for(mine.set(("child", index), index), 5)

        _run(child(), loop)
        code = 0
    except BaseException:
        traceback.print_exc()
    os._exit(code)


def _lock(*shards: str) -> None:
    conns = [sqlite3.connect(shard, isolation_level=None) for shard in shards]
    for conn in conns:
        conn.execute("BEGIN IMMEDIATE")
    _say("locked")
    sys.stdin.readline()  # "release", or EOF when the test gives up
    for conn in conns:
        conn.execute("ROLLBACK")
        conn.close()
    _say("released")


async def _open(directory: str) -> None:
    from shardcache import AsyncCache, CacheError

    cache = AsyncCache(directory)
    try:
        await cache.set("k", 1)
    except CacheError as exc:
        _say(json.dumps([type(exc).__name__, str(exc)]))
    else:
        _say(json.dumps(None))
    finally:
        await cache.aclose()


def main(argv: list[str]) -> int:
    cmd, *args = argv
    if cmd == "peer":
        _run(_peer(args[0], json.loads(args[1])), args[2])
    elif cmd == "hammer":
        _run(_hammer(args[0], json.loads(args[1]), int(args[3]), int(args[4])), args[2])
    elif cmd == "writer":
        _run(_writer(args[0], json.loads(args[1])), args[2])
    elif cmd == "compute":
        _run(_compute(args[0], json.loads(args[1])), args[2])
    elif cmd == "fork":
        return _fork(args[0], args[1])
    elif cmd == "fork-busy":
        return _fork_busy(args[0], args[1])
    elif cmd == "lock":
        _lock(*args)
    elif cmd == "open":
        asyncio.run(_open(args[0]))
    else:
        raise SystemExit(f"unknown command {cmd!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
