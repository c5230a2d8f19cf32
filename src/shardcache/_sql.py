"""The SQL of one shard: schema, statements, and eviction policies as data.

Every shard file has the same schema. ``entries`` is a WITHOUT ROWID table keyed by the
encoded key, so a point read is one B-tree descent. Triggers keep the byte total in
``settings`` and collect the value files of replaced or deleted rows in ``trash``, so that
every statement (ours, another process's, a future CLI's) keeps the accounting right, and
files are unlinked only after the transaction that dropped their row has committed.
``changes`` is the near cache's change log: each write transaction appends the keys it
changed, and readers in every process drop exactly those keys from their in-process copy.

The indexes that only eviction and purging use (``entries_purge`` and the policy's) are built
lazily, once a shard holds half its share of ``size_limit`` (see ``Shard._after_ops``). Below
that nothing is evicted, and an index entry rewritten at a random page on every overwrite
would cost each write a third of its time for nothing: an overwrite with a TTL dirtied three
random pages (the row's leaf, its old purge-time and store-time entries) instead of one.
"""

from __future__ import annotations

import re
from typing import Final

FORMAT: Final = "shardcache/1"

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
-- value last: a column stored after a long value sits in its overflow pages, so a scan
-- of expiry times or sizes (purge sweeps, count, culling) would read every value.
CREATE TABLE IF NOT EXISTS entries (
    key BLOB PRIMARY KEY,
    file TEXT,
    fmt INTEGER NOT NULL,
    size INTEGER NOT NULL,
    store_time REAL NOT NULL,
    expire_time REAL,
    purge_time REAL,
    access_time REAL NOT NULL,
    access_count INTEGER NOT NULL DEFAULT 0,
    tag TEXT,
    value BLOB
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_tag ON entries(tag) WHERE tag IS NOT NULL;
-- Not AUTOINCREMENT (one page less per commit): pruning never removes the newest row,
-- so max(seq) + 1 still only grows.
CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY, keys BLOB);
CREATE TABLE IF NOT EXISTS leases (
    key BLOB PRIMARY KEY, owner TEXT NOT NULL, deadline REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trash (file TEXT NOT NULL);
INSERT OR IGNORE INTO settings VALUES ('volume', 0);
CREATE TRIGGER IF NOT EXISTS entries_insert AFTER INSERT ON entries BEGIN
    UPDATE settings SET value = value + NEW.size WHERE name = 'volume';
END;
CREATE TRIGGER IF NOT EXISTS entries_delete AFTER DELETE ON entries BEGIN
    UPDATE settings SET value = value - OLD.size WHERE name = 'volume';
    INSERT INTO trash SELECT OLD.file WHERE OLD.file IS NOT NULL;
END;
CREATE TRIGGER IF NOT EXISTS entries_update AFTER UPDATE OF size, file ON entries BEGIN
    UPDATE settings SET value = value + NEW.size - OLD.size WHERE name = 'volume';
    INSERT INTO trash SELECT OLD.file WHERE OLD.file IS NOT NULL AND OLD.file IS NOT NEW.file;
END;
"""

#: The tables, indexes and triggers SCHEMA creates: a file that has them all (and the byte
#: total row) opens without the write lock.
SCHEMA_NAMES: Final = frozenset(
    re.findall(r"CREATE (?:TABLE|INDEX|TRIGGER) IF NOT EXISTS (\w+)", SCHEMA)
)

#: Bytes charged per row on top of key and value: B-tree cell, index entries, page slack.
ROW_OVERHEAD: Final = 64

# -- reads (loop thread) --------------------------------------------------------------------
GET: Final = (
    "SELECT value, fmt, expire_time, file, purge_time, store_time FROM entries WHERE key = ?"
)
GET_VALUE: Final = "SELECT value, fmt, expire_time, file FROM entries WHERE key = ?"
GET_MANY: Final = (
    "SELECT key, value, fmt, expire_time, file, purge_time, store_time FROM entries "
    "WHERE key IN ({})"
)
HAS: Final = "SELECT expire_time FROM entries WHERE key = ?"
KEYS_AFTER: Final = (
    "SELECT key FROM entries WHERE key > ? AND (expire_time IS NULL OR expire_time > ?) "
    "ORDER BY key LIMIT ?"
)
ITEMS_AFTER: Final = (
    "SELECT key, value, fmt, expire_time, file FROM entries "
    "WHERE key > ? AND (expire_time IS NULL OR expire_time > ?) ORDER BY key LIMIT ?"
)
COUNT_LIVE: Final = "SELECT count(*) FROM entries WHERE expire_time IS NULL OR expire_time > ?"
VOLUME: Final = "SELECT value FROM settings WHERE name = 'volume'"
CHANGES_SINCE: Final = "SELECT seq, keys FROM changes WHERE seq > ? ORDER BY seq"
LAST_CHANGE: Final = "SELECT coalesce(max(seq), 0) FROM changes"

# -- writes (writer thread, or the loop thread when nothing is queued) ----------------------
UPSERT: Final = """
INSERT INTO entries (key, value, file, fmt, size, store_time, expire_time, purge_time,
                     access_time, access_count, tag)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)
ON CONFLICT (key) DO UPDATE SET
    value = excluded.value, file = excluded.file, fmt = excluded.fmt, size = excluded.size,
    store_time = excluded.store_time, expire_time = excluded.expire_time,
    purge_time = excluded.purge_time, access_time = excluded.access_time,
    access_count = 0, tag = excluded.tag
"""
# Consecutive plain sets of one batch as one statement: one sqlite3 call and one GIL
# hand-back for many rows, not one per row (a later row for the same key updates the
# earlier one, in order). Fixed sizes, so that few texts share the statement cache.
UPSERT_CHUNKS: Final = (32, 16, 8, 4, 2)
_UPSERT_ROW: Final = "(?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)"
_UPSERT_HEAD, _, _UPSERT_TAIL = UPSERT.partition("VALUES " + _UPSERT_ROW)
UPSERT_ROWS: Final = {
    n: _UPSERT_HEAD + "VALUES " + ", ".join([_UPSERT_ROW] * n) + _UPSERT_TAIL for n in UPSERT_CHUNKS
}
# add(): the upsert only replaces a row that has expired (its WHERE fails for a live one).
ADD: Final = UPSERT + " WHERE entries.expire_time IS NOT NULL AND entries.expire_time <= ?"
DELETE: Final = "DELETE FROM entries WHERE key = ? RETURNING expire_time"
POP: Final = "DELETE FROM entries WHERE key = ? RETURNING value, fmt, expire_time, file"
TOUCH: Final = (
    "UPDATE entries SET expire_time = ?, purge_time = ? "
    "WHERE key = ? AND (expire_time IS NULL OR expire_time > ?)"
)
SELECT_FOR_UPDATE: Final = (
    "SELECT value, fmt, expire_time, file, purge_time FROM entries WHERE key = ?"
)
SET_VALUE: Final = "UPDATE entries SET value = ?, fmt = ?, size = ?, store_time = ? WHERE key = ?"
EVICT_TAG: Final = "DELETE FROM entries WHERE tag = ? RETURNING key, expire_time"
# purge_time, not expire_time: an entry inside its stale_ttl window is expired for get()
# but still serves stale-while-revalidate, and a cron job's expire() must not end that.
EXPIRE: Final = "DELETE FROM entries WHERE purge_time <= ? RETURNING key"
# Purging without the index: a sweep by key over a window of the table (contiguous pages),
# from a cursor the shard keeps. SWEEP_END is the window's last key (None past the end).
SWEEP_END: Final = "SELECT key FROM entries WHERE key > ? ORDER BY key LIMIT 1 OFFSET ?"
SWEEP: Final = "DELETE FROM entries WHERE key > ? AND key <= ? AND purge_time <= ?"
SWEEP_TAIL: Final = "DELETE FROM entries WHERE key > ? AND purge_time <= ?"
PURGE_SOME: Final = (
    "DELETE FROM entries WHERE key IN "
    "(SELECT key FROM entries WHERE purge_time <= ? ORDER BY purge_time LIMIT ?)"
)
EXPIRED_VICTIMS: Final = (
    "SELECT key, size FROM entries WHERE purge_time <= ? ORDER BY purge_time LIMIT ?"
)
DELETE_KEY: Final = "DELETE FROM entries WHERE key = ?"
DELETE_FILE_ROW: Final = "DELETE FROM entries WHERE key = ? AND file = ?"
DELETE_VALUE_ROW: Final = "DELETE FROM entries WHERE key = ? AND value = ?"
CLEAR: Final = "DELETE FROM entries WHERE expire_time IS NULL OR expire_time > ?"
CLEAR_ALL: Final = "DELETE FROM entries"
APPEND_CHANGE: Final = "INSERT INTO changes (keys) VALUES (?)"
PRUNE_CHANGES: Final = "DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM changes) - ?"
# stats() counters saved across instances: one settings row per counter, in shard 0.
STAT_PREFIX: Final = "stat."
ADD_STAT: Final = (
    "INSERT INTO settings (name, value) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value"
)
SAVED_STATS: Final = "SELECT name, value FROM settings WHERE name LIKE ?"
TRASH: Final = "SELECT rowid, file FROM trash"
EMPTY_TRASH: Final = "DELETE FROM trash WHERE rowid = ? AND file = ?"
TOUCH_ACCESS: Final = (
    "UPDATE entries SET access_time = max(access_time, ?), access_count = access_count + ? "
    "WHERE key = ?"
)
LEASE_ACQUIRE: Final = """
INSERT INTO leases (key, owner, deadline) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, deadline = excluded.deadline
WHERE leases.deadline <= ? OR leases.owner = excluded.owner
"""
LEASE_RELEASE: Final = "DELETE FROM leases WHERE key = ? AND owner = ?"
LEASE_PRUNE: Final = "DELETE FROM leases WHERE deadline <= ?"

#: Built with the policy's index once a shard is half full (both only serve culling).
PURGE_INDEX: Final = (
    "CREATE INDEX IF NOT EXISTS entries_purge ON entries(purge_time) WHERE purge_time IS NOT NULL"
)
LAZY_INDEXES: Final = (
    "SELECT name FROM sqlite_master WHERE type = 'index' AND name IN ('entries_purge', ?)"
)

# Eviction policies as data: the ORDER BY that picks victims, and the index it needs.
EVICTION: Final[dict[str, tuple[str, str] | None]] = {
    "least-recently-stored": ("store_time", "entries_store"),
    "least-recently-used": ("access_time", "entries_access"),
    "least-frequently-used": ("access_count, access_time", "entries_frequency"),
    "none": None,
}


def policy_index_sql(order: str, name: str) -> str:
    """The CREATE INDEX of a policy's culling order."""
    return f"CREATE INDEX IF NOT EXISTS {name} ON entries({order})"


def cull_sql(order: str) -> str:
    """Up to ``?`` eviction candidates (key, size) in the policy's order, after skipping
    the first ``?`` (the batch's own writes, which stay)."""
    return f"SELECT key, size FROM entries ORDER BY {order} LIMIT ? OFFSET ?"
