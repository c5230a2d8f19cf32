"""``AsyncCache``'s whole-cache operations: counting, sizing, statistics, iteration, the
sweeps over every shard (expired entries, a tag, everything), integrity checks and vacuum.

None of these is on the hot path: each visits every shard, mostly on the read pool. They live
in a mixin so that ``_cache.py`` keeps the point reads and writes; ``AsyncCache`` inherits
them unchanged, and defines everything they use (declared below for the type checker only).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
import zlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import _ops as ops
from . import _sql as sql
from ._errors import CacheClosedError, CacheCorruptError
from ._fork import GATE
from ._keys import decode_key
from ._maintenance import check_shards, vacuum_shards
from ._stampede import supersede_all
from ._types import MISS, CacheStats, CheckReport, ShardStats

if TYPE_CHECKING:
    import concurrent.futures

    from ._executor import Executor
    from ._shard import Row, Shard

__all__ = ["_WholeCache"]

T = TypeVar("T")

_CHUNK = 256  # keys per statement for bulk reads and iteration


class _WholeCache:
    """The whole-cache reads and maintenance of :class:`~shardcache.AsyncCache`."""

    if TYPE_CHECKING:
        # Defined by AsyncCache. Declared only while type checking: at run time nothing
        # here shadows AsyncCache's own attributes, and its lookups stay what they were.
        _ready: bool
        _n: int
        _shards: list[Shard]
        _executor: Executor | None
        _pool: concurrent.futures.ThreadPoolExecutor | None

        async def _ensure_open(self, timeout: float | None = None) -> None: ...
        def _release_now(self, kb: bytes, owner: str) -> None: ...
        async def _executor_write_direct(
            self, index: int, fn: Callable[..., Any], args: tuple[Any, ...], direct: bool = True
        ) -> Any: ...
        def _closed_error(self) -> CacheClosedError: ...
        async def _decode(self, shard: Shard, kb: bytes, row: Row, type: Any) -> Any: ...
        async def _on_every_shard(
            self, fn: Callable[..., Any], args: tuple[Any, ...] = ()
        ) -> int: ...

    def _own_counts(self) -> dict[str, int]:
        """This instance's counters since it opened (or the last reset)."""
        return {
            "hits": self._hits,
            "misses": self._misses,
            "sets": self._sets,
            "deletes": self._deletes,
            "evictions": sum(s.evictions for s in self._shards) - self._evictions0,
            "expirations": sum(s.expirations for s in self._shards) - self._expirations0,
            "stampede_waits": self._stampede_waits,
            "near_hits": self._near_hits,
        }

    def _reset_counters(self) -> None:
        self._hits = self._misses = self._sets = self._deletes = 0
        self._near_hits = self._stampede_waits = 0
        self._evictions0 = sum(s.evictions for s in self._shards)
        self._expirations0 = sum(s.expirations for s in self._shards)

    # -- whole-cache writes -------------------------------------------------------------
    async def evict(self, tag: str) -> int:
        """Delete every entry stored with ``tag``; the number of live entries removed."""
        if type(tag) is not str:
            raise TypeError(f"tag must be a str, not {type(tag).__name__}")
        supersede_all(
            self, tag, self._release_now
        )  # running computations that would store under the tag
        removed = await self._on_every_shard(ops.op_evict, (tag,))
        self._deletes += removed
        return removed

    async def expire(self) -> int:
        """Purge expired entries now; how many were removed."""
        return await self._on_every_shard(ops.op_expire)

    async def clear(self) -> int:
        """Delete everything; the number of live entries removed."""
        supersede_all(
            self, None, self._release_now
        )  # computations running now must not store over the clear
        removed = await self._on_every_shard(ops.op_clear)
        for shard in self._shards:
            shard.clear_near()
        return removed

    # -- whole-cache reads --------------------------------------------------------------
    async def _in_pool(self, fn: Callable[..., T], *args: Any) -> T:
        if not self._ready:
            await self._ensure_open()
        if self._pool is None:
            raise self._closed_error()
        return await asyncio.get_running_loop().run_in_executor(self._pool, _gated, fn, *args)

    async def count(self) -> int:
        """The number of live entries."""
        if not self._ready:
            await self._ensure_open()
        now = time.time()
        counts = [
            await self._in_pool(_fetch_one, shard, sql.COUNT_LIVE, (now,)) for shard in self._shards
        ]
        return sum(counts)

    async def volume(self) -> int:
        """Bytes the entries take: keys, values (value files included) and row overhead."""
        if not self._ready:
            await self._ensure_open()
        sizes = [await self._in_pool(_fetch_one, s, sql.VOLUME, ()) for s in self._shards]
        return sum(sizes)

    async def stats(self, *, reset: bool = False) -> CacheStats:
        """Counters and the cache's size. The counters are the totals saved by every closed
        instance on this directory (each adds its own when it closes) plus this instance's;
        ``reset=True`` zeroes both."""
        if not self._ready:
            await self._ensure_open()
        now = time.time()
        per_shard = []
        for shard in self._shards:
            count = await self._in_pool(_fetch_one, shard, sql.COUNT_LIVE, (now,))
            volume = await self._in_pool(_fetch_one, shard, sql.VOLUME, ())
            depth = self._executor.depth(shard.index) if self._executor else 0
            per_shard.append(ShardStats(shard.index, count, volume, depth))
        pattern = sql.STAT_PREFIX + "%"
        saved = dict(await self._in_pool(_fetch, self._shards[0], sql.SAVED_STATS, (pattern,)))
        counts = {
            name: n + int(saved.get(sql.STAT_PREFIX + name, 0))
            for name, n in self._own_counts().items()
        }
        result = CacheStats(
            **counts,
            count=sum(s.count for s in per_shard),
            volume=sum(s.volume for s in per_shard),
            shards=per_shard,
        )
        if reset:
            # This instance's first, before the await: counts made meanwhile belong to the
            # new period, not to none.
            self._reset_counters()
            # Take away what was read, not zero: a total another instance saves meanwhile
            # (it closed) must survive the reset.
            taken = [(name[len(sql.STAT_PREFIX) :], -int(n)) for name, n in saved.items() if n]
            if taken:
                await self._executor_write_direct(0, ops.op_add_stats, (taken,))
        return result

    async def keys(self) -> AsyncIterator[Any]:
        """Iterate over the live keys, shard by shard, in chunks (safe while writing)."""
        async for kb, _row in self._scan(sql.KEYS_AFTER):
            yield decode_key(kb)

    async def items(self) -> AsyncIterator[tuple[Any, Any]]:
        """Iterate over ``(key, value)`` pairs of live entries."""
        async for kb, row in self._scan(sql.ITEMS_AFTER):
            shard = self._shards[zlib.crc32(kb) % self._n]
            value = await self._decode(shard, kb, row, None)
            if value is not MISS:
                yield decode_key(kb), value

    async def _scan(self, stmt: str) -> AsyncIterator[tuple[bytes, Row]]:
        if not self._ready:
            await self._ensure_open()
        for shard in self._shards:
            after = b""
            while True:
                rows = await self._in_pool(_fetch, shard, stmt, [after, time.time(), _CHUNK])
                for key, *rest in rows:
                    yield key, (*rest, None, 0.0)
                if len(rows) < _CHUNK:
                    break
                after = rows[-1][0]

    # -- maintenance --------------------------------------------------------------------
    async def check(self, *, fix: bool = False) -> CheckReport:
        """Check integrity (SQLite, value files, size accounting); repair with ``fix=True``.

        With ``fix=True`` a shard file that cannot even be opened (garbage, not a shard) is
        rebuilt empty, as ``on_corrupt="reset"`` would: a cache is rebuildable data.
        """
        found: list[str] = []
        rebuilt: list[str] = []
        while not self._ready:
            try:
                await self._ensure_open()
            except CacheCorruptError as exc:
                if not fix or exc.path is None or len(rebuilt) >= self._n:
                    raise
                found.append(str(exc))
                await asyncio.get_running_loop().run_in_executor(None, _remove_shard, exc.path)
                rebuilt.append(f"{exc.path}: could not be opened; rebuilt empty")
        report = await self._in_pool(check_shards, self._shards, fix)
        report.problems[:0] = found
        report.fixed[:0] = rebuilt
        if fix:
            for shard in self._shards:
                shard.clear_near()
        return report

    async def vacuum(self) -> None:
        """Reclaim free space in every shard file (rewrites the files)."""
        if not self._ready:
            await self._ensure_open()
        await self._in_pool(vacuum_shards, self._shards)


def _remove_shard(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def _gated(fn: Callable[..., T], *args: Any) -> T:
    """``fn`` on a pool thread, never across a fork (_fork)."""
    with GATE:
        return fn(*args)


def _fetch(shard: Shard, stmt: str, params: Any) -> list[Any]:
    try:
        return shard.thread_reader().execute(stmt, params).fetchall()
    except sqlite3.DatabaseError as exc:
        raise shard._corrupt(exc) from exc


def _fetch_one(shard: Shard, stmt: str, params: Any) -> Any:
    return _fetch(shard, stmt, params)[0][0]
