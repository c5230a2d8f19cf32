"""No fork while one of this package's threads is inside SQLite.

A forked child inherits SQLite's in-memory lock bookkeeping for every shard the parent has
open, but none of the threads that hold those locks. A transaction that the writer thread
had open at the instant of a fork stays open in the child for good, and the child's own
new connections to that shard wait for a lock that nobody will release (SQLite's busy
timeout, then ``CacheTimeoutError``). So the threads that run SQLite work (the writer, the
checkpointer, the read pool, an open, a write committed on the loop thread) pass through
:data:`GATE`, and a fork (``os.register_at_fork``) first waits until none is inside, and
holds new entries back until it is done. Reads on the loop thread stay outside: a fork from
another thread in the middle of one leaves only a read mark, which blocks nothing but a
checkpoint's restart of the log.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType
from typing import Final

__all__ = ["GATE"]

# A thread inside is in one short SQLite step, bounded by a busy timeout: a fork that waits
# this long proceeds anyway rather than hang the caller.
_WAIT: Final = 30.0


class _Gate:
    """Entered around SQLite work by any number of threads at once; closed by a fork.

    Re-entrant per thread (a check that reopens a shard is inside twice): only the
    outermost entry counts, so a fork never waits for a thread that waits for it. The
    way in is one plain lock held for a counter update: it is on every transaction.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._forking = False
        self._own = 0  # the forking thread's own entry, if it is inside
        self._reopened = threading.Event()
        self._reopened.set()
        self._drained = threading.Event()
        self._depth = threading.local()

    def __enter__(self) -> None:
        local = self._depth
        depth: int = getattr(local, "n", 0)
        local.n = depth + 1
        if depth:
            return
        while True:
            with self._lock:
                if not self._forking:
                    self._inside += 1
                    return
            self._reopened.wait()  # a fork is under way: enter after it

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        local = self._depth
        depth: int = local.n - 1
        local.n = depth
        if depth:
            return
        with self._lock:
            self._inside -= 1
            if self._forking and self._inside <= self._own:
                self._drained.set()

    def before_fork(self) -> None:
        own = 1 if getattr(self._depth, "n", 0) else 0  # never wait for this thread itself
        with self._lock:
            self._forking = True
            self._own = own
            self._reopened.clear()
            self._drained.clear()
            if self._inside <= own:
                self._drained.set()
        self._drained.wait(_WAIT)

    def after_fork_in_parent(self) -> None:
        with self._lock:
            self._forking = False
        self._reopened.set()

    def after_fork_in_child(self) -> None:
        # Only the forking thread lives on: nobody is inside, and a lock may have been
        # copied while another thread held it.
        self._reset()


#: The gate of every cache in the process.
GATE: Final = _Gate()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=GATE.before_fork,
        after_in_parent=GATE.after_fork_in_parent,
        after_in_child=GATE.after_fork_in_child,
    )
