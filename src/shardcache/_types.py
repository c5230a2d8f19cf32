"""Shared types: the cache Protocol integrations depend on, keys, and plain records.

The Protocol is the seam between the engine and everything built on it (``@acached``, the
ASGI middleware, the aiohttp session): they accept any object that implements it, so another
backend (Redis) plugs in unchanged and the stampede algorithm is written once.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

import msgspec

__all__ = [
    "DEFAULT",
    "MISSING",
    "CacheBackend",
    "CacheStats",
    "CheckReport",
    "Entry",
    "Key",
    "ShardStats",
]

T = TypeVar("T")


class _Sentinel(enum.Enum):
    MISSING = enum.auto()
    DEFAULT = enum.auto()
    NOT_NOW = enum.auto()
    MISS = enum.auto()

    def __repr__(self) -> str:
        return self.name


#: "Absent": ``None`` is a value in shardcache, so absence needs its own marker.
MISSING: Final = _Sentinel.MISSING
#: "Not given": for options such as ``ttl`` where ``None`` means "never expires".
DEFAULT: Final = _Sentinel.DEFAULT

#: From a synchronous fast path (``AsyncCache._peek``): "this one needs an await".
NOT_NOW: Final = _Sentinel.NOT_NOW

#: A row that is there but cannot answer (a misfit for ``type=``, a lost value file): a miss.
MISS: Final = _Sentinel.MISS

Missing = _Sentinel
#: A key: ``str``, ``bytes``, ``int``, ``float`` or a tuple of keys.
Key = str | bytes | int | float | tuple[Any, ...]
#: ``ttl`` as the options accept it: seconds, ``None`` (never expires) or ``DEFAULT``.
TTL = float | int | None | _Sentinel


class Entry(msgspec.Struct, frozen=True):
    """A stored value with its timing, as the stampede machinery needs it.

    ``expire_time`` is a Unix timestamp (``None``: never expires). An entry with
    ``expire_time`` in the past is *stale*: it is returned by ``get_entry`` only while it is
    inside the ``stale_ttl`` window it was stored with.
    """

    value: Any
    expire_time: float | None
    store_time: float


class ShardStats(msgspec.Struct, frozen=True):
    """Per-shard detail in :class:`CacheStats`."""

    index: int
    count: int
    volume: int
    queue_depth: int


class CacheStats(msgspec.Struct, frozen=True):
    """Counters and sizes returned by :meth:`AsyncCache.stats`.

    The counters survive reopening: each instance adds its own to totals saved in the
    directory when it closes (``aclose``), and ``stats()`` shows those totals plus this
    instance's counts since it opened. ``stats(reset=True)`` zeroes both. An instance that
    never closes (a killed process) loses its unsaved counts. ``count`` and ``volume``
    describe the whole cache as every process sees it.
    """

    hits: int
    misses: int
    sets: int
    deletes: int
    evictions: int
    expirations: int
    stampede_waits: int
    count: int
    volume: int
    near_hits: int
    shards: list[ShardStats]

    @property
    def queue_depth(self) -> list[int]:
        """Pending writes per shard."""
        return [s.queue_depth for s in self.shards]


class CheckReport(msgspec.Struct):
    """Result of :meth:`AsyncCache.check`: ``ok`` when no problem was found."""

    problems: list[str] = msgspec.field(default_factory=list)
    fixed: list[str] = msgspec.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the check found nothing wrong."""
        return not self.problems


@runtime_checkable
class CacheBackend(Protocol):
    """The small surface that ``@acached``, the middleware and the session depend on.

    Besides the user-facing calls it has three primitives for stampede protection:

    * ``get_entry(key)`` -> :class:`Entry` or ``None``: like ``get`` but returns the expiry
      too, and also returns an *expired* entry while it is within the ``stale_ttl`` it was
      stored with (``set(..., stale_ttl=s)`` keeps it that long past expiry).
    * ``acquire_lease(key, owner, duration)`` -> bool: atomically (across tasks and processes)
      take or renew the lease for computing ``key``; False when another owner holds a lease
      that has not yet expired.
    * ``release_lease(key, owner)``: drop the lease if ``owner`` still holds it.
    """

    async def get(self, key: Key, default: Any = None, *, type: Any = None) -> Any:
        """The value of ``key`` (fresh entries only), or ``default``."""
        ...

    async def set(
        self,
        key: Key,
        value: Any,
        *,
        ttl: TTL = DEFAULT,
        tag: str | None = None,
        stale_ttl: float = 0,
    ) -> None:
        """Store ``value``; ``stale_ttl`` keeps it that long past expiry for ``get_entry``."""
        ...

    async def add(
        self, key: Key, value: Any, *, ttl: TTL = DEFAULT, tag: str | None = None
    ) -> bool:
        """Store only if ``key`` is missing or expired; True if stored."""
        ...

    async def delete(self, key: Key) -> bool:
        """Delete ``key``; True if a live entry was removed."""
        ...

    async def evict(self, tag: str) -> int:
        """Delete every entry stored with ``tag``; how many."""
        ...

    async def get_or_set(
        self,
        key: Key,
        factory: Callable[[], Awaitable[T]],
        *,
        ttl: TTL = DEFAULT,
        tag: str | None = None,
        stale_ttl: float = 0,
        lock_timeout: float = 30.0,
    ) -> T:
        """The value of ``key``, computed once by ``factory`` on a miss."""
        ...

    async def get_entry(self, key: Key, *, type: Any = None) -> Entry | None:
        """The value with its expiry, stale entries within their window included."""
        ...

    async def acquire_lease(self, key: Key, owner: str, duration: float) -> bool:
        """Take or renew the compute lease of ``key``; False if another owner holds it."""
        ...

    async def release_lease(self, key: Key, owner: str) -> None:
        """Drop the lease of ``key`` if ``owner`` holds it."""
        ...

    async def aclose(self) -> None:
        """Commit what is pending and release every resource."""
        ...
