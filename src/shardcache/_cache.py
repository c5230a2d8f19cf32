"""``AsyncCache``: the public facade. No SQL and no threads here: keys and values are encoded
on the loop, reads go to the shard's loop-owned connection (through the near cache), writes
go to the executor. Off the hot path, the rest is inherited: opening and closing from
``_cache_life``, the whole-cache reads and maintenance (``count``, ``stats``, ``keys``,
``check``, ``vacuum``...) from ``_cache_admin``, and the single-key atomic operations and
stampede primitives (``add``, ``pop``, ``incr``, leases, ``get_or_set``) from
``_cache_atomic``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar, overload

import msgspec

from . import _ops as ops
from . import _sql as sql
from ._cache_admin import _CHUNK, _fetch, _gated, _WholeCache
from ._cache_atomic import _AtomicOps
from ._cache_life import _NEW, _OPEN, _Lifecycle
from ._codec import Codec, Compressor, InvalidSignature, Serializer, TypeMismatch, check_type
from ._errors import SerializationError, observed
from ._executor import Executor
from ._keys import encode_key
from ._near import IMMUTABLE
from ._options import Durability, Eviction, OnCorrupt, Options, check_ttl, expire_at
from ._owner import LoopOwner
from ._shard import SLOW_READ, SLOW_READ_BACKOFF, Row, Shard, _is_busy
from ._stampede import _flights, supersede
from ._types import DEFAULT, MISS, NOT_NOW, TTL, Entry, Key

__all__ = ["AsyncCache"]

logger = logging.getLogger("shardcache")
T = TypeVar("T")
D = TypeVar("D")  # get()'s default
C = TypeVar("C", bound="AsyncCache")  # a subclass, for ``async with``

_time = time.time
_crc32 = zlib.crc32
_get_ident = threading.get_ident
# What the fast msgpack decode raises for bytes it cannot read: the codec then decides
# (a miss for undecodable bytes). RecursionError too: a value nested deeper than the stack
# left at this call, or planted bytes that nest without end.
_UNDECODABLE = (msgspec.DecodeError, RecursionError, TypeError, ValueError)
_OFFLOAD: Final = object()  # "this read must go to a thread"
_ACCESS_FLUSH = 4096  # buffered LRU/LFU accesses that force a flush without a write


def _check_many(name: str, keys: object) -> None:
    """A single str or bytes key passed where an iterable of keys goes would be read as
    its characters (or byte values): each a valid key, so nothing else would catch it."""
    if isinstance(keys, (str, bytes, bytearray)):
        raise TypeError(f"{name}() takes an iterable of keys, not one {type(keys).__name__}")


class AsyncCache(_Lifecycle, _AtomicOps, _WholeCache):
    """A persistent async cache on SQLite shards, shared by every process that opens it.

    Example::

        cache = AsyncCache("/tmp/mycache", default_ttl=300)
        async with cache:
            await cache.set("user:1", {"name": "Ada"}, ttl=60)
            assert await cache.get("user:1") == {"name": "Ada"}

    See ``docs/`` and API.md section 1 for every option. Keys are ``str``, ``bytes``,
    ``int``, ``float`` or tuples of these; values round-trip with their type.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        shards: int = 8,
        size_limit: int | None = 2**30,
        eviction: Eviction = "least-recently-stored",
        default_ttl: float | None = None,
        serializer: str | Serializer = "msgpack",
        compression: str | Compressor | None = None,
        compress_min_size: int = 1024,
        min_file_size: int = 64 * 2**10,
        durability: Durability = "normal",
        near_cache: int = 32 * 2**20,
        on_corrupt: OnCorrupt = "raise",
        secret: bytes | str | None = None,
        writer_threads: int | None = None,
    ) -> None:
        self._options = options = Options.build(
            directory,
            shards=shards,
            size_limit=size_limit,
            eviction=eviction,
            default_ttl=default_ttl,
            compress_min_size=compress_min_size,
            min_file_size=min_file_size,
            durability=durability,
            near_cache=near_cache,
            on_corrupt=on_corrupt,
            writer_threads=writer_threads,
        )
        # What a pickled copy is built from (__reduce__): the resolved directory, so that
        # a process with another $SHARDCACHE_DIR still opens these files.
        self._arguments: dict[str, Any] = {
            "directory": options.directory,
            "shards": shards,
            "size_limit": size_limit,
            "eviction": eviction,
            "default_ttl": default_ttl,
            "serializer": serializer,
            "compression": compression,
            "compress_min_size": compress_min_size,
            "min_file_size": min_file_size,
            "durability": durability,
            "near_cache": near_cache,
            "on_corrupt": on_corrupt,
            "secret": secret,
            "writer_threads": writer_threads,
        }
        self._codec = Codec(
            serializer,
            compression=compression,
            compress_min_size=options.compress_min_size,
            secret=secret,
        )
        self._n = options.shards
        self._default_ttl = options.default_ttl
        self._min_file = options.min_file_size
        self._near_on = options.near_cache > 0
        self._get_sql = sql.GET if self._near_on else sql.GET_VALUE
        self._fast = self._codec.fast
        self._fast_decode = self._codec.msgpack_decode
        self._state = _NEW
        self._ready = False  # True only while open in the process that opened it
        self._pid = os.getpid()
        self._shards: list[Shard] = []
        self._executor: Executor | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._owner = LoopOwner()  # the loop whose thread uses the connections (_owner)
        self._open_lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        # The delete of a misfit a task just read, by that task: get(type=) awaits its own
        # (loops in other threads may share this instance, each with its own tasks).
        self._dropping: dict[asyncio.Task[Any] | None, asyncio.Task[None]] = {}
        self._closing: asyncio.Future[None] | None = None
        self._counts_saved = False  # stats() counters added to the directory's at close
        self._opening: asyncio.Future[None] | None = None  # the open in progress, shared
        self._reset_counters()

    @property
    def directory(self) -> Path:
        """The cache directory."""
        return self._options.directory

    def __repr__(self) -> str:
        return f"AsyncCache({str(self.directory)!r}, shards={self._n}, state={self._state})"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its directory and options, as ``diskcache.Cache`` is: the copy (in a
        process started with ``spawn``, say) is a new cache on the same files, opened at
        its first operation. A custom serializer or compressor must pickle too; ``secret``
        travels in the pickle."""
        return (_reopen, (type(self), self._arguments))

    # -- lifecycle ----------------------------------------------------------------------
    async def open(self) -> None:
        """Open (or create) the cache now instead of at the first operation."""
        if not self._ready:
            await self._ensure_open()

    async def __aenter__(self: C) -> C:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- reads --------------------------------------------------------------------------
    async def _routed(self, key: Any) -> tuple[bytes, Shard]:
        """:meth:`_route`, opening the cache first if needed, after the key was checked:
        a bad key raises before the directory is created."""
        kb = encode_key(key)
        if not self._ready:
            await self._ensure_open()
        return kb, self._shards[zlib.crc32(kb) % self._n]

    def _route(self, key: Any) -> tuple[bytes, Shard]:
        kb = encode_key(key)
        return kb, self._shards[zlib.crc32(kb) % self._n]

    def _local(self, shard: Shard, kb: bytes, now: float, stmt: str = sql.GET) -> Any:
        """The row of ``kb`` read on the loop thread: near cache, then SQLite (guarded).

        With the near cache off, ``get`` passes the 4-column statement (a measured ~7% of a
        point read); rows from it end at ``file``.
        """
        if self._near_on and shard.near_valid():
            # Nothing changed since the last sync: the near cache answers without SQLite,
            # even while the shard's SQLite reads are sent to a thread.
            row = shard.near.get(kb)
            if row is not None:
                self._near_hits += 1
                return row
            if now < shard.offload_until:
                return _OFFLOAD
        elif now < shard.offload_until:
            return _OFFLOAD
        owner = self._owner
        if _get_ident() != owner.ident and not owner.mine():
            return _OFFLOAD  # another thread's loop uses this connection: the read pool
        cursor = shard.cursor
        assert cursor is not None
        try:
            if self._near_on:
                shard.sync_near()
                row = shard.near.get(kb)
                if row is not None:
                    self._near_hits += 1
                    return row
            rows = cursor.execute(stmt, (kb,)).fetchall()
            shard.reads += 1
            if _time() - now > SLOW_READ:
                shard.slow_read(now)
        except sqlite3.OperationalError as exc:
            if _is_busy(exc):
                shard.offload_until = now + SLOW_READ_BACKOFF
                shard.clear_near()
                return _OFFLOAD
            raise shard._corrupt(exc) from exc
        except sqlite3.DatabaseError as exc:
            raise shard._corrupt(exc) from exc
        if not rows:
            return None
        found: Row = rows[0]
        if self._near_on and type(found[0]) is bytes:
            shard.remember(kb, found)
        return found

    async def _row(self, shard: Shard, kb: bytes, now: float) -> Row | None:
        row = self._local(shard, kb, now)
        if row is _OFFLOAD:
            if self._pool is None:
                raise self._closed_error()
            loop = asyncio.get_running_loop()
            rows = await loop.run_in_executor(self._pool, shard.read_in_thread, kb)
            # Not remembered in the near cache: the loop may have synced past this read.
            return rows[0] if rows else None
        return row  # type: ignore[no-any-return]

    async def _decode(self, shard: Shard, kb: bytes, row: Row, type: Any) -> Any:
        """Like :meth:`_value`, reading a value file (>= min_file_size) on the read pool
        instead of the loop thread."""
        file = row[3]
        if file is None:
            return self._value(shard, kb, row, type)
        if self._pool is None:
            raise self._closed_error()
        loop = asyncio.get_running_loop()
        blob = await loop.run_in_executor(self._pool, shard.read_file, file)
        if blob is None:
            # The file vanished: either a writer replaced the row since we read it (read
            # the row again and use what is there now), or a crash lost it (a miss, and the
            # row is repaired, but only if it still points to that file).
            rows = await loop.run_in_executor(self._pool, shard.read_in_thread, kb)
            if rows and rows[0][3] != file:
                return await self._decode(shard, kb, rows[0], type)
            self._spawn(self._executor_write(shard.index, ops.op_drop_missing_file, (kb, file)))
            return MISS
        return self._value(shard, kb, (blob, row[1], row[2], None, None, 0.0), type, file)

    def _value(self, shard: Shard, kb: bytes, row: Row, type: Any, file: str | None = None) -> Any:
        """Decode a row's value; MISSING when it reads as a miss (tampered, gone, misfit)."""
        blob, fmt = row[0], row[1]
        assert row[3] is None, "value files are read by _decode"
        if fmt == 0 and type is None and self._fast:
            try:
                return self._fast_decode(blob)
            except _UNDECODABLE:
                pass  # let the codec decide what this is
        try:
            return self._codec.decode(blob, fmt, kb, type)
        except InvalidSignature:
            return MISS
        except TypeMismatch:
            shard.forget(kb)
            misfit = (kb, None if file else blob, file)
            # Started here (this path has no await); get() awaits it before it returns.
            reader = asyncio.current_task()
            drop = self._spawn(self._executor_write(shard.index, ops.op_drop_misfit, misfit))
            self._dropping[reader] = drop
            # Forgotten once done: a reader that never awaits it (get_entry) leaves nothing.
            drop.add_done_callback(functools.partial(_forget_drop, self._dropping, reader))
            return MISS
        except SerializationError:
            logger.warning(
                "undecodable entry in %s%s treated as a miss",
                shard.path,
                f" (value file {shard.values_dir / file})" if file else "",
            )
            return MISS

    async def _executor_write(
        self, index: int, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> Any:
        executor = self._executor
        if executor is None or self._state is not _OPEN:
            raise self._closed_error()
        return await executor.write(index, fn, args)

    @overload
    async def get(self, key: Key, default: Any = None, *, type: None = None) -> Any: ...
    @overload
    async def get(self, key: Key, default: None = None, *, type: type[T]) -> T | None: ...
    @overload
    async def get(self, key: Key, default: D, *, type: type[T]) -> T | D: ...
    @overload  # a type form that is not a class: ``User | None``, ``Literal["a"]``...
    async def get(self, key: Key, default: Any = None, *, type: object) -> Any: ...

    async def get(self, key: Key, default: Any = None, *, type: Any = None) -> Any:
        """The value of ``key``, or ``default`` when it is missing or expired.

        With ``type=``, decode into that type (Struct, dataclass, ``list[Struct]``...); a
        stored value that no longer fits counts as a miss and is deleted.
        """
        if type is not None:
            check_type(type)  # a bad type= raises on a miss too, not only on a hit
        if self._ready:
            kb = encode_key(key)  # _peek, inlined: one call less on every hit
            value = self._peek_at(kb, _crc32(kb) % self._n, default, type)
            if value is not NOT_NOW:
                if type is not None and self._dropping:
                    await self._dropped()
                return value
        else:
            encode_key(key)  # a bad key raises before the directory is created
            await self._ensure_open()
        value = await self._get_slow(key, default, type)
        if type is not None and self._dropping:
            await self._dropped()
        return value

    async def _dropped(self) -> None:
        """Wait for the delete of a misfit this task just read: once ``get(type=)`` has
        answered a miss for it, ``has()`` and a plain ``get()`` see it gone too."""
        task = self._dropping.pop(asyncio.current_task(), None)
        if task is not None:
            # Shielded: a caller cancelled here must not cancel the delete (logged if it fails).
            await asyncio.shield(task)

    def _peek(self, key: Any, default: Any, type: Any) -> Any:
        """``get`` without an await, or ``NOT_NOW`` when it needs one (not open yet, reads
        sent to a thread, a value file)."""
        return self._peek_at(*self._locate(key), default, type)

    def _locate(self, key: Any) -> tuple[bytes, int]:
        """The encoded key and the shard index that ``_peek_at`` takes. Both are fixed for
        the life of this object, so ``@acached`` computes them once per argument tuple."""
        kb = encode_key(key)
        return kb, _crc32(kb) % self._n

    def _peek_at(self, kb: bytes, index: int, default: Any, type: Any) -> Any:
        """``_peek`` of a key already encoded and routed (``_locate``). The hot path of
        ``get`` and ``@acached``, kept flat on purpose."""
        if not self._ready:
            return NOT_NOW
        shard = self._shards[index]
        now = _time()
        if self._near_on and shard.near_valid():
            # _local's first step, inlined: a near-cache hit is most of the calls here.
            row = shard.near.get(kb)
            if row is not None:
                self._near_hits += 1
                return self._settle(shard, kb, row, now, default, type)
        row = self._local(shard, kb, now, self._get_sql)
        if row is _OFFLOAD:
            return NOT_NOW
        return self._settle(shard, kb, row, now, default, type)

    def _settle(
        self, shard: Shard, kb: bytes, row: Row | None, now: float, default: Any, type: Any
    ) -> Any:
        """What ``get`` returns for ``row``, counted as a hit or a miss; ``NOT_NOW`` for a
        row whose value lives in a file (read off the loop thread by ``_get_slow``)."""
        if row is not None:
            expire = row[2]
            if expire is None or expire > now:
                if row[3] is not None:
                    return NOT_NOW
                if type is not None:
                    value = self._value(shard, kb, row, type)
                elif (kept := shard.near_values.get(kb)) is not None and kept[0] is row:
                    value = kept[1]  # immutable, decoded from this very row: no decode
                else:
                    if row[1] == 0 and self._fast:
                        try:
                            value = self._fast_decode(row[0])
                        except _UNDECODABLE:
                            value = self._value(shard, kb, row, type)
                    else:
                        value = self._value(shard, kb, row, type)
                    if value.__class__ in IMMUTABLE:
                        shard.remember_value(kb, row, value)
                if value is not MISS:
                    self._hits += 1
                    if shard.track_access:
                        self._touch_access(shard, kb, now)
                    return value
        self._misses += 1
        return default

    async def _get_slow(self, key: Any, default: Any, type: Any) -> Any:
        """``get`` for what ``_peek`` could not settle: a first open, offloaded reads,
        value files."""
        kb = encode_key(key)
        shard = self._shards[_crc32(kb) % self._n]
        now = _time()
        row = await self._row(shard, kb, now)
        value = self._settle(shard, kb, row, now, default, type)
        if value is not NOT_NOW:
            return value
        assert row is not None
        value = await self._decode(shard, kb, row, type)  # a value file, on the read pool
        if value is MISS:
            self._misses += 1
            return default
        self._hits += 1
        if shard.track_access:
            self._touch_access(shard, kb, now)
        return value

    def _touch_access(self, shard: Shard, kb: bytes, now: float) -> None:
        # LRU/LFU: reads stay reads; the writer folds these into its next batch.
        access = shard.access
        access[kb] = access.get(kb, 0) + 1
        shard.access_time = now
        if len(access) >= _ACCESS_FLUSH and self._executor is not None:
            self._spawn(self._executor.write(shard.index, ops.op_flush, (), direct=False))

    async def get_entry(self, key: Key, *, type: Any = None) -> Entry | None:
        """The value with its expiry; also an expired one still inside its ``stale_ttl``."""
        if type is not None:
            check_type(type)
        kb = encode_key(key)
        if not self._ready:
            await self._ensure_open()
        shard = self._shards[_crc32(kb) % self._n]
        now = _time()
        row = self._local(shard, kb, now)
        if row is _OFFLOAD:
            row = await self._row(shard, kb, now)
        if row is None:
            return None
        expire, purge = row[2], row[4]
        if expire is not None and expire <= now and (purge is None or purge <= now):
            return None
        if shard.track_access:
            self._touch_access(shard, kb, now)
        if row[1] == 0 and row[3] is None and type is None and self._fast:
            try:
                return Entry(self._fast_decode(row[0]), expire, row[5])
            except _UNDECODABLE:
                pass
        value = await self._decode(shard, kb, row, type)
        if value is MISS:
            return None
        return Entry(value, expire, row[5])

    async def has(self, key: Key) -> bool:
        """True if ``key`` holds a live entry."""
        return await self.get(key, MISS) is not MISS

    async def ttl(self, key: Key) -> float | None:
        """Seconds left before ``key`` expires; ``None`` if never; ``KeyError`` if missing."""
        kb, shard = await self._routed(key)
        now = time.time()
        row = await self._row(shard, kb, now)
        if row is None or (row[2] is not None and row[2] <= now):
            raise KeyError(key)
        return None if row[2] is None else row[2] - now

    async def get_many(self, keys: Iterable[Key]) -> dict[Any, Any]:
        """A dict of the live entries among ``keys`` (misses are absent)."""
        _check_many("get_many", keys)
        wanted: dict[bytes, Any] = {}
        for key in keys:
            wanted[encode_key(key)] = key
        if not self._ready:
            await self._ensure_open()
        by_shard: dict[int, list[bytes]] = {}
        for kb in wanted:
            by_shard.setdefault(zlib.crc32(kb) % self._n, []).append(kb)
        now = time.time()
        found: dict[Any, Any] = {}
        for index, kbs in by_shard.items():
            shard = self._shards[index]
            rows = await self._rows_many(shard, kbs, now)
            for kb, row in rows.items():
                if row[2] is None or row[2] > now:
                    value = await self._decode(shard, kb, row, None)
                    if value is not MISS:
                        found[wanted[kb]] = value
                        if shard.track_access:
                            self._touch_access(shard, kb, now)
        self._hits += len(found)
        self._misses += len(wanted) - len(found)
        return found

    async def _rows_many(self, shard: Shard, kbs: list[bytes], now: float) -> dict[bytes, Row]:
        rows: dict[bytes, Row] = {}
        if self._near_on and now >= shard.offload_until and self._owner.mine():
            with contextlib.suppress(sqlite3.OperationalError):
                shard.sync_near()
                for kb in kbs:
                    row = shard.near.get(kb)
                    if row is not None:
                        rows[kb] = row
        rest = [kb for kb in kbs if kb not in rows]
        loop = asyncio.get_running_loop()
        for start in range(0, len(rest), _CHUNK):
            chunk = rest[start : start + _CHUNK]
            stmt = sql.GET_MANY.format(",".join("?" * len(chunk)))
            if self._pool is None:
                raise self._closed_error()
            result = await loop.run_in_executor(self._pool, _gated, _fetch, shard, stmt, chunk)
            for key, *row in result:
                rows[key] = tuple(row)
        return rows

    # -- writes -------------------------------------------------------------------------
    def _encode(
        self, key: Any, value: Any, ttl: Any, tag: Any, stale_ttl: Any, now: float
    ) -> tuple[int, tuple[Any, ...], bool]:
        kb = encode_key(key)
        if ttl is DEFAULT and self._default_ttl is None:
            expire = None
        else:
            expire = expire_at(ttl, self._default_ttl, now)
        if stale_ttl:
            stale = check_ttl(stale_ttl, "stale_ttl")
            purge = None if expire is None or stale is None else expire + stale
        else:
            purge = expire
        if tag is not None and type(tag) is not str:
            raise TypeError(f"tag must be a str or None, not {type(tag).__name__}")
        blob, fmt = self._codec.encode(value, kb)
        to_file = len(blob) > self._min_file
        return zlib.crc32(kb) % self._n, (kb, blob, fmt, expire, purge, tag, to_file), to_file

    async def set(
        self,
        key: Key,
        value: Any,
        *,
        ttl: TTL = DEFAULT,
        tag: str | None = None,
        stale_ttl: float = 0,
    ) -> None:
        """Store ``value``; returns once the write is committed (durable per ``durability``).

        ``ttl`` in seconds (``None``: never expires; omitted: ``default_ttl``). ``stale_ttl``
        keeps the entry that long past its expiry for ``get_entry``/``get_or_set``.
        """
        # Encoded (and checked) first: bad input raises before the directory is created.
        index, args, to_file = self._encode(key, value, ttl, tag, stale_ttl, time.time())
        if not self._ready:
            await self._ensure_open()
        executor = self._executor
        if executor is None:  # closed while this call waited for the open to finish
            raise self._closed_error()
        if _flights:  # a computation of this key that began before must not overwrite it
            supersede(self, args[0], self._release_now)
        await executor.write(index, ops.op_set, args, direct=not to_file)
        self._sets += 1

    def _release_now(self, kb: bytes, owner: str) -> None:
        """Queue the release of a superseded computation's lease (``_stampede.supersede``)
        ahead of the write that superseded it: same shard, so the same batch or an earlier
        one, and the lease is gone once that write has committed."""
        executor = self._executor
        if executor is not None:
            future = executor.submit(_crc32(kb) % self._n, ops.op_release, (kb, owner))
            future.add_done_callback(observed)  # best effort: the lease expires anyway

    async def _executor_write_direct(
        self, index: int, fn: Callable[..., Any], args: tuple[Any, ...], direct: bool = True
    ) -> Any:
        executor = self._executor
        if executor is None:
            raise self._closed_error()
        return await executor.write(index, fn, args, direct=direct)

    async def delete(self, key: Key) -> bool:
        """Delete ``key``; True if a live entry was removed."""
        kb, shard = await self._routed(key)
        if _flights:
            supersede(self, kb, self._release_now)
        deleted: bool = await self._executor_write_direct(shard.index, ops.op_delete, (kb,))
        if deleted:
            self._deletes += 1
        return deleted

    async def set_many(
        self, mapping: Mapping[Any, Any], *, ttl: TTL = DEFAULT, tag: str | None = None
    ) -> None:
        """Store every item; all are encoded (and checked) before anything is written."""
        if not isinstance(mapping, Mapping):
            raise TypeError(
                f"set_many() takes a mapping of key -> value, not {type(mapping).__name__}"
            )
        now = time.time()
        encoded = [self._encode(k, v, ttl, tag, 0, now) for k, v in mapping.items()]
        if not encoded:  # nothing checked the options above: bad ones still raise
            if ttl is not DEFAULT:
                check_ttl(ttl)
            if tag is not None and type(tag) is not str:
                raise TypeError(f"tag must be a str or None, not {type(tag).__name__}")
        if not self._ready:
            await self._ensure_open()
        executor = self._executor
        if executor is None:  # closed while this call waited for the open to finish
            raise self._closed_error()
        if _flights:
            for _index, args, _to_file in encoded:
                supersede(self, args[0], self._release_now)
        futures = [
            executor.submit(index, ops.op_set, args, direct=not to_file)
            for index, args, to_file in encoded
        ]
        await _gather_all(futures)
        self._sets += len(futures)

    async def delete_many(self, keys: Iterable[Key]) -> int:
        """Delete every key; the number of live entries removed."""
        _check_many("delete_many", keys)
        kbs = [encode_key(k) for k in keys]  # a bad key raises before anything is opened
        if not self._ready:
            await self._ensure_open()
        routed = [(kb, self._shards[zlib.crc32(kb) % self._n]) for kb in kbs]
        executor = self._executor
        if executor is None:  # closed while this call waited for the open to finish
            raise self._closed_error()
        if _flights:
            for kb, _shard in routed:
                supersede(self, kb, self._release_now)
        futures = [executor.submit(s.index, ops.op_delete, (kb,)) for kb, s in routed]
        deleted: int = sum(await _gather_all(futures))
        self._deletes += deleted
        return deleted

    # Used by the whole-cache sweeps of _cache_admin (evict, expire, clear).
    async def _on_every_shard(self, fn: Callable[..., Any], args: tuple[Any, ...] = ()) -> int:
        if not self._ready:
            await self._ensure_open()
        executor = self._executor
        if executor is None:  # closed while this call waited for the open to finish
            raise self._closed_error()
        futures = [executor.submit(i, fn, args) for i in range(self._n)]
        return sum(await _gather_all(futures))


async def _gather_all(futures: list[asyncio.Future[Any]]) -> list[Any]:
    """Await every future (none is left unobserved), then raise the first error."""
    results = await asyncio.gather(*futures, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _forget_drop(
    dropping: dict[asyncio.Task[Any] | None, asyncio.Task[None]],
    reader: asyncio.Task[Any] | None,
    drop: asyncio.Task[None],
) -> None:
    if dropping.get(reader) is drop:
        del dropping[reader]


def _reopen(cls: type[AsyncCache], arguments: dict[str, Any]) -> AsyncCache:
    return cls(**arguments)
