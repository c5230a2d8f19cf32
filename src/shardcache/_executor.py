"""Queue -> batch -> one loop wake-up per batch: how writes reach the shards.

The facade never touches a thread or a transaction; it calls :meth:`Executor.write`. A write
that finds its writer idle runs at once on the loop thread (one short transaction on the
shard's direct connection, PERF.md: ~4x cheaper than a thread hop); if the shard is locked it
falls back to the queue. Queued writes wait in per-shard lists; the writer thread takes
*everything* queued as one batch, commits one transaction per touched shard, and hands the
results back with ONE ``call_soon_threadsafe`` per event loop, which resolves every future
of the batch. So at concurrency 64, one hop serves 64 writes.

One writer thread for all shards is the default: on 2 cores, threads per shard fight over
the GIL (PERF.md: 42.7k vs 55.9k SET/s). Checkpoints run on a separate thread so no commit a
caller waits for ever includes one.

A loop that runs Python without pause starves a writer thread of the GIL (it waits a
switch interval after every statement); when a flush runs late, batches commit on the loop
thread for a while instead ("busy mode", see ``_BUSY_LAG``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._errors import CacheError
from ._fork import GATE
from ._owner import LoopOwner
from ._shard import WAL_LIMIT, Op, Shard

_monotonic = time.monotonic
_get_ident = threading.get_ident

__all__ = ["Executor"]

_CHECKPOINT_EVERY = 16  # batches per shard between PASSIVE checkpoints
_IDLE_TRUNCATE = 2.0  # seconds without writes before the WAL is truncated
# How long a write waits for a shard that another process keeps locked.
LOCK_WAIT = 10.0
# A combined batch this small commits on the loop thread: one short transaction (~30 us)
# beats a thread hop (~100 us); larger ones go to the writer so the loop keeps serving.
_DIRECT_MAX = 4
# A loop that took longer than this to come round to a queued flush is running Python
# without pause. A writer thread would then wait for the GIL after every SQLite statement
# (CPython hands it over only every switch interval, 5 ms): a batch of 8 writes measured
# 350 ms at p50. For _BUSY_HOLD seconds after such a lag every batch commits on the loop
# thread instead, which holds the GIL already (~0.1 ms per 8-write transaction).
_BUSY_LAG = 0.005
_PER_WRITE = 5e-6  # of the caller's own work after queueing a write, allowed for
_BUSY_HOLD = 1.0


def _resolve(ops: Sequence[Op]) -> None:
    for op in ops:
        future = op.future
        # A caller that was cancelled meanwhile has a done future: never raise here.
        if not future.done():
            result = op.result
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


class _Worker(threading.Thread):
    """One writer thread: drains the queued writes of its shards batch by batch."""

    def __init__(
        self,
        shards: dict[int, Shard],
        checkpointer: _Checkpointer,
        name: str,
        syncer: _Syncer | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.shards = shards
        self.checkpointer = checkpointer
        self.syncer = syncer
        self.cond = threading.Condition(threading.Lock())
        self.pending: dict[int, list[Op]] = {}
        self.inflight: frozenset[int] = frozenset()  # shards of the batch being committed
        self.busy = False
        self.closing = False

    def submit(self, index: int, ops: list[Op]) -> None:
        with self.cond:
            queue = self.pending.get(index)
            if queue is None:
                self.pending[index] = ops
            else:
                queue.extend(ops)
            if not self.busy:
                self.cond.notify()

    def depth(self, index: int) -> int:
        return len(self.pending.get(index, ()))

    def run(self) -> None:
        while True:
            with self.cond:
                self.busy = False
                self.inflight = frozenset()
                while not self.pending and not self.closing:
                    self.cond.wait()
                if not self.pending:
                    return
                batch, self.pending = self.pending, {}
                self.inflight = frozenset(batch)
                self.busy = True
            self._round(batch)
            # The ops hold their encoded values: none may outlive its round while this
            # thread waits for the next one (a 50 MB download would stay in memory).
            del batch

    def _round(self, batch: dict[int, list[Op]]) -> None:
        """Commit one batch, shard by shard, and answer its callers."""
        done: list[Op] = []
        committed_ops: dict[Shard, list[Op]] = {}
        retry: dict[int, list[Op]] = {}
        for index, ops in batch.items():
            # A caller cancelled before its write began: skip it, so a cancelled write
            # either fully happened or not at all.
            live = [op for op in ops if not op.future.cancelled()]
            if not live:
                continue
            shard = self.shards[index]
            assert shard.writer is not None
            try:
                committed = shard.run_batch(shard.writer, live, requeue_busy=True)
            except BaseException as exc:  # never let the writer thread die
                shard._fail_all(live, exc)
                committed = True
            if committed:
                done.extend(live)
                committed_ops[shard] = live
                self.checkpointer.wrote(shard)
                continue
            # Locked by another process: let the other shards' writes go first, retry
            # this one on the next round, and give up after LOCK_WAIT.
            now = time.monotonic()
            expired = [op for op in live if op.deadline and now > op.deadline]
            for op in live:
                op.deadline = op.deadline or now + LOCK_WAIT
            if expired:
                shard._fail_all(expired, sqlite3.OperationalError("database is locked"))
                done.extend(expired)
            retry[index] = [op for op in live if op not in expired]
        if self.syncer is not None and committed_ops:
            self.syncer.sync(committed_ops)
        with self.cond:
            # Before the answers go out: a write they lead to may then commit directly
            # on the loop thread, and must find an older retried write still queued.
            for index, ops in retry.items():
                self.pending[index] = ops + self.pending.get(index, [])
            self.inflight = frozenset()
        _dispatch(done)
        self._restart_long_wals(batch)

    def _restart_long_wals(self, batch: dict[int, list[Op]]) -> None:
        """Restart a shard's WAL once it passes WAL_LIMIT, here between batches.

        The checkpointer thread tries too, but under a steady stream of batches this
        thread re-takes the write lock before the checkpointer's busy handler wakes up, so
        the log would grow without bound. Here nothing of ours holds the lock, and the
        callers of the batch were already answered.
        """
        for index in batch:
            shard = self.shards[index]
            if shard.writer is not None:
                _restart_long_wal(shard, shard.writer)


class _Syncer:
    """durability="full": one fdatasync per WAL a round of commits touched, all at once.

    SQLite's FULL fsyncs inside each COMMIT, so a round over 8 shards waits on 8 fsyncs one
    after the other (or, with a writer thread per shard, commits batches half as large).
    The writer commits at NORMAL instead and, before any caller of the round is answered,
    flushes every touched WAL in parallel (the file system merges concurrent flushes into
    one journal commit): the same guarantee at acknowledgment. Flushing each WAL as soon
    as its shard committed, beside the next transactions, measured slower: appends to one
    WAL then queue behind the journal commit of another's flush.
    """

    def __init__(self, shards: int, name: str) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, shards - 1), name)

    def sync(self, committed: dict[Shard, list[Op]]) -> None:
        shards = list(committed)
        futures = [self.pool.submit(shard.sync_wal) for shard in shards[1:]]
        errors: list[BaseException | None] = [None]
        try:
            shards[0].sync_wal()  # one on this thread: a single shard needs no hop
        except OSError as exc:
            errors[0] = exc
        errors.extend(future.exception() for future in futures)
        for shard, failure in zip(shards, errors, strict=True):
            if failure is None:
                continue
            error = CacheError(f"cannot make writes to {shard.path} durable: {failure}")
            error.__cause__ = failure
            for op in committed[shard]:
                op.result = error

    def stop(self) -> None:
        self.pool.shutdown(wait=True)


def _restart_long_wal(shard: Shard, conn: sqlite3.Connection) -> None:
    """Every _CHECKPOINT_EVERY batches, restart the shard's WAL once it passed WAL_LIMIT,
    on the connection that has just committed (nothing of ours holds the lock now)."""
    if shard.batches % _CHECKPOINT_EVERY or _wal_size(shard) <= WAL_LIMIT:
        return
    with GATE, contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()


def _wal_size(shard: Shard) -> int:
    try:
        return os.stat(f"{shard.path}-wal").st_size
    except OSError:
        return 0


def _dispatch(ops: list[Op]) -> None:
    """One hand-off per event loop for the whole batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Op]] = {}
    for op in ops:
        by_loop.setdefault(op.future.get_loop(), []).append(op)
    for loop, loop_ops in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_resolve, loop_ops)


class _Checkpointer(threading.Thread):
    """PASSIVE checkpoints while writes flow, TRUNCATE once the shard goes idle."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.cond = threading.Condition(threading.Lock())
        self.due: set[Shard] = set()
        self.idle: set[Shard] = set()
        self.closing = False
        self._conns: dict[int, sqlite3.Connection] = {}

    def wrote(self, shard: Shard) -> None:
        shard.last_write = time.monotonic()
        if shard.batches % _CHECKPOINT_EVERY == 0:
            with self.cond:
                self.due.add(shard)
                self.cond.notify()
        elif shard not in self.idle:
            with self.cond:
                self.idle.add(shard)
                self.cond.notify()  # arms the idle timer below

    def run(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.due and not self.closing:
                        if not self.idle:
                            self.cond.wait()
                            continue
                        # Not polling: it sleeps until poked, or until the most recently
                        # written idle candidate has been quiet for _IDLE_TRUNCATE seconds.
                        now = time.monotonic()
                        quiet = {s for s in self.idle if now - s.last_write >= _IDLE_TRUNCATE}
                        if quiet:
                            self.idle -= quiet
                            break
                        newest = max(s.last_write for s in self.idle)
                        self.cond.wait(_IDLE_TRUNCATE - (now - newest) + 0.01)
                    else:
                        quiet = set()
                    if self.closing:
                        return
                    due, self.due = self.due, set()
                for shard in due:
                    self._checkpoint(shard, "PASSIVE")
                for shard in quiet:
                    self._checkpoint(shard, "TRUNCATE")
        finally:
            for conn in self._conns.values():
                with contextlib.suppress(sqlite3.Error):
                    conn.close()

    def _checkpoint(self, shard: Shard, mode: str) -> None:
        with GATE:  # no fork in the middle of a checkpoint (_fork)
            self._checkpoint_now(shard, mode)

    def _checkpoint_now(self, shard: Shard, mode: str) -> None:
        conn = self._conns.get(shard.index)
        try:
            if conn is None:
                conn = sqlite3.connect(shard.path, isolation_level=None, check_same_thread=False)
                conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
                self._conns[shard.index] = conn
            if mode == "PASSIVE" and _wal_size(shard) > WAL_LIMIT:
                # Under steady writes a PASSIVE checkpoint never catches the log's end, so
                # the WAL would grow without bound: RESTART waits (briefly) for the writer
                # and readers, so that the next commit starts the log over.
                mode = "RESTART"
            conn.execute(f"PRAGMA busy_timeout = {200 if mode != 'PASSIVE' else 0}")
            conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        except sqlite3.Error:
            pass  # busy or closing: the next checkpoint catches up; never a caller's problem

    def stop(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify()


class Executor:
    """Runs write operations on shards: directly when idle, else batched on a writer thread."""

    def __init__(
        self,
        shards: Sequence[Shard],
        *,
        threads: int,
        direct: bool,
        name: str,
        sync_wal: bool = False,
        owner: LoopOwner | None = None,
    ) -> None:
        self.shards = shards
        self.direct = direct
        # The loop whose thread may commit on the shards' direct connections (_owner).
        self.owner = LoopOwner() if owner is None else owner
        self.checkpointer = _Checkpointer(f"{name}-checkpoint")
        threads = max(1, min(threads, len(shards)))
        self.syncer = _Syncer(len(shards), f"{name}-sync") if sync_wal else None
        self.workers = [
            _Worker(
                {s.index: s for s in shards if s.index % threads == t},
                self.checkpointer,
                f"{name}-writer-{t}",
                self.syncer,
            )
            for t in range(threads)
        ]
        self._route = [self.workers[i % threads] for i in range(len(shards))]
        self._combining: dict[asyncio.AbstractEventLoop, list[Op]] = {}
        self._queued_at: dict[asyncio.AbstractEventLoop, float] = {}
        self._busy_until = 0.0  # until then every batch commits on the loop thread
        self.direct_batches = 0  # batches committed on the loop thread (for tests)
        for worker in self.workers:
            worker.start()
        self.checkpointer.start()

    def submit(
        self, index: int, fn: Callable[..., Any], args: tuple[Any, ...], *, direct: bool = True
    ) -> asyncio.Future[Any]:
        """Queue ``fn(shard, cursor, batch, *args)`` for shard ``index``; the future resolves
        once its transaction committed.

        Writes issued in the same loop iteration are combined: the first one schedules a
        flush with ``call_soon``, and the flush sees every write the other ready tasks added
        meanwhile. A small combined batch runs right on the loop thread (no hop); a larger
        one goes to the writer thread, which releases the GIL while SQLite works.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        op = Op(fn, args, future, index, direct)
        combining = self._combining.get(loop)
        if combining is None:
            self._combining[loop] = [op]
            loop.call_soon(self._flush, loop)
        else:
            combining.append(op)
        # When the last write of the round was queued: the flush's lateness from here is the
        # loop's (other callbacks), not the caller's own work (a set_many of 10k encodes).
        self._queued_at[loop] = _monotonic()
        return future

    def write(
        self, index: int, fn: Callable[..., Any], args: tuple[Any, ...], *, direct: bool = True
    ) -> asyncio.Future[Any]:
        """Alias of :meth:`submit` for the single-write call sites (``await executor.write``)."""
        return self.submit(index, fn, args, direct=direct)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        now = _monotonic()
        ops = [op for op in self._combining.pop(loop, ()) if not op.future.cancelled()]
        # The caller may still have had work per write after queueing the last one
        # (gather() hooks every future): allowed for, so that a set_many of 20k keys from
        # an idle loop is not taken for a congested loop.
        if now - self._queued_at.pop(loop, now) > _BUSY_LAG + _PER_WRITE * len(ops):
            self._busy_until = now + _BUSY_HOLD
        by_shard: dict[int, list[Op]] = {}
        for op in ops:
            by_shard.setdefault(op.index, []).append(op)
        busy = now < self._busy_until
        # durability="full" never commits here, except in busy mode: then the round's WALs
        # are flushed right here, in parallel, before anyone is answered (the writer's rule).
        direct = (self.direct and (len(ops) <= _DIRECT_MAX or busy)) or (
            busy and self.syncer is not None
        )
        # Another thread's loop uses the direct connections: this one's go to the writer.
        owner = self.owner
        direct = direct and (_get_ident() == owner.ident or owner.mine())
        flushing: dict[Shard, list[Op]] = {}
        for index, shard_ops in by_shard.items():
            worker = self._route[index]
            # Direct only when nothing of this shard is queued or in flight: order holds.
            if (
                direct
                and index not in worker.inflight
                and index not in worker.pending
                and all(op.direct for op in shard_ops)
            ):
                shard = self.shards[index]
                assert shard.direct is not None
                if shard.run_batch(shard.direct, shard_ops, requeue_busy=True):
                    if self.syncer is None:
                        _resolve(shard_ops)
                    else:
                        flushing[shard] = shard_ops
                    self.direct_batches += 1
                    self.checkpointer.wrote(shard)
                    if busy:  # the writer thread, which restarts long WALs, idles now
                        _restart_long_wal(shard, shard.direct)
                    continue
            worker.submit(index, shard_ops)
        if flushing:
            assert self.syncer is not None
            self.syncer.sync(flushing)  # blocks the loop for one parallel fdatasync
            for shard_ops in flushing.values():
                _resolve(shard_ops)

    def depth(self, index: int) -> int:
        """Writes queued for shard ``index``."""
        return self._route[index].depth(index)

    def stop(self) -> None:
        """Let the writers finish what is queued, then end every thread (blocking)."""
        for worker in self.workers:
            with worker.cond:
                worker.closing = True
                worker.cond.notify()
        for worker in self.workers:
            worker.join()
        if self.syncer is not None:
            self.syncer.stop()
        self.checkpointer.stop()
        self.checkpointer.join()
