"""Stampede protection, written once for ``get_or_set``, ``@acached`` and the integrations.

Three layers, each bounded by ``lock_timeout``:

1. In one process, one *flight* per key: the first caller starts a shared task that fills
   the key; later callers await the same task (``asyncio.shield``, with a waiter count as in
   async-lru: cancelling one waiter never cancels the work, cancelling the last one does).
   An exception reaches every waiter of that flight once and is not cached.
2. Across processes, a *lease* row in the key's shard (owner, deadline), taken atomically.
   A process that loses the race re-reads the key with backoff and jitter until the winner
   has stored it; it computes itself only when ``lock_timeout`` runs out, so a crashed
   leader (whose lease simply expires) never blocks anyone forever.
3. ``stale_ttl``: an expired entry inside its stale window is returned at once while one
   background flight refreshes it; a failed refresh is logged and the stale value keeps
   being served until the window ends.

With ``fail_open`` (the decorator and the HTTP integrations) a failing cache is logged once
per cause and the function is still called: the caller never sees the cache's exception.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

from ._errors import CacheError
from ._keys import encode_key
from ._types import DEFAULT, TTL, CacheBackend, Entry, Key

__all__ = ["get_or_compute"]

logger = logging.getLogger("shardcache")

_OWNER_PREFIX: Final = uuid.uuid4().hex[:12]
_FIRST_DELAY = 0.002
_MAX_DELAY = 0.1
_warned: set[str] = set()


def _warn_once(what: str, exc: BaseException) -> None:
    cause = f"{what}:{type(exc).__name__}"
    if cause not in _warned:
        _warned.add(cause)
        logger.warning("shardcache %s failed; calling through (fail open): %r", what, exc)


class _Flight:
    """One in-process computation of a key, shared by every caller that wants it."""

    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.waiters = 0


_flights: dict[tuple[int, int, bytes], _Flight] = {}
# Recent compute durations per key, for the probabilistic early refresh (XFetch).
_durations: dict[tuple[int, bytes], float] = {}


def _fresh(entry: Entry | None, now: float) -> bool:
    return entry is not None and (entry.expire_time is None or entry.expire_time > now)


async def get_or_compute(
    backend: CacheBackend,
    key: Key,
    factory: Callable[[], Awaitable[Any]],
    *,
    ttl: TTL = DEFAULT,
    tag: str | None = None,
    stale_ttl: float = 0,
    lock_timeout: float = 30.0,
    cache_if: Callable[[Any], bool] | None = None,
    early_refresh: float | None = None,
    fail_open: bool = False,
    type: Any = None,
) -> Any:
    """Return the cached value of ``key``, computing it with ``factory`` at most once.

    See the module docstring for the algorithm. ``cache_if(result)`` False: the result is
    returned but not stored. ``early_refresh`` (beta, e.g. 1.0): refresh a fresh entry
    early with probability rising as it nears expiry (the XFetch rule).
    """
    if lock_timeout is None or not lock_timeout > 0:
        from ._errors import ConfigurationError

        raise ConfigurationError(f"lock_timeout={lock_timeout!r}: expected seconds > 0")
    kb = encode_key(key)
    try:
        entry = await backend.get_entry(key, type=type)
    except CacheError as exc:
        if not fail_open:
            raise
        _warn_once("read", exc)
        entry = None
    now = time.time()
    args = (backend, key, kb, factory, ttl, tag, stale_ttl, lock_timeout, cache_if, fail_open, type)
    if entry is not None:
        if _fresh(entry, now):
            if early_refresh and entry.expire_time is not None:
                delta = _durations.get((id(backend), kb), 0.0)
                if (
                    delta
                    and now - delta * early_refresh * math.log(random.random()) >= entry.expire_time
                ):
                    _start(args, background=True)
            return entry.value
        # Stale but inside its window: serve it now, refresh once in the background.
        _start(args, background=True)
        return entry.value
    return await _join(_start(args, background=False), backend)


def _start(args: tuple[Any, ...], *, background: bool) -> _Flight:
    backend, kb = args[0], args[2]
    loop = asyncio.get_running_loop()
    fkey = (id(loop), id(backend), kb)
    flight = _flights.get(fkey)
    if flight is None:
        task = loop.create_task(_fill(*args, background=background))
        flight = _Flight(task)
        _flights[fkey] = flight

        def done(t: asyncio.Task[Any], fkey: tuple[int, int, bytes] = fkey) -> None:
            if _flights.get(fkey) is flight:
                del _flights[fkey]
            if background and not t.cancelled() and t.exception() is not None:
                logger.warning("shardcache background refresh failed", exc_info=t.exception())

        task.add_done_callback(done)
        if background:
            spawn = getattr(backend, "_track", None)
            if spawn is not None:
                spawn(task)
    elif not background:
        note = getattr(backend, "_note_stampede_wait", None)
        if note is not None:
            note()
    return flight


async def _join(flight: _Flight, backend: CacheBackend) -> Any:
    flight.waiters += 1
    try:
        return await asyncio.shield(flight.task)
    finally:
        flight.waiters -= 1
        if flight.waiters == 0 and not flight.task.done():
            flight.task.cancel()  # the last waiter was cancelled: nobody wants the result


async def _fill(
    backend: CacheBackend,
    key: Key,
    kb: bytes,
    factory: Callable[[], Awaitable[Any]],
    ttl: TTL,
    tag: str | None,
    stale_ttl: float,
    lock_timeout: float,
    cache_if: Callable[[Any], bool] | None,
    fail_open: bool,
    type: Any,
    *,
    background: bool,
) -> Any:
    owner = f"{_OWNER_PREFIX}-{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + lock_timeout
    delay = _FIRST_DELAY
    while True:
        try:
            leased = await backend.acquire_lease(key, owner, lock_timeout)
        except CacheError as exc:
            if not fail_open:
                raise
            _warn_once("lease", exc)
            return await _compute(
                backend, key, kb, factory, ttl, tag, stale_ttl, cache_if, fail_open
            )
        if leased:
            try:
                if not background:
                    # Another process may have stored it while we queued for the lease.
                    entry = await _read(backend, key, fail_open, type)
                    if _fresh(entry, time.time()):
                        return entry.value  # type: ignore[union-attr]
                return await _compute(
                    backend, key, kb, factory, ttl, tag, stale_ttl, cache_if, fail_open
                )
            finally:
                await _release(backend, key, owner)
        if background:
            return None  # another process is refreshing; keep serving the stale value
        note = getattr(backend, "_note_stampede_wait", None)
        if note is not None:
            note()
        # Another process computes: wait for its value, with backoff and jitter.
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                # No waiter hangs past lock_timeout: compute ourselves.
                return await _compute(
                    backend, key, kb, factory, ttl, tag, stale_ttl, cache_if, fail_open
                )
            await asyncio.sleep(min(left, delay * (0.5 + random.random())))
            delay = min(delay * 2, _MAX_DELAY)
            entry = await _read(backend, key, fail_open, type)
            if _fresh(entry, time.time()):
                return entry.value  # type: ignore[union-attr]
            if delay >= _MAX_DELAY:
                break  # re-try the lease: its holder may have died or given up
        delay = _FIRST_DELAY


async def _read(backend: CacheBackend, key: Key, fail_open: bool, type: Any) -> Entry | None:
    try:
        return await backend.get_entry(key, type=type)
    except CacheError as exc:
        if not fail_open:
            raise
        _warn_once("read", exc)
        return None


async def _release(backend: CacheBackend, key: Key, owner: str) -> None:
    try:
        # Shielded: a cancelled leader still frees the lease for the others.
        await asyncio.shield(backend.release_lease(key, owner))
    except CacheError as exc:
        _warn_once("lease release", exc)


async def _compute(
    backend: CacheBackend,
    key: Key,
    kb: bytes,
    factory: Callable[[], Awaitable[Any]],
    ttl: TTL,
    tag: str | None,
    stale_ttl: float,
    cache_if: Callable[[Any], bool] | None,
    fail_open: bool,
) -> Any:
    started = time.monotonic()
    value = await factory()
    if len(_durations) > 10_000:
        _durations.clear()
    _durations[(id(backend), kb)] = time.monotonic() - started
    if cache_if is not None and not cache_if(value):
        return value
    try:
        await backend.set(key, value, ttl=ttl, tag=tag, stale_ttl=stale_ttl)
    except CacheError as exc:
        if not fail_open:
            raise
        _warn_once("write", exc)
    return value
