"""Integrity checks and space reclaim: the slow, whole-file work, run on a thread."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._types import CheckReport

if TYPE_CHECKING:
    from ._shard import Shard

__all__ = ["check_shards", "vacuum_shards"]


def _connect(shard: Shard) -> sqlite3.Connection:
    conn = sqlite3.connect(shard.path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def check_shards(shards: Sequence[Shard], fix: bool) -> CheckReport:
    """SQLite integrity, missing and orphan value files, and the size accounting."""
    report = CheckReport()
    for shard in shards:
        try:
            conn = _connect(shard)
        except sqlite3.Error as exc:
            report.problems.append(f"{shard.path}: cannot open: {exc}")
            continue
        try:
            _check_one(shard, conn, fix, report)
        except sqlite3.DatabaseError as exc:
            report.problems.append(f"{shard.path}: {exc}")
        finally:
            conn.close()
    return report


def _check_one(shard: Shard, conn: sqlite3.Connection, fix: bool, report: CheckReport) -> None:
    result = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    if result != ["ok"]:
        report.problems.extend(f"{shard.path}: {line}" for line in result[:20])
        if not fix:
            return
        # Damaged indexes are rebuilt from the table; a damaged table is beyond repair here
        # (reopen with on_corrupt="reset": a cache is rebuildable data).
        conn.execute("REINDEX")
        if [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()] != ["ok"]:
            report.problems.append(
                f"{shard.path}: still damaged after REINDEX; reopen the cache with "
                'on_corrupt="reset" to rebuild this shard'
            )
            return
        report.fixed.append(f"{shard.path}: indexes rebuilt (REINDEX)")
    # The shard's write lock, even to only look: a value file is written inside the
    # transaction that stores its row, so while no write transaction can be open, a file
    # without a row is an orphan, however young (no write of any process is in flight).
    conn.execute("BEGIN IMMEDIATE")
    try:
        rows = conn.execute("SELECT key, file FROM entries WHERE file IS NOT NULL").fetchall()
        known = {name for _key, name in rows}
        # Files of rows already dropped, that their writer unlinks after its commit.
        known.update(name for (name,) in conn.execute("SELECT file FROM trash"))
        for key, name in rows:
            if not shard.owns_file(name) or not (shard.values_dir / name).exists():
                report.problems.append(f"{shard.path}: value file {name} is missing")
                if fix:
                    conn.execute("DELETE FROM entries WHERE key = ?", (key,))
                    report.fixed.append(f"{shard.path}: dropped the entry of missing {name}")
        for path in shard.values_dir.glob(f"{shard.index:03d}-*"):
            if path.name in known or not path.exists():
                continue  # (one gone since the listing was a trashed file: not a problem)
            report.problems.append(f"{path}: orphan value file")
            if fix:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                report.fixed.append(f"{path}: removed orphan value file")
        recorded = conn.execute("SELECT value FROM settings WHERE name = 'volume'").fetchone()[0]
        actual = conn.execute("SELECT coalesce(sum(size), 0) FROM entries").fetchone()[0]
        if recorded != actual:
            report.problems.append(
                f"{shard.path}: size accounting says {recorded} bytes, entries hold {actual}"
            )
            if fix:
                conn.execute("UPDATE settings SET value = ? WHERE name = 'volume'", (actual,))
                report.fixed.append(f"{shard.path}: size accounting reset to {actual}")
        if fix:
            # Every change above is a deletion the near caches must hear about.
            conn.execute("INSERT INTO changes (keys) VALUES (NULL)")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def vacuum_shards(shards: Sequence[Shard]) -> None:
    """VACUUM each shard (waits for other writers), then truncate its WAL."""
    for shard in shards:
        conn = _connect(shard)
        try:
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.DatabaseError as exc:  # damaged, full disk: a CacheError naming it
            raise shard._corrupt(exc) from exc
        finally:
            conn.close()
