"""One SQLite file: its connections, its near cache, and the write operations it applies.

A shard has three kinds of connection, each owned by one thread:

* the *reader*, owned by the event-loop thread: ``query_only``, ``busy_timeout=0`` and a
  persistent cursor, so a point read costs what sqlite3 itself costs (PERF.md: ~4-8 us)
  instead of a thread hop (~100 us);
* the *direct writer*, also on the loop thread, ``busy_timeout=0``: a write that finds
  nothing queued runs right there (one short transaction, no hop) and falls back to the
  queue on ``SQLITE_BUSY``, which fails in microseconds instead of freezing the loop;
* the *writer*, owned by the executor's thread, with a real busy timeout: it applies
  every queued write of a batch in one ``BEGIN IMMEDIATE ... COMMIT``.

The near cache (``_near``, a mixin of ``Shard``) keeps *encoded* rows of recently read
keys, validated before each read by the WAL-index header of the ``-shm`` file and kept
exact by the ``changes`` log that every write transaction appends to.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import random
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec

from . import _sql as sql
from ._codec import Codec
from ._errors import CacheCorruptError, CacheError, CacheTimeoutError, ConfigurationError
from ._fork import GATE
from ._near import _NearCache
from ._ops import op_set as _op_set
from ._ops import op_set_rows as _op_set_rows
from ._shm import _acquire_shm, _release_shm

__all__ = ["Op", "Row", "Shard"]

logger = logging.getLogger("shardcache")

#: A stored row as reads return it: (value, fmt, expire_time, file, purge_time, store_time).
Row = tuple[Any, int, "float | None", "str | None", "float | None", float]

_pack = msgspec.msgpack.Encoder().encode

# How many keys one change-log row may list before it becomes "everything changed".
_CHANGE_KEYS_MAX = 4096
# How many change-log rows survive pruning; a reader further behind drops its whole copy.
_CHANGE_KEEP = 2048
# Expired rows purged per batch: bounded, so no write pays for a full scan.
_PURGE_PER_BATCH = 64
# Rows a sweep (purging without the purge index) looks at, at least; it also covers twice
# the keys written since the last sweep, so that it keeps up with a stream of new keys.
_SWEEP_MIN = 256
# A loop-thread read slower than this sends the shard's reads to a thread for a while.
SLOW_READ = 0.001
SLOW_READ_BACKOFF = 1.0
_VALUE_FILE = re.compile(r"\d{3}-[0-9a-f]{32}\.val")
# A value file is opened without following a symbolic link (where the platform can).
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
WAL_LIMIT = 4 * 2**20  # bytes of WAL past which the checkpointer restarts the log
_FULL_BELOW = 2**16  # free bytes under which a failed open or write is put down to a full disk
_SLOW_READS = 3  # slow reads within SLOW_READ_BACKOFF seconds that trigger the guard


def _is_busy(exc: BaseException) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def _is_corrupt(exc: BaseException) -> bool:
    text = str(exc)
    return "not a database" in text or "malformed" in text or "corrupt" in text


class Op:
    """One queued write: what to run on the shard, and the future its caller awaits."""

    __slots__ = ("args", "deadline", "direct", "fn", "future", "index", "result")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], future: Any, index: int, direct: bool
    ) -> None:
        self.fn = fn
        self.args = args
        self.future = future
        self.index = index
        self.direct = direct
        self.result: Any = None
        self.deadline = 0.0  # set when the shard was found locked: when to give up


def _plain_sets(ops: list[Op], start: int) -> int:
    """How many of ``ops`` from ``start`` on are plain sets (inline values), as one
    multi-row statement takes them: the largest of UPSERT_CHUNKS that fits, else 1."""
    end = start + 1
    limit = min(len(ops), start + sql.UPSERT_CHUNKS[0])
    while end < limit and ops[end].fn is _op_set and not ops[end].args[-1]:
        end += 1
    run = end - start
    for size in sql.UPSERT_CHUNKS:
        if run >= size:
            return size
    return 1


class _Batch:
    """What one transaction changed: keys for the change log, files written."""

    __slots__ = ("all", "keys", "new_files", "now")

    def __init__(self, now: float) -> None:
        self.now = now
        self.keys: list[bytes] = []
        self.all = False
        self.new_files: list[Path] = []


class Shard(_NearCache):
    """One shard file and everything that touches it."""

    def __init__(
        self,
        index: int,
        path: Path,
        *,
        shards: int,
        serializer: str,
        durability: str,
        eviction: str,
        limit: int | None,
        near_limit: int,
        on_corrupt: str,
        values_dir: Path,
        codec: Codec | None = None,
    ) -> None:
        self.index = index
        self.codec = codec  # for ops that must read values (incr, add with secret=)
        self.path = path
        self.shards = shards
        self.serializer = serializer
        self.durability = durability
        self.limit = limit
        self.values_dir = values_dir
        self._file_prefix = f"{index:03d}-"
        self.on_corrupt = on_corrupt
        policy = sql.EVICTION[eviction]
        self.cull_sql = sql.cull_sql(policy[0]) if policy else None
        self.policy_index = policy[1] if policy else None
        # The culling indexes, built once the shard is half full (see _after_ops).
        self._lazy_indexes = [sql.PURGE_INDEX] + ([sql.policy_index_sql(*policy)] if policy else [])
        self.indexed = False
        self._sweep_from = b""  # where the next index-less purge sweep starts
        self._swept = 0  # keys written since the last sweep
        self.track_access = eviction in ("least-recently-used", "least-frequently-used")
        # Access bookkeeping for LRU/LFU, buffered in memory and flushed by the writer.
        self.access: dict[bytes, int] = {}
        self.access_time = 0.0
        # Counters the writer thread bumps (plain ints: the GIL makes += safe enough).
        self.evictions = 0
        self.expirations = 0
        self.batches = 0
        self.last_write = 0.0
        # Near cache.
        self.near_limit = near_limit
        self.near: dict[bytes, Row] = {}
        # Decoded immutable values of near rows, with the row each was decoded from and its
        # size (counted in near_bytes): a hit on them skips msgspec. A key here is in near.
        self.near_values: dict[bytes, tuple[Row, Any, int]] = {}
        self.near_bytes = 0
        self._shm: mmap.mmap | None = None
        self._hdr = b""
        self._data_version = -1
        self._seq = 0
        # Slow-read guard: while now < offload_until, reads go to a thread.
        self.offload_until = 0.0
        self._slow_since = 0.0
        self._slow_count = 0
        self._reads_since = 0
        self.reads = 0  # SQLite reads on the loop thread, for the slow-read guard
        self.reader: sqlite3.Connection | None = None
        self.cursor: sqlite3.Cursor | None = None
        self.direct: sqlite3.Connection | None = None
        self.writer: sqlite3.Connection | None = None
        self._thread_conns = threading.local()
        self._pool_conns: list[sqlite3.Connection] = []
        self._wal_fd: int | None = None

    # -- opening ------------------------------------------------------------------------
    def _connect(
        self,
        *,
        busy_ms: int,
        readonly: bool = False,
        cache_kib: int | None = 128,
        sync: str | None = None,
    ) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, cached_statements=64
            )
        except sqlite3.Error as exc:
            raise CacheError(f"cannot open cache shard {self.path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
            # Checkpoints run off the hot path (the executor's checkpointer), never inside
            # a commit that a caller is waiting for.
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            # When a checkpoint restarts the WAL, shrink the file back to this size.
            conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
            sync = sync or {"normal": "NORMAL", "full": "FULL", "off": "OFF"}[self.durability]
            conn.execute(f"PRAGMA synchronous = {sync}")
            # A shard has up to five connections in a process. The loop's reader gets 768 KiB
            # of page cache (a shard's interior B-tree pages at a million entries), the
            # writer 256 KiB, the others 128 KiB: the OS page cache serves the rest, and it
            # is not the process's RSS (the 1M-entry memory target). No mmap, likewise.
            conn.execute(f"PRAGMA cache_size = {-768 if cache_kib is None else -cache_kib}")
            if readonly:
                conn.execute("PRAGMA query_only = 1")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._corrupt(exc) from exc
        return conn

    def _corrupt(self, exc: BaseException) -> CacheError:
        if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
            return CacheTimeoutError(f"cache shard {self.path} stayed locked: {exc}")
        if isinstance(exc, sqlite3.OperationalError) and not _is_corrupt(exc):
            return CacheError(f"cannot use cache shard {self.path}: {exc}{self._full_hint()}")
        return CacheCorruptError(f"cache shard {self.path} is corrupt: {exc}", str(self.path))

    def _full_hint(self) -> str:
        """SQLite reports a full disk as "disk I/O error" when it cannot even create the
        ``-shm`` file (a process opening the cache then): say what the user can act on."""
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            return ""
        return " (the disk is full)" if free < _FULL_BELOW else ""

    def open(self) -> None:
        """Create or validate the file, then open the three connections (any thread)."""
        with GATE:
            try:
                self._open_checked()
            except CacheCorruptError:
                if self.on_corrupt != "reset":
                    raise
                self.close()
                self.reset_files()
                self._open_checked()

    def reset_files(self) -> None:
        """Delete the shard's files (``on_corrupt="reset"``): a cache is rebuildable data.
        Its value files go too: the rows that pointed to them are gone."""
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}{suffix}")
        for path in self.values_dir.glob(f"{self.index:03d}-*"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _open_checked(self) -> None:
        if not self.path.exists():
            # Created 0600 before SQLite sees it; SQLite gives -wal/-shm the same mode.
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
        deadline = time.monotonic() + 30.0
        while True:
            setup = self._connect(busy_ms=30_000)
            try:
                self._setup(setup)
                if self.on_corrupt == "reset":
                    # Opted in to rebuilding: a damaged page found later would fail every
                    # read of its keys, so look for one now (quick_check reads the file).
                    problems = [r[0] for r in setup.execute("PRAGMA quick_check").fetchall()]
                    if problems != ["ok"]:
                        raise CacheCorruptError(
                            f"cache shard {self.path} is damaged: {problems[0]}", str(self.path)
                        )
                break
            except sqlite3.OperationalError as exc:
                # Switching to WAL needs an exclusive lock, and SQLite does not call the
                # busy handler where waiting could deadlock: processes creating the same
                # directory at once retry here, briefly, with jitter.
                if not (_is_busy(exc) or "protocol" in str(exc)) or time.monotonic() > deadline:
                    raise self._corrupt(exc) from exc
                time.sleep(0.01 + random.random() * 0.05)
            except sqlite3.DatabaseError as exc:
                raise self._corrupt(exc) from exc
            finally:
                setup.close()
        # A short busy timeout: a shard another process keeps locked is retried after the
        # other shards' writes (executor), instead of holding them all up.
        # durability="full": the writer commits at NORMAL and the executor makes each round
        # of commits durable with one fdatasync of each touched WAL, all at once (sync_wal):
        # the same guarantee as FULL's fsync per commit, without serial fsyncs per shard.
        self.writer = self._connect(
            busy_ms=100, cache_kib=256, sync="NORMAL" if self.durability == "full" else None
        )
        # durability="full" commits here only in the executor's busy mode, which then
        # flushes the WAL itself (sync_wal), as for the writer.
        self.direct = self._connect(busy_ms=0, sync="NORMAL" if self.durability == "full" else None)
        self.reader = self._connect(busy_ms=0, readonly=True, cache_kib=None)
        self.cursor = self.reader.cursor()
        while True:
            try:
                self._seq = self.cursor.execute(sql.LAST_CHANGE).fetchall()[0][0]
                break
            except sqlite3.OperationalError as exc:
                # Another process may still hold the lock of its own first open (the WAL
                # switch): this reader has busy_timeout=0, so wait here, bounded.
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise self._corrupt(exc) from exc
                time.sleep(0.01 + random.random() * 0.05)
            except sqlite3.DatabaseError as exc:
                raise self._corrupt(exc) from exc
        self._map_shm()

    def _setup(self, conn: sqlite3.Connection) -> None:
        # Whose file is it? Asked before anything is changed (even the journal mode, which
        # rewrites the header): a database that is not a shard must stay as it was.
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and self._format(conn, tables) != sql.FORMAT:
            raise CacheCorruptError(
                f"{self.path} is an SQLite database but not a shardcache shard "
                f"(tables: {', '.join(sorted(tables))})",
                str(self.path),
            )
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if mode == "wal" and self._schema_complete(conn):
            # A shard made before: checked in a read transaction, without the write lock,
            # so a shard another process keeps locked (a long vacuum(), a write of its
            # own) opens at once instead of waiting up to 30 s for that lock.
            conn.execute("BEGIN")
            try:
                self._check_schema(conn, write=False)
            finally:
                conn.execute("COMMIT")
            return
        if mode != "wal":
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        # executescript() commits whatever is open first, so the script itself begins the
        # transaction, and schema, checks and settings commit (or roll back) together.
        conn.executescript("BEGIN IMMEDIATE;" + sql.SCHEMA)
        try:
            self._check_schema(conn, write=True)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _schema_complete(conn: sqlite3.Connection) -> bool:
        """Every table, index and trigger of the schema is there, and the byte total."""
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        if not sql.SCHEMA_NAMES <= names:
            return False
        return bool(conn.execute(sql.VOLUME).fetchall())

    def _check_schema(self, conn: sqlite3.Connection, *, write: bool) -> None:
        """Check (or, in a new file, write) the settings, and see which lazy indexes exist."""
        settings = dict(conn.execute("SELECT name, value FROM settings").fetchall())
        expected = {
            "format": sql.FORMAT,
            "shards": self.shards,
            "index": self.index,
            "serializer": self.serializer,
        }
        if "format" not in settings and write:
            conn.executemany("INSERT INTO settings VALUES (?, ?)", list(expected.items()))
        else:
            self._check_settings(settings, expected)
        built = {r[0] for r in conn.execute(sql.LAZY_INDEXES, (self.policy_index or "",))}
        self.indexed = "entries_purge" in built and (
            self.policy_index is None or self.policy_index in built
        )

    @staticmethod
    def _format(conn: sqlite3.Connection, tables: set[str]) -> Any:
        """The ``format`` setting of a database with tables (``None``: not one of ours). A
        shard's schema and settings are created in one transaction, so a shard with tables
        always has it."""
        if "settings" not in tables:
            return None
        try:
            rows = conn.execute("SELECT value FROM settings WHERE name = 'format'").fetchall()
        except sqlite3.OperationalError:  # a "settings" table of other columns
            return None
        return rows[0][0] if rows else None

    def _check_settings(self, found: dict[str, Any], expected: dict[str, Any]) -> None:
        if found.get("format") != sql.FORMAT or found.get("index") != self.index:
            raise CacheCorruptError(
                f"{self.path} is not shard {self.index} of a {sql.FORMAT} cache "
                f"(format={found.get('format')!r}, index={found.get('index')!r})",
                str(self.path),
            )
        for name in ("shards", "serializer"):
            if found.get(name) != expected[name]:
                raise ConfigurationError(
                    f"{self.path.parent} was created with {name}={found.get(name)!r}; it cannot "
                    f"be opened with {name}={expected[name]!r} (use a new or empty directory)"
                )

    def _map_shm(self) -> None:
        """Map the WAL-index header read-only; without WAL, fall back to data_version."""
        self._shm = _acquire_shm(f"{self.path}-shm")

    def close(self) -> None:
        """Close every connection this object opened (call once the read pool stopped)."""
        pool_conns, self._pool_conns = self._pool_conns, []
        self._thread_conns = threading.local()
        for conn in (self.reader, self.direct, self.writer, *pool_conns):
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
        self.reader = self.direct = self.writer = self.cursor = None
        if self._wal_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._wal_fd)
            self._wal_fd = None
        if self._shm is not None:
            # Only after our connections closed: see _acquire_shm.
            self._shm = None
            _release_shm(f"{self.path}-shm")
        self.clear_near()

    def slow_read(self, now: float) -> None:
        """Guard: when slow loop-thread reads become frequent, send this shard's reads to a
        thread for a while.

        A slow read alone proves little: on a loaded machine the OS preempts the loop
        thread mid-read every few milliseconds, and a thread would not be faster then. A
        shard whose reads really are slow (I/O on a cold file, a lock) has many of them:
        at least 3 and 2% of the shard's reads within a second.
        """
        if now - self._slow_since > SLOW_READ_BACKOFF:
            self._slow_since = now
            self._slow_count = 0
            self._reads_since = self.reads
        self._slow_count += 1
        if (
            self._slow_count >= _SLOW_READS
            and self._slow_count * 50 >= self.reads - self._reads_since
        ):
            self.offload_until = now + SLOW_READ_BACKOFF
            self._slow_count = 0

    # -- reads --------------------------------------------------------------------------
    def thread_reader(self) -> sqlite3.Connection:
        """A connection for reads sent to a thread (slow-read guard, bulk reads)."""
        conn: sqlite3.Connection | None = getattr(self._thread_conns, "conn", None)
        if conn is None:
            conn = self._connect(busy_ms=5_000, readonly=True)
            self._thread_conns.conn = conn
            self._pool_conns.append(conn)  # closed by close(), once the pool has stopped
        return conn

    def read_in_thread(self, key: bytes) -> list[Any]:
        """A point read with a busy timeout, run on a thread."""
        try:
            with GATE:
                return self.thread_reader().execute(sql.GET, (key,)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from exc

    def owns_file(self, name: str) -> bool:
        """Whether ``name`` is a value file this shard writes. A planted name ("../x",
        "/etc/passwd", another shard's file) is never opened or unlinked."""
        return name.startswith(self._file_prefix) and _VALUE_FILE.fullmatch(name) is not None

    def read_file(self, name: str) -> bytes | None:
        """The bytes of a value file, or None when it is gone (a miss, repaired later)."""
        if not self.owns_file(name):
            return None
        path = self.values_dir / name
        try:
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None  # a symbolic link planted under a valid name: never ours
            raise CacheError(f"cannot read value file {path}: {exc}") from exc
        try:
            with open(fd, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise CacheError(f"cannot read value file {path}: {exc}") from exc

    # -- writes (run inside run_batch's transaction) -------------------------------------
    def run_batch(self, conn: sqlite3.Connection, ops: list[Op], *, requeue_busy: bool) -> bool:
        """Apply ``ops`` in one transaction; set each ``op.result`` to a value or exception.

        With ``requeue_busy``, returns False without doing anything when the shard stays
        locked past the connection's short busy timeout, so the caller can queue the ops
        (the loop thread) or retry them after other shards' writes (the writer thread).
        """
        with GATE:  # no fork in the middle of a transaction (_fork)
            return self._run_batch(conn, ops, requeue_busy=requeue_busy)

    def _run_batch(self, conn: sqlite3.Connection, ops: list[Op], *, requeue_busy: bool) -> bool:
        now = time.time()
        batch = _Batch(now)
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if requeue_busy and _is_busy(exc):
                return False
            self._fail_all(ops, exc)
            return True
        except sqlite3.DatabaseError as exc:
            self._fail_all(ops, exc)
            return True
        try:
            cur = conn.cursor()
            # Reads buffered for LRU/LFU land before the writes, so that an overwrite in
            # this batch resets the counts it should.
            self._flush_access(cur)
            index, count = 0, len(ops)
            while index < count:
                op = ops[index]
                if op.fn is _op_set and not op.args[-1] and (run := _plain_sets(ops, index)) > 1:
                    _op_set_rows(self, cur, batch, ops[index : index + run])
                    index += run
                    continue
                try:
                    op.result = op.fn(self, cur, batch, *op.args)
                except (sqlite3.DatabaseError, OSError):
                    raise
                except Exception as exc:  # a per-op error (e.g. incr on a str): only this op
                    op.result = exc
                index += 1
            self._after_ops(cur, batch)
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            for path in batch.new_files:
                with contextlib.suppress(OSError):
                    path.unlink()
            self._fail_all(ops, exc)
            return True
        self.batches += 1
        # Every batch, not only those that touched files: a replaced or culled row may have
        # had one (the trigger knows, we do not), and an empty table costs ~1 us to read.
        self._empty_trash(conn)
        return True

    def sync_wal(self) -> None:
        """Flush the WAL to disk: what the writer committed is durable once this returns.

        An fd of our own: fdatasync flushes the file, whichever descriptor wrote it, and the
        WAL file lives as long as a connection of ours is open.
        """
        fd = self._wal_fd
        if fd is None:
            fd = self._wal_fd = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
        os.fdatasync(fd)

    def _fail_all(self, ops: Iterable[Op], exc: BaseException) -> None:
        if isinstance(exc, sqlite3.OperationalError) and _is_busy(exc):
            error: BaseException = CacheTimeoutError(
                f"cache shard {self.path} stayed locked by another process: {exc}"
            )
        elif isinstance(exc, sqlite3.DatabaseError) and _is_corrupt(exc):
            error = self._corrupt(exc)
        elif "full" in str(exc) or getattr(exc, "errno", None) == 28:
            error = CacheError(f"disk full: cannot write to {self.path}: {exc}")
        else:
            error = CacheError(f"write to {self.path} failed: {exc}")
        error.__cause__ = exc
        for op in ops:
            op.result = error

    def _flush_access(self, cur: sqlite3.Cursor) -> None:
        if not self.access:
            return
        access, self.access = self.access, {}
        # list() copies in C without releasing the GIL: the loop thread may still add to
        # the old dict, and iterating it here would then fail mid-way.
        counts = list(access.items())
        cur.executemany(sql.TOUCH_ACCESS, [(self.access_time, n, key) for key, n in counts])

    def _after_ops(self, cur: sqlite3.Cursor, batch: _Batch) -> None:
        now = batch.now
        self._swept += len(batch.keys)
        if self.batches % 8 == 0:
            self._purge(cur, now)
        if self.limit is not None:
            volume = cur.execute(sql.VOLUME).fetchall()[0][0]
            if not self.indexed and volume * 2 > self.limit:
                # Half full: from now on culling is near, and it needs its order. Built
                # once per shard file (IF NOT EXISTS: another process may have done it).
                for statement in self._lazy_indexes:
                    cur.execute(statement)
                self.indexed = True
            if volume > self.limit and self.cull_sql is not None:
                self._cull(cur, batch, volume - self.limit)
        if batch.all or len(batch.keys) > _CHANGE_KEYS_MAX:
            cur.execute(sql.APPEND_CHANGE, (None,))
        elif batch.keys:
            cur.execute(sql.APPEND_CHANGE, (_pack(batch.keys),))
        else:
            return
        if self.batches % 256 == 0:
            cur.execute(sql.PRUNE_CHANGES, (_CHANGE_KEEP,))
            cur.execute(sql.LEASE_PRUNE, (now,))

    def _purge(self, cur: sqlite3.Cursor, now: float) -> None:
        """Delete some expired rows: by the purge index once built, else by a sweep over
        the next window of keys (contiguous pages, no index to keep up on every write)."""
        if self.indexed:
            cur.execute(sql.PURGE_SOME, (now, _PURGE_PER_BATCH))
        else:
            window = max(_SWEEP_MIN, 2 * self._swept)
            start = self._sweep_from
            end = cur.execute(sql.SWEEP_END, (start, window - 1)).fetchall()
            if end:
                self._sweep_from = end[0][0]
                cur.execute(sql.SWEEP, (start, self._sweep_from, now))
            else:  # the window reaches the end of the table: next sweep starts over
                self._sweep_from = b""
                cur.execute(sql.SWEEP_TAIL, (start, now))
            self._swept = 0
        if cur.rowcount > 0:
            self.expirations += cur.rowcount

    def _cull(self, cur: sqlite3.Cursor, batch: _Batch, excess: int) -> None:
        """Bring the shard under its limit: expired rows first, then the policy's victims,
        one by one until the excess is gone, a bounded number per batch (amortized: no
        write pays for a scan)."""
        assert self.cull_sql is not None
        budget = 256 + 4 * len(batch.keys)
        # What this batch wrote goes after everything else, and its last write never: a
        # set that returned is readable (a value larger than the shard's share is kept,
        # as diskcache keeps one, until the next write culls it), an LFU newcomer lives
        # until the next write, and a set_many larger than the share still ends under it.
        own, last = frozenset(batch.keys), frozenset(batch.keys[-1:])
        expired = cur.execute(sql.EXPIRED_VICTIMS, (batch.now, budget)).fetchall()
        excess, taken, _ = self._drop(cur, batch, expired, excess, frozenset())
        self.expirations += taken
        budget -= taken
        for spared in (own, last):
            # Spared rows stay at the head of the policy's order (LFU ranks a new row
            # first): each query skips past them, with pages that grow as they do.
            kept, page = 0, 16
            while excess > 0 and budget > 0:
                victims = cur.execute(self.cull_sql, (min(budget, page), kept)).fetchall()
                if not victims:
                    break
                excess, taken, skipped = self._drop(cur, batch, victims, excess, spared)
                self.evictions += taken
                budget -= taken + skipped
                kept += skipped
                if skipped:
                    page *= 2

    def _drop(
        self,
        cur: sqlite3.Cursor,
        batch: _Batch,
        victims: list[Any],
        excess: int,
        spared: frozenset[bytes],
    ) -> tuple[int, int, int]:
        """Delete victims in order until ``excess`` bytes are gone, skipping ``spared``;
        the bytes still in excess, the rows deleted, the rows skipped."""
        chosen = []
        skipped = 0
        for key, size in victims:
            if excess <= 0:
                break
            if key in spared:
                skipped += 1
                continue
            chosen.append((key,))
            excess -= size
        cur.executemany(sql.DELETE_KEY, chosen)
        batch.keys.extend(key for (key,) in chosen)
        return excess, len(chosen), skipped

    def _empty_trash(self, conn: sqlite3.Connection) -> None:
        """Unlink files whose rows are gone, now that the deletion is committed."""
        try:
            rows = conn.execute(sql.TRASH).fetchall()
        except sqlite3.Error as exc:
            # Best effort: the write committed; orphan files are collected by check(fix).
            logger.warning("cannot read the trash of %s: %s", self.path, exc)
            return
        if not rows:
            return
        for _rowid, name in rows:
            if self.owns_file(name):
                with contextlib.suppress(OSError):
                    (self.values_dir / name).unlink()
        # By (rowid, file): rowids of an emptied table are reused, and another process may
        # have trashed a new file under a rowid we saw.
        with contextlib.suppress(sqlite3.Error):
            conn.executemany(sql.EMPTY_TRASH, rows)

    def write_file(self, batch: _Batch, data: bytes) -> str:
        """Write a large value beside the shard: temp file, fsync per durability, rename."""
        name = f"{self.index:03d}-{uuid.uuid4().hex}.val"
        final = self.values_dir / name
        tmp = final.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.durability == "full":
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()  # a full disk leaves no half-written temp file behind
            if isinstance(exc, OSError):
                # This write's own failure, before its row: the other writes of the batch
                # go on (run_batch fails only this op on a non-SQLite error).
                full = "disk full: " if exc.errno == errno.ENOSPC else ""
                raise CacheError(
                    f"{full}cannot write a value file to {self.values_dir}: {exc}"
                ) from exc
            raise
        if self.durability == "full":
            # The rename must survive a power cut before the row pointing to it commits.
            dir_fd = os.open(self.values_dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        batch.new_files.append(final)
        return name
