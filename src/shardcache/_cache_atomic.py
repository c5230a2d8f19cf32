"""The single-key atomic operations of :class:`~shardcache.AsyncCache` (``add``, ``pop``,
``touch``, ``incr``/``decr``) and its stampede primitives (leases, ``get_or_set``).

Each is one operation the executor runs inside a shard's transaction (``_ops``), so it is
atomic across tasks and processes. A mixin of ``AsyncCache``, like ``_cache_admin``: the
facade's hot paths (``get``, ``set``) stay in ``_cache``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from . import _ops as ops
from ._codec import check_type
from ._keys import encode_key
from ._options import check_compute, expire_at
from ._stampede import _flights, get_or_compute, supersede
from ._types import DEFAULT, MISS, TTL, CacheBackend, Key

T = TypeVar("T")

if TYPE_CHECKING:
    from ._codec import Codec
    from ._shard import Row, Shard


class _AtomicOps:
    """``add``, ``pop``, ``touch``, ``incr``, ``decr``, leases and ``get_or_set``."""

    if TYPE_CHECKING:
        # Defined by AsyncCache (declared only while type checking, as in _cache_admin).
        _ready: bool
        _codec: Codec
        _default_ttl: float | None
        _hits: int
        _misses: int
        _sets: int
        _deletes: int
        _stampede_waits: int

        async def _ensure_open(self, timeout: float | None = None) -> None: ...
        def _encode(
            self, key: Any, value: Any, ttl: Any, tag: Any, stale_ttl: Any, now: float
        ) -> tuple[int, tuple[Any, ...], bool]: ...
        def _release_now(self, kb: bytes, owner: str) -> None: ...
        async def _executor_write_direct(
            self, index: int, fn: Callable[..., Any], args: tuple[Any, ...], direct: bool = True
        ) -> Any: ...
        async def _routed(self, key: Any) -> tuple[bytes, Shard]: ...
        def _value(
            self, shard: Shard, kb: bytes, row: Row, type: Any, file: str | None = None
        ) -> Any: ...
        async def get(self, key: Key, default: Any = None, *, type: Any = None) -> Any: ...

    async def add(
        self, key: Key, value: Any, *, ttl: TTL = DEFAULT, tag: str | None = None
    ) -> bool:
        """Store only if ``key`` is missing or expired; atomic across processes."""
        # Encoded (and checked) first: bad input raises before the directory is created.
        index, args, to_file = self._encode(key, value, ttl, tag, 0, time.time())
        if not self._ready:
            await self._ensure_open()
        if _flights:
            supersede(self, args[0], self._release_now)
        added: bool = await self._executor_write_direct(index, ops.op_add, args, not to_file)
        if added:
            self._sets += 1
        return added

    async def pop(self, key: Key, default: Any = None) -> Any:
        """Atomically get and delete ``key``; ``default`` when it is missing."""
        kb, shard = await self._routed(key)
        if _flights:
            supersede(self, kb, self._release_now)
        got = await self._executor_write_direct(shard.index, ops.op_pop, (kb,))
        if got is None:
            self._misses += 1
            return default
        value = self._value(shard, kb, (got[0], got[1], None, None, None, 0.0), None)
        if value is MISS:
            return default
        self._hits += 1
        self._deletes += 1
        return value

    async def touch(self, key: Key, *, ttl: TTL) -> bool:
        """Reset the expiry of a live entry; False if it is missing."""
        expire = expire_at(ttl, self._default_ttl, time.time())  # checked before opening
        kb, shard = await self._routed(key)
        touched: bool = await self._executor_write_direct(
            shard.index, ops.op_touch, (kb, expire, expire)
        )
        return touched

    async def incr(self, key: Key, delta: int = 1, *, default: int | None = 0) -> int:
        """Add ``delta`` atomically (across tasks and processes); a missing key starts at
        ``default`` (``None``: ``KeyError``). The value must be an int."""
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError(f"delta must be an int, not {type(delta).__name__}")
        if default is not None and (isinstance(default, bool) or not isinstance(default, int)):
            raise TypeError(f"default must be an int or None, not {type(default).__name__}")
        kb, shard = await self._routed(key)
        if _flights:  # a computation of this key in flight must not overwrite the count
            supersede(self, kb, self._release_now)
        value: int = await self._executor_write_direct(
            shard.index, ops.op_incr, (kb, delta, default, self._codec)
        )
        return value

    async def decr(self, key: Key, delta: int = 1, *, default: int | None = 0) -> int:
        """``incr(key, -delta)``."""
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError(f"delta must be an int, not {type(delta).__name__}")
        return await self.incr(key, -delta, default=default)

    # -- stampede primitives (the CacheBackend seam) -------------------------------------
    async def acquire_lease(self, key: Key, owner: str, duration: float) -> bool:
        """Take or renew the compute lease of ``key`` (across processes); False if held."""
        kb, shard = await self._routed(key)
        taken: bool = await self._executor_write_direct(
            shard.index, ops.op_lease, (kb, owner, float(duration))
        )
        return taken

    async def release_lease(self, key: Key, owner: str) -> None:
        """Drop the lease of ``key`` if ``owner`` still holds it."""
        kb, shard = await self._routed(key)
        await self._executor_write_direct(shard.index, ops.op_release, (kb, owner))

    def _note_stampede_wait(self) -> None:
        self._stampede_waits += 1

    async def get_or_set(
        self,
        key: Key,
        factory: Callable[[], Awaitable[T]],
        *,
        ttl: TTL = DEFAULT,
        tag: str | None = None,
        stale_ttl: float = 0,
        lock_timeout: float = 30.0,
        type: Any = None,
    ) -> T:
        """The value of ``key``; on a miss, ``await factory()`` computes and stores it.

        Stampede-protected exactly like ``@acached``: one task in one process computes,
        the others wait for its result (or get the stale value within ``stale_ttl``).
        ``type=`` decodes a stored value into that type, as ``get(type=)`` does, so that a
        hit returns what the factory returned (a Struct, a dataclass), not a dict.
        """
        # Checked before anything runs: a factory's side effects must not happen for a
        # value that would then be refused.
        lock_timeout = check_compute(ttl, tag, stale_ttl, lock_timeout)
        if type is not None:
            check_type(type)
        if not self._ready:
            # An open waits for a shard another process is creating (up to 30 s): no
            # longer than lock_timeout here. The key is checked first: a bad one raises
            # before the directory is created.
            encode_key(key)
            await self._ensure_open(lock_timeout)
        # The hit first, through get(): it counts the hit or miss in stats() (as @acached
        # does); get_or_compute reads entries without counting, stale ones included.
        hit = await self.get(key, MISS, type=type)
        if hit is not MISS:
            return cast("T", hit)  # stored by a factory of this key: its type, as a rule
        value: T = await get_or_compute(
            cast("CacheBackend", self),  # an AsyncCache: this class is one of its bases
            key,
            factory,
            ttl=ttl,
            tag=tag,
            stale_ttl=stale_ttl,
            lock_timeout=lock_timeout,
            type=type,
        )
        return value
