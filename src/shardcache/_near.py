"""The near cache of one shard: recently read rows kept in process, never stale.

A mixin of :class:`~shardcache._shard.Shard` (its state lives in the shard's attributes, so
the hot path of ``get`` reads ``shard.near`` with no extra hop). It keeps *encoded* rows,
so callers never share a mutable object, and next to a row whose value is immutable
(``IMMUTABLE`` types all the way down) that value decoded. It is validated before each
read by the 48-byte WAL-index header of the ``-shm`` file (``near_valid``), and
``sync_near`` drops exactly the keys the ``changes`` log lists since our last sequence
number; a gap in the sequence (the log was pruned past us) drops the whole shard's copy.
The bound is on bytes of real memory (``_row_size``, ``_immutable_size``).
"""

from __future__ import annotations

import mmap
import sqlite3
import sys
from typing import TYPE_CHECKING, Any

import msgspec

from . import _sql as sql

if TYPE_CHECKING:
    from ._shard import Row

_unpack = msgspec.msgpack.Decoder(list[bytes]).decode


class _NearCache:
    """The near-cache half of a shard."""

    if TYPE_CHECKING:
        # Defined by Shard (declared only while type checking).
        near: dict[bytes, Row]
        near_values: dict[bytes, tuple[Row, Any, int]]
        near_bytes: int
        near_limit: int
        cursor: sqlite3.Cursor | None
        _shm: mmap.mmap | None
        _hdr: bytes
        _data_version: int
        _seq: int

    def near_valid(self) -> bool:
        """True when no process committed to this shard since the near cache's last sync."""
        shm = self._shm
        return shm is not None and shm[:48] == self._hdr

    def sync_near(self) -> None:
        """Drop near-cache rows that any process changed since we last looked."""
        shm = self._shm
        if shm is not None:
            hdr = shm[:48]
            if hdr == self._hdr:
                return
        else:
            assert self.cursor is not None
            version = self.cursor.execute("PRAGMA data_version").fetchall()[0][0]
            if version == self._data_version:
                return
            hdr = b""
            self._data_version = version
        assert self.cursor is not None
        rows = self.cursor.execute(sql.CHANGES_SINCE, (self._seq,)).fetchall()
        if rows:
            near = self.near
            if rows[0][0] != self._seq + 1:
                self.clear_near()  # the log was pruned past us: we cannot know what changed
            else:
                for _seq, keys in rows:
                    if keys is None:
                        self.clear_near()
                        break
                    for key in _unpack(keys):
                        if key in near:
                            self.forget(key)
            self._seq = rows[-1][0]
        self._hdr = hdr

    def clear_near(self) -> None:
        """Forget every near-cache row of this shard."""
        self.near.clear()
        self.near_values.clear()
        self.near_bytes = 0

    def forget(self, key: bytes) -> None:
        """Drop one row from the near cache (keeping the byte count right)."""
        row = self.near.pop(key, None)
        if row is not None:
            self.near_bytes -= _row_size(key, row)
            kept = self.near_values.pop(key, None)
            if kept is not None:
                self.near_bytes -= kept[2]

    def remember(self, key: bytes, row: Row) -> None:
        """Keep an encoded row in the near cache, oldest rows leaving first past the bound."""
        size = _row_size(key, row)
        if size > self.near_limit // 4:
            return
        self.forget(key)
        self.near[key] = row
        self.near_bytes += size
        self._shrink_near()

    def remember_value(self, key: bytes, row: Row, value: Any) -> None:
        """Keep ``value``, just decoded from the near row ``row``, when no caller can change
        it (``IMMUTABLE`` types all the way down): hits on that row then return it as is."""
        if self.near.get(key) is not row or key in self.near_values:
            return  # a row read off the near cache (read pool), or already kept
        size = _immutable_size(value)
        if size is None:
            return
        self.near_values[key] = (row, value, size)
        self.near_bytes += size
        self._shrink_near()

    def _shrink_near(self) -> None:
        near = self.near
        while self.near_bytes > self.near_limit and near:
            self.forget(next(iter(near)))


#: Types whose instances no caller can change: one decoded object may serve every hit.
IMMUTABLE: frozenset[type] = frozenset(
    {type(None), bool, int, float, complex, str, bytes, tuple, frozenset}
)
_CONTAINERS = (tuple, frozenset)


def _immutable_size(value: Any, depth: int = 0) -> int | None:
    """The memory ``value`` takes when it is immutable all the way down, else None."""
    kind = type(value)
    if kind not in IMMUTABLE or depth > 32:
        return None
    # The object itself, plus ~120 B for its near_values entry (a 3-tuple and a dict slot,
    # measured with tracemalloc).
    size = sys.getsizeof(value) + (120 if depth == 0 else 0)
    if kind in _CONTAINERS:
        for item in value:
            inner = _immutable_size(item, depth + 1)
            if inner is None:
                return None
            size += inner
    return size


def _row_size(key: bytes, row: Row) -> int:
    # The bound is on real memory: a remembered row (two bytes objects, a 6-tuple, three
    # floats, its dict slot) takes ~330 B beyond the key and value bytes by tracemalloc,
    # which counts requested sizes; the process's RSS grew ~6% more than that with the near
    # cache at its bound (allocator size classes, pools), hence 360.
    value = row[0]
    return len(key) + (len(value) if type(value) is bytes else 0) + 360
