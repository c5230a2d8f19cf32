"""The lifecycle of :class:`~shardcache.AsyncCache`: opening (files, connections, threads),
closing (draining queued writes, background tasks and counters), and what ``os.fork()``
and interpreter exit need. A mixin of ``AsyncCache``, like ``_cache_admin``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import sys
import threading
import warnings
import weakref
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _ops as ops
from ._errors import (
    CacheClosedError,
    CacheError,
    CacheTimeoutError,
    ConfigurationError,
    observed,
)
from ._executor import Executor
from ._owner import LoopOwner
from ._shard import Shard

if TYPE_CHECKING:
    from ._codec import Codec
    from ._options import Options

logger = logging.getLogger("shardcache")

_NEW, _OPEN, _CLOSED = "new", "open", "closed"

# Caches that may need reopening after os.fork(): the child never reuses the parent's
# connections or threads (they do not exist in the child). Abandoned connections are kept
# referenced so that their finalizers never run sqlite3_close on the parent's locks.
_LIVE: weakref.WeakSet[_Lifecycle] = weakref.WeakSet()
_ABANDONED: list[Any] = []


def _after_fork_in_child() -> None:
    for cache in list(_LIVE):
        cache._ready = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_EXITING = False


@atexit.register
def _drain_at_exit() -> None:
    # Writes still queued at interpreter exit are committed before the threads die.
    global _EXITING
    _EXITING = True  # from here on, no finalizer starts a thread (_close_abandoned)
    for cache in list(_LIVE):
        if cache._executor is not None and cache._pid == os.getpid():
            with contextlib.suppress(Exception):
                cache._executor.stop()


class _Lifecycle:
    """Opening and closing an ``AsyncCache``."""

    if TYPE_CHECKING:
        # Defined by AsyncCache (declared only while type checking, as in _cache_admin).
        _options: Options
        _codec: Codec
        _n: int
        _state: str
        _ready: bool
        _pid: int
        _shards: list[Shard]
        _executor: Executor | None
        _pool: concurrent.futures.ThreadPoolExecutor | None
        _owner: LoopOwner
        _open_lock: threading.Lock
        _tasks: set[asyncio.Task[Any]]
        _closing: asyncio.Future[None] | None
        _opening: asyncio.Future[None] | None
        _counts_saved: bool

        @property
        def directory(self) -> Path: ...
        def _own_counts(self) -> dict[str, int]: ...

    async def _ensure_open(self, timeout: float | None = None) -> None:
        """Open the cache if needed; ``CacheTimeoutError`` after ``timeout`` seconds (the
        open goes on for the other callers)."""
        if self._state is _CLOSED:
            raise CacheClosedError(f"the cache at {self.directory} is closed")
        loop = asyncio.get_running_loop()
        opening = self._opening
        if opening is None or opening.done() or opening.get_loop() is not loop:
            # One attempt at a time, joined by every caller that comes meanwhile: callers
            # queued behind a failing open (a shard locked for 30 s) would each retry it in
            # turn, and the last would wait for all of them.
            opening = self._opening = loop.run_in_executor(None, self._open_sync)
            opening.add_done_callback(observed)
        # Each caller waits on a future of its own: one that gives up (a timeout, a
        # cancelled request) leaves the open running for the others, and the callers
        # resume in the order they came (a call begun before a delete registers its
        # computation first, as it did when each ran an open of its own).
        waiter = loop.create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        opening.add_done_callback(wake)
        timer = None if timeout is None else loop.call_later(timeout, wake)
        try:
            await waiter
        finally:
            opening.remove_done_callback(wake)
            if timer is not None:
                timer.cancel()
        if not opening.done():
            raise CacheTimeoutError(f"the cache at {self.directory} did not open in {timeout} s")
        opening.result()  # the open's own error, if it failed

    def _open_sync(self) -> None:
        with self._open_lock:
            if self._state is _CLOSED:
                raise CacheClosedError(f"the cache at {self.directory} is closed")
            if self._state is _OPEN and self._pid == os.getpid():
                return
            if self._state is _OPEN:
                # Forked child: abandon the parent's connections and threads, open anew.
                _ABANDONED.append((self._shards, self._executor))
                self._shards, self._executor, self._pool = [], None, None
            opts = self._options
            directory = opts.directory
            values = directory / "values"
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                values.mkdir(mode=0o700, exist_ok=True)
            except FileExistsError as exc:
                # The path that is in the way: the directory itself or its values/.
                where = exc.filename or directory
                raise CacheError(f"{where} exists and is not a directory") from exc
            except OSError as exc:
                raise CacheError(f"cannot create cache directory {directory}: {exc}") from exc
            if not directory.is_dir():
                raise CacheError(f"cache directory {directory} exists and is not a directory")
            if values.is_symlink():
                # Value files are unlinked by name: through a link, in another directory.
                raise CacheError(f"{values} is a symbolic link: value files stay in the cache")
            if not os.access(directory, os.W_OK | os.X_OK):
                raise CacheError(f"cache directory {directory} is not writable")
            self._check_layout(directory)
            shard_limit = None if opts.size_limit is None else max(1, opts.size_limit // self._n)
            shards = [
                Shard(
                    i,
                    directory / f"shard-{i:03d}.db",
                    shards=self._n,
                    serializer=self._codec.serializer_name,
                    durability=opts.durability,
                    eviction=opts.eviction,
                    limit=shard_limit,
                    near_limit=opts.near_cache // self._n,
                    on_corrupt=opts.on_corrupt,
                    values_dir=values,
                    codec=self._codec,
                )
                for i in range(self._n)
            ]
            try:
                for shard in shards:
                    shard.open()
            except BaseException:
                for shard in shards:
                    shard.close()
                raise
            # A new owner: after a fork, the parent's loop and thread own nothing here.
            self._owner = LoopOwner()
            self._executor = Executor(
                shards,
                owner=self._owner,
                threads=opts.writer_threads,
                direct=opts.durability != "full",
                name=f"shardcache-{directory.name}",
                sync_wal=opts.durability == "full",
            )
            self._pool = concurrent.futures.ThreadPoolExecutor(2, "shardcache-read")
            self._shards = shards
            self._pid = os.getpid()
            self._state = _OPEN
            self._ready = True
            _LIVE.add(self)

    def _check_layout(self, directory: Path) -> None:
        found = sorted(p.name for p in directory.glob("shard-*.db"))
        expected = [f"shard-{i:03d}.db" for i in range(self._n)]
        if not set(found) <= set(expected):
            raise ConfigurationError(
                f"{directory} holds a cache with {len(found)} shards; it cannot be opened "
                f"with shards={self._n} (the shard count is fixed at creation)"
            )

    async def aclose(self) -> None:
        """Commit every queued write, stop the threads and close the files. Idempotent.

        Cancelling it does not leave the cache half-closed: the teardown runs on in a task
        of its own, and a later ``aclose()`` waits for it.
        """
        if self._closing is None and self._state is _NEW:
            # An open may be running on a thread: the state changes under its lock.
            loop = asyncio.get_running_loop()
            if await loop.run_in_executor(None, self._close_unopened):
                return
        # Checked after that await too: another aclose() may have started the teardown
        # meanwhile, and two teardowns would close connections a writer still uses.
        loop = asyncio.get_running_loop()
        closing = self._closing
        if closing is not None and closing.get_loop() is not loop:
            # Started by a loop in another thread, or by one that has ended (asyncio.run
            # cancels what is left): wait for it there, or take over what it left undone.
            other = closing.get_loop()
            if not closing.done() and other.is_running() and not other.is_closed():
                await _finished_in(closing)
            if closing.done() and not closing.cancelled() and closing.exception() is None:
                return
            closing = self._closing = None
        if closing is not None and closing.done() and closing.cancelled():
            closing = self._closing = None  # its loop cancelled it on the way out: resume
        if closing is None:
            if self._state is not _OPEN and self._executor is None:
                self._state = _CLOSED
                return
            closing = self._closing = asyncio.ensure_future(self._teardown())
        await asyncio.shield(closing)

    def _close_unopened(self) -> bool:
        with self._open_lock:
            if self._state is _NEW:
                self._state = _CLOSED
                return True
            return False

    async def _teardown(self) -> None:
        """Close for good. Each step is done again if it did not finish: a teardown that
        its loop cancelled (asyncio.run ending) is resumed by the next aclose()."""
        await self._drain_tasks()
        self._state = _CLOSED
        self._ready = False
        if self._pid != os.getpid():
            self._executor = None
            return  # a forked child never touches the parent's threads and connections
        loop = asyncio.get_running_loop()
        executor = self._executor
        if executor is not None:
            # A barrier per shard: batches are FIFO, so once these resolve, all is committed.
            barriers = [executor.submit(i, ops.op_flush, ()) for i in range(self._n)]
            # This instance's counters join the directory's saved totals (stats()): best
            # effort, a close never fails on them; saved once.
            counts = [(name, n) for name, n in self._own_counts().items() if n]
            if counts and not self._counts_saved:
                self._counts_saved = True
                barriers.append(executor.submit(0, ops.op_add_stats, (counts,)))
            await asyncio.gather(*barriers, return_exceptions=True)
            await loop.run_in_executor(None, executor.stop)
            self._executor = None
        pool = self._pool
        if pool is not None:
            await loop.run_in_executor(None, pool.shutdown)
            self._pool = None
        for shard in self._shards:
            shard.close()
        _LIVE.discard(self)

    async def _drain_tasks(self) -> None:
        """Wait for the background tasks (stale refreshes, access flushes) to end, their
        writes with them: those of this loop, and those of loops running in other threads.
        A task of a loop that is closed or stopped can never end: it is dropped."""
        loop = asyncio.get_running_loop()
        while self._tasks:
            waits: list[asyncio.Future[Any]] = []
            for task in list(self._tasks):
                other = task.get_loop()
                if other is loop:
                    waits.append(task)
                elif other.is_closed() or not other.is_running():
                    self._tasks.discard(task)
                else:
                    waits.append(_finished_in(task))
            if not waits:
                return
            await asyncio.gather(*waits, return_exceptions=True)

    def __del__(self) -> None:
        # warnings is imported at module level: at interpreter shutdown an import here fails.
        if getattr(self, "_state", None) is _OPEN and self._pid == os.getpid():
            warnings.warn(
                f"{self!r} was never closed: use 'async with' or 'await cache.aclose()'",
                ResourceWarning,
                stacklevel=1,
            )
            # Collected without aclose() (a notebook cell run again, a cache per job): its
            # threads and files would stay for the life of the process.
            _close_abandoned(self._executor, self._pool, self._shards)

    def _closed_error(self) -> CacheClosedError:
        return CacheClosedError(f"the cache at {self.directory} is closed")

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[None]:
        """Run an owned background task; close() awaits it, errors are logged."""

        async def run() -> None:
            try:
                await coro
            except Exception:
                logger.warning("shardcache background task failed", exc_info=True)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _track(self, task: asyncio.Task[Any]) -> None:
        """Own a background task (a stale refresh): aclose() waits for it."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _finished_in(future: asyncio.Future[Any]) -> asyncio.Future[None]:
    """A future of the running loop that completes when ``future``, of a loop running in
    another thread, is done (``add_done_callback`` must run on that future's loop)."""
    done: concurrent.futures.Future[None] = concurrent.futures.Future()

    def finished(_: object) -> None:
        if not done.done():
            done.set_result(None)

    try:
        future.get_loop().call_soon_threadsafe(future.add_done_callback, finished)
    except RuntimeError:  # that loop closed meanwhile: the future never ends
        done.set_result(None)
    return asyncio.wrap_future(done)


def _close_abandoned(
    executor: Executor | None,
    pool: concurrent.futures.ThreadPoolExecutor | None,
    shards: list[Shard],
) -> None:
    """Commit what a collected cache still had queued, then end its threads and close its
    files, on a thread of its own: a finalizer must not block on a writer."""

    def close() -> None:
        if executor is not None:
            executor.stop()
        if pool is not None:
            pool.shutdown()
        for shard in shards:
            shard.close()

    if _EXITING or sys.is_finalizing():
        return  # _drain_at_exit has committed the queue; a thread started now never runs
    with contextlib.suppress(RuntimeError):  # "can't create new thread at shutdown"
        threading.Thread(target=close, name="shardcache-close").start()
