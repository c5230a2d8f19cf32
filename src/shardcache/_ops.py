"""The write operations, as functions the executor runs inside a shard's transaction.

Each has the signature ``op(shard, cursor, batch, *args) -> result``. They raise a per-op
error (``KeyError``, ``TypeError``) before writing anything, so one bad ``incr`` never spoils
the rest of its batch; SQLite and OS errors propagate and roll the whole batch back.
Every key a write changes is added to ``batch.keys`` for the near cache's change log.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any, Final

from . import _sql as sql
from ._codec import InvalidSignature

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._codec import Codec
    from ._shard import Op, Shard, _Batch

__all__ = [
    "op_add",
    "op_add_stats",
    "op_clear",
    "op_delete",
    "op_drop_misfit",
    "op_drop_missing_file",
    "op_evict",
    "op_expire",
    "op_flush",
    "op_incr",
    "op_lease",
    "op_pop",
    "op_release",
    "op_set",
    "op_set_rows",
    "op_touch",
]


def _live(expire_time: float | None, now: float) -> bool:
    return expire_time is None or expire_time > now


def op_set(
    shard: Shard,
    cur: sqlite3.Cursor,
    batch: _Batch,
    key: bytes,
    blob: bytes,
    fmt: int,
    expire: float | None,
    purge: float | None,
    tag: str | None,
    to_file: bool,
) -> None:
    """Store a row, replacing any row of the key (its old file goes to the trash)."""
    size = len(key) + len(blob) + sql.ROW_OVERHEAD
    file = None
    if to_file:
        file = shard.write_file(batch, blob)
        value: bytes | None = None
    else:
        value = blob
    now = batch.now
    cur.execute(sql.UPSERT, (key, value, file, fmt, size, now, expire, purge, now, tag))
    batch.keys.append(key)


def op_set_rows(shard: Shard, cur: sqlite3.Cursor, batch: _Batch, ops: Sequence[Op]) -> None:
    """``op_set`` for consecutive plain sets (inline values) of one batch, in one statement
    per chunk of :data:`~shardcache._sql.UPSERT_CHUNKS` rows, in their order."""
    now = batch.now
    overhead = sql.ROW_OVERHEAD
    params: list[Any] = []
    keys = batch.keys
    for op in ops:
        key, blob, fmt, expire, purge, tag, _ = op.args
        params += (
            key,
            blob,
            None,
            fmt,
            len(key) + len(blob) + overhead,
            now,
            expire,
            purge,
            now,
            tag,
        )
        keys.append(key)
    cur.execute(sql.UPSERT_ROWS[len(ops)], params)
    for op in ops:
        op.result = None


def op_add(
    shard: Shard,
    cur: sqlite3.Cursor,
    batch: _Batch,
    key: bytes,
    blob: bytes,
    fmt: int,
    expire: float | None,
    purge: float | None,
    tag: str | None,
    to_file: bool,
) -> bool:
    """Store only if the key is missing or expired; inside BEGIN IMMEDIATE, so atomic."""
    rows = cur.execute(sql.SELECT_FOR_UPDATE, (key,)).fetchall()
    if rows and _live(rows[0][2], batch.now):
        # With secret=, an entry whose MAC does not verify reads as a miss in get(), so it
        # must not block add() either.
        if (
            shard.codec is None
            or not shard.codec.signed
            or _verified(shard, key, rows[0]) is not _MISSING
        ):
            return False
    op_set(shard, cur, batch, key, blob, fmt, expire, purge, tag, to_file)
    return True


def op_delete(shard: Shard, cur: sqlite3.Cursor, batch: _Batch, key: bytes) -> bool:
    """Delete the row; True only if it was live."""
    rows = cur.execute(sql.DELETE, (key,)).fetchall()
    if not rows:
        return False
    batch.keys.append(key)
    return _live(rows[0][0], batch.now)


def op_pop(
    shard: Shard, cur: sqlite3.Cursor, batch: _Batch, key: bytes
) -> tuple[bytes, int] | None:
    """Delete the row and return its (blob, fmt) if it was live."""
    rows = cur.execute(sql.POP, (key,)).fetchall()
    if not rows:
        return None
    batch.keys.append(key)
    value, fmt, expire_time, file = rows[0]
    if not _live(expire_time, batch.now):
        return None
    if file is not None:
        # Read before commit: the trash trigger unlinks the file once the delete commits.
        value = shard.read_file(file)
        if value is None:
            return None
    return value, fmt


def op_touch(
    shard: Shard,
    cur: sqlite3.Cursor,
    batch: _Batch,
    key: bytes,
    expire: float | None,
    purge: float | None,
) -> bool:
    """Reset the expiry of a live row."""
    cur.execute(sql.TOUCH, (expire, purge, key, batch.now))
    if cur.rowcount:
        batch.keys.append(key)
        return True
    return False


def op_incr(
    shard: Shard,
    cur: sqlite3.Cursor,
    batch: _Batch,
    key: bytes,
    delta: int,
    default: int | None,
    codec: Codec,
) -> int:
    """Read-modify-write under the shard's write lock: atomic across tasks and processes."""
    rows = cur.execute(sql.SELECT_FOR_UPDATE, (key,)).fetchall()
    now = batch.now
    current: Any = _MISSING
    if rows and _live(rows[0][2], now):
        current = _verified(shard, key, rows[0])
    if current is not _MISSING:
        if type(current) is not int:
            raise TypeError(f"incr/decr need an int value; the key holds {type(current).__name__}")
        value = current + delta
        new, new_fmt = codec.encode_int(value, key)
        size = len(key) + len(new) + sql.ROW_OVERHEAD
        if rows[0][3] is None:
            cur.execute(sql.SET_VALUE, (new, new_fmt, size, now, key))
        else:
            cur.execute(
                sql.UPSERT, (key, new, None, new_fmt, size, now, rows[0][2], rows[0][4], now, None)
            )
    else:
        if default is None:
            raise KeyError("incr/decr of a missing key with default=None")
        value = default + delta
        new, new_fmt = codec.encode_int(value, key)
        size = len(key) + len(new) + sql.ROW_OVERHEAD
        cur.execute(sql.UPSERT, (key, new, None, new_fmt, size, now, None, None, now, None))
    batch.keys.append(key)
    return value


class _Missing:
    pass


_MISSING: Final = _Missing()


def _verified(shard: Shard, key: bytes, row: tuple[Any, ...]) -> Any:
    """The decoded value of a live row, or _MISSING when it reads as a miss (file gone, MAC
    wrong: what get() would treat as missing)."""
    blob, fmt, file = row[0], row[1], row[3]
    if file is not None:
        blob = shard.read_file(file)
    if blob is None or shard.codec is None:
        return _MISSING
    try:
        return shard.codec.decode(blob, fmt, key)
    except InvalidSignature:
        return _MISSING


def op_evict(shard: Shard, cur: sqlite3.Cursor, batch: _Batch, tag: str) -> int:
    """Delete every row with ``tag``; the number of live ones."""
    rows = cur.execute(sql.EVICT_TAG, (tag,)).fetchall()
    batch.keys.extend(r[0] for r in rows)
    return sum(1 for r in rows if _live(r[1], batch.now))


def op_expire(shard: Shard, cur: sqlite3.Cursor, batch: _Batch) -> int:
    """Purge every expired row now."""
    rows = cur.execute(sql.EXPIRE, (batch.now,)).fetchall()
    batch.keys.extend(r[0] for r in rows)
    shard.expirations += len(rows)
    return len(rows)


def op_clear(shard: Shard, cur: sqlite3.Cursor, batch: _Batch) -> int:
    """Delete every row; the number of live ones."""
    live: int = cur.execute(sql.COUNT_LIVE, (batch.now,)).fetchall()[0][0]
    cur.execute(sql.CLEAR_ALL)
    batch.all = True
    return live


def op_lease(
    shard: Shard, cur: sqlite3.Cursor, batch: _Batch, key: bytes, owner: str, duration: float
) -> bool:
    """Take or renew the compute lease of ``key`` unless another owner holds a live one."""
    cur.execute(sql.LEASE_ACQUIRE, (key, owner, batch.now + duration, batch.now))
    return cur.rowcount == 1


def op_release(shard: Shard, cur: sqlite3.Cursor, batch: _Batch, key: bytes, owner: str) -> None:
    """Drop the lease if ``owner`` still holds it."""
    cur.execute(sql.LEASE_RELEASE, (key, owner))


def op_flush(shard: Shard, cur: sqlite3.Cursor, batch: _Batch) -> int:
    """Nothing of its own (0): the batch flushes buffered access bookkeeping and the trash."""
    return 0


def op_add_stats(
    shard: Shard, cur: sqlite3.Cursor, batch: _Batch, counts: list[tuple[str, int]]
) -> None:
    """Add an instance's counters to the directory's saved totals (``stats()``); negative
    counts take away what ``stats(reset=True)`` read."""
    cur.executemany(sql.ADD_STAT, [(sql.STAT_PREFIX + name, n) for name, n in counts])


def op_drop_misfit(
    shard: Shard,
    cur: sqlite3.Cursor,
    batch: _Batch,
    key: bytes,
    blob: bytes | None,
    file: str | None,
) -> None:
    """Delete a row whose value no longer fits the reader's ``type=``, unless the row has
    since been replaced (a ``set`` queued right after the failed ``get`` must win)."""
    if file is not None:
        cur.execute(sql.DELETE_FILE_ROW, (key, file))
    else:
        cur.execute(sql.DELETE_VALUE_ROW, (key, blob))
    if cur.rowcount:
        batch.keys.append(key)


def op_drop_missing_file(
    shard: Shard, cur: sqlite3.Cursor, batch: _Batch, key: bytes, file: str
) -> None:
    """Repair a row whose value file is gone, unless the row has since been replaced."""
    cur.execute(sql.DELETE_FILE_ROW, (key, file))
    if cur.rowcount:
        batch.keys.append(key)
