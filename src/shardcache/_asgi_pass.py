"""Hit-for-pass as one process remembers it, for :class:`~shardcache.asgi.CacheMiddleware`.

The cache holds the marker: a ``"pass: <reason>"`` string under the URL's primary key for
``pass_ttl`` seconds, shared by every worker process. Reading it back (near cache, decode)
was the larger part of what the middleware cost a request to an uncacheable FastAPI
endpoint: ~4.5 of ~8.3 us of CPU in process. So each process also remembers, per key, until
when it passes plain requests without reading the cache: one second (``interval``) after a
GET last read the marker. The first request after that second reads the cache again, and
a GET then probes the app (Varnish's hit-for-miss), as before. A marker that expired, that
an invalidation dropped, or that a stored response replaced, in any process, is thus
noticed within the second::

    plain GET/HEAD ─key─▶ passing(key)? ─ yes ─▶ the app, tagged MISS; nothing read
                                        └ no ──▶ the full path: a GET reading the marker
                                                 (probe_due) gives the key one more second

A key's entry also says when this process last found its response not storable, so that
nobody waits for a stampede lease on a URL known as "pass" (:meth:`PassMemo.renewal`):

* while its marker is being written (and for ``interval`` after), a request that finds
  nothing stored yet asks the app itself;
* once its marker has expired (within ``horizon``, ``pass_ttl``, of the last sign of it),
  the request that finds it so asks the app and marks the URL again while the others keep
  passing. Before, each uncacheable URL's requests queued behind a lease every
  ``pass_ttl``, for three SQLite writes (lease, marker, release);
* one request per key and ``interval`` writes the marker (:meth:`PassMemo.marking`): the
  requests that waited for the first response need not write it again. Under load every
  write makes the writer's batch longer, and the lease releases wait in the same batches.
"""

from __future__ import annotations

import enum
import time
from typing import Final

__all__ = ["PassMemo", "Renewal"]

_monotonic: Final = time.monotonic


class Renewal(enum.Enum):
    """What a request that would store its response does when nothing is stored."""

    MISS = enum.auto()  #: not known as "pass": a miss like any other (coalesced)
    FETCH = enum.auto()  #: a marker is being written, or was seen a moment ago: ask the app
    MARK = enum.auto()  #: the marker expired a moment ago: ask the app and mark it again


class PassMemo:
    """Per key, the monotonic time until which this process passes without a cache read,
    and when it last wrote (or started writing) the key's marker; see the module
    docstring. ``horizon`` 0 (``pass_ttl=0``) turns the memo off.

    Bounded: a full memo is cleared (keys come from clients), which costs the keys in it
    one more cache read each.
    """

    __slots__ = ("_horizon", "_interval", "_limit", "_marks", "_until")

    def __init__(self, *, interval: float, horizon: float, limit: int) -> None:
        self._interval = interval
        self._horizon = horizon
        self._limit = limit
        self._until: dict[str, float] = {}
        self._marks: dict[str, float] = {}

    def passing(self, key: str) -> bool:
        """True while ``key`` is known as pass here: its plain request may skip the cache."""
        until = self._until.get(key)
        return until is not None and _monotonic() < until

    def probe_due(self, key: str) -> bool:
        """A GET read the marker of ``key``: True at most once per ``interval`` (this
        request is the one to probe the app), after which the key passes for a second."""
        now = _monotonic()
        if self._until.get(key, now) > now:
            return False
        self._pass_for_a_while(key, now)
        return True

    def note(self, key: str) -> None:
        """Another process's marker for ``key`` was read: pass for ``interval``."""
        self._pass_for_a_while(key, _monotonic())

    def marking(self, key: str) -> bool:
        """A response for ``key`` proved not storable: True when this request is the one
        to write the marker (none was written or read here within ``interval``)."""
        now = _monotonic()
        if self._horizon <= 0 or self._recent(key, now):
            return False
        self._mark(key, now)
        return True

    def marked(self, key: str) -> None:
        """A marker for ``key`` is being written: a request that finds nothing stored yet
        takes no lease (:meth:`renewal`); the next GET that reads it probes the app."""
        if self._horizon > 0:
            self._mark(key, _monotonic())

    def renewal(self, key: str) -> Renewal:
        """Nothing is stored for ``key``: see :class:`Renewal` and the module docstring."""
        if self._horizon <= 0:
            return Renewal.MISS
        now = _monotonic()
        if self._recent(key, now):
            return Renewal.FETCH
        seen = max(self._until.get(key, -1.0), self._marks.get(key, -1.0))
        if now >= seen + self._horizon:  # passed long ago, or never: a miss like any other
            self.forget(key)
            return Renewal.MISS
        self._pass_for_a_while(key, now)  # the others pass while this one marks it again
        return Renewal.MARK

    def forget(self, key: str) -> None:
        """``key`` holds a response now, or was invalidated: read the cache again."""
        self._until.pop(key, None)
        self._marks.pop(key, None)

    def _recent(self, key: str, now: float) -> bool:
        """A marker for ``key`` was read within ``interval`` (its window is open) or written
        (or started) within ``interval``."""
        return self._until.get(key, now) > now or self._marks.get(key, -1.0) > now - self._interval

    def _pass_for_a_while(self, key: str, now: float) -> None:
        self._put(self._until, key, now + self._interval)

    def _mark(self, key: str, now: float) -> None:
        self._put(self._marks, key, now)

    def _put(self, memo: dict[str, float], key: str, value: float) -> None:
        if len(memo) >= self._limit and key not in memo:
            memo.clear()
        memo[key] = value
