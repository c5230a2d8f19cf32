"""Which event loop may use a cache's loop-thread connections: one at a time.

Reads are served on the event loop's thread through one connection per shard, and small
writes commit there through another: fast because no thread hop is in between, and safe
because a loop runs one callback at a time. A second thread running a loop of its own with
the same ``AsyncCache`` would use those connections at the same moment, and an SQLite
connection is not for concurrent use (wrong answers, or a crash). So they belong to one
loop's thread, and pass to another only once that loop has stopped (``asyncio.run`` after
``asyncio.run``, in any thread). Meanwhile the other loops' reads go through the read pool
(a connection per thread) and their writes through the writer thread, as any read or write
does that leaves the loop; near-cache hits need no connection and serve every loop.
"""

from __future__ import annotations

import asyncio
import threading

__all__ = ["LoopOwner"]

_get_ident = threading.get_ident


class LoopOwner:
    """The thread (and its running loop) that owns a cache's loop-thread connections."""

    __slots__ = ("_lock", "_loop", "ident")

    def __init__(self) -> None:
        self.ident = 0  # the owning loop's thread (0: none yet); compared on the hot path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def mine(self) -> bool:
        """True when the running loop's thread may use the connections now: it owns them,
        or takes them over from a loop that is no longer running."""
        ident = _get_ident()
        if ident == self.ident:
            return True
        with self._lock:
            loop = self._loop
            if self.ident not in (0, ident) and loop is not None and loop.is_running():
                return False
            self._loop = asyncio.get_running_loop()
            self.ident = ident
            return True
