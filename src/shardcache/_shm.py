"""The ``-shm`` registry: one read-only map of each WAL-index header per file, per process.

A shard validates its near cache by comparing the 48-byte WAL-index header at the start of
its ``-shm`` file (it changes on every commit, by any process) with the one it saw last:
reading a mapped header costs ~0.1 us, where asking SQLite (``PRAGMA data_version``) costs
a statement. ``_acquire_shm`` maps a header, shared by every shard of the process that uses
the same file, and ``_release_shm`` unmaps it once the last of them let go.

It is a module of its own because the map's lifetime follows the process and its POSIX
locks, not any one shard: the registry, its lock and its fork handler are process-wide
state, and they must never close a descriptor early (see below).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
from typing import Any

# POSIX advisory locks belong to the (process, file) pair: closing ANY descriptor of the
# -shm file drops every lock this process holds on it, SQLite's own included; another
# process then believes it is the first user, reinitializes the file, and this one dies
# with SIGBUS. So the descriptor behind a map stays open while any shard of this process
# maps that file, and is closed only after the last of them closed its connections.
_shm_lock = threading.Lock()
_shm_maps: dict[str, list[Any]] = {}  # path -> [fd, mmap, users]


def _acquire_shm(path: str) -> mmap.mmap | None:
    with _shm_lock:
        entry = _shm_maps.get(path)
        if entry is None:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                return None
            try:
                if os.fstat(fd).st_size < 48:
                    raise ValueError("WAL index not initialized")
                mapped = mmap.mmap(fd, 48, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                _shm_leaked.append(fd)  # never closed: that would drop SQLite's locks
                return None
            entry = _shm_maps[path] = [fd, mapped, 0]
        entry[2] += 1
        shm: mmap.mmap = entry[1]
        return shm


def _release_shm(path: str) -> None:
    with _shm_lock:
        entry = _shm_maps.get(path)
        if entry is None:
            return
        entry[2] -= 1
        if entry[2] <= 0:
            del _shm_maps[path]
            with contextlib.suppress(BufferError, ValueError):
                entry[1].close()
            os.close(entry[0])


_shm_leaked: list[int] = []


def _after_fork_in_child() -> None:
    global _shm_lock
    _shm_lock = threading.Lock()  # it may have been held by a parent's thread at fork time
    # The child keeps the inherited maps (valid, shared) but holds none of the parent's
    # SQLite locks; it must not close them for the parent's shards: forget the users.
    for entry in _shm_maps.values():
        entry[2] = 10**9


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
