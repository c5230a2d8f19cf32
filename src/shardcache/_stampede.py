"""Stampede protection, written once for ``get_or_set``, ``@acached`` and the integrations.

Three layers, each bounded by ``lock_timeout``::

    caller A        caller B         flight task (one per loop+cache+key)     other process
       |  miss         |                    |                                      |
       |--start------------------------>    |--acquire_lease(key)--> SQLite <--lease?--|
       |               |--join (waits)-->   |   (owner, deadline)        lost: re-read with
       |               |                    |--factory()                 backoff + jitter,
       |               |                    |--set(key, value)           retry the lease
       |<------- value ------------------ --|--release_lease           <--value------|

1. In one process, one *flight* per key: the first caller starts a shared task that fills
   the key; later callers await the same task (a waiter count as in async-lru: cancelling one
   caller never cancels the work, cancelling the last one does). An exception reaches every
   waiter of that flight once and is not cached. If the flight itself ends cancelled while
   callers still want the value, the first of them to wake starts a new flight and the others
   join it. A caller that joined someone else's flight waits at most ``lock_timeout``, then
   computes itself.
2. Across processes, a *lease* row in the key's shard (owner, deadline), taken atomically.
   A process that loses the race re-reads the key with backoff and jitter until the winner
   has stored it, retrying the lease now and then; it computes when the lease expires (a
   crashed leader's lease simply does) or when its own ``lock_timeout`` runs out.
3. ``stale_ttl``: an expired entry inside its stale window is returned at once while one
   background flight refreshes it (owned by the cache, so ``aclose()`` drains it); a failed
   refresh is logged and the stale value keeps being served until the window ends.

With ``fail_open`` (the decorator and the HTTP integrations) a failing cache is logged once
per cause and the function is still called: the caller never sees the cache's exception.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
import math
import random
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Final

from ._breaker import open_within, opened
from ._errors import CacheError, CacheTimeoutError, ConfigurationError, observed
from ._keys import encode_key
from ._options import check_lock_timeout
from ._types import DEFAULT, MISSING, TTL, CacheBackend, Entry, Key

__all__ = ["cache_down", "get_or_compute", "supersede", "supersede_all"]

logger = logging.getLogger("shardcache")

_OWNER_PREFIX: Final = uuid.uuid4().hex[:12]
_FIRST_DELAY = 0.002
_MAX_DELAY = 0.1

# Causes already warned about, per backend (weakly: a closed cache takes its set along).
_warned: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()
_warned_unkeyed: set[str] = set()
# Lease releases scheduled from a done-callback (a cancelled acquire): kept referenced.
_cleanups: set[asyncio.Future[Any]] = set()


# What happens instead, when the failed step came after the function had run.
_THEN: Final = {
    "write": "the result is returned, maybe not stored",
    "lease release": "the lease expires at its deadline",
    "invalidation": "stored responses expire by their freshness",
}


def _warn_once(what: str, exc: BaseException, backend: Any = None) -> None:
    """Log a fail-open cache failure once per backend and exception type."""
    cause = type(exc).__qualname__
    try:
        seen = _warned.setdefault(backend, set()) if backend is not None else _warned_unkeyed
    except TypeError:  # a backend that cannot be weakly referenced
        seen = _warned_unkeyed
    if cause not in seen:
        seen.add(cause)
        then = _THEN.get(what, "calling through")
        logger.warning("shardcache %s failed; %s (fail open): %r", what, then, exc)


class _Job:
    """What a flight needs to fill one key: the backend, the factory and the options."""

    __slots__ = (
        "backend",
        "cache_if",
        "factory",
        "fail_open",
        "kb",
        "key",
        "lock_timeout",
        "owner",
        "stale_ttl",
        "storing",
        "superseded",
        "tag",
        "ttl",
        "type",
    )

    def __init__(
        self,
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
    ) -> None:
        self.backend = backend
        self.key = key
        self.kb = kb
        self.factory = factory
        self.ttl = ttl
        self.tag = tag
        self.stale_ttl = stale_ttl
        self.lock_timeout = lock_timeout
        self.cache_if = cache_if
        self.fail_open = fail_open
        self.type = type
        self.superseded = False  # the key was written or deleted since: do not store
        self.storing = False  # its own result is on its way to the cache
        self.owner: str | None = None  # the lease it holds, once taken


class _Flight:
    """One in-process computation of a key, shared by every caller that wants it."""

    __slots__ = ("background", "job", "task", "waiters")

    def __init__(self, task: asyncio.Task[Any], background: bool, job: _Job) -> None:
        self.task = task
        self.background = background
        self.job = job
        self.waiters = 0


_SCALARS: Final = frozenset({type(None), bool, int, float, str, bytes, complex})
_FlightKey = tuple[int, int, bytes]
_flights: dict[_FlightKey, _Flight] = {}
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
    if not opened(backend):
        # An open waits for a shard another process is creating (up to 30 s): no longer
        # than lock_timeout here, then it is a cache failure like any other.
        limit = check_lock_timeout(lock_timeout)
        try:
            await open_within(backend, limit)
        except CacheError as exc:  # CacheTimeoutError included
            if not fail_open:
                raise
            return await cache_down(backend, exc, key, factory, limit)
    if early_refresh is None:
        # The hit path, first and lean: a fresh entry needs no job, flight or lease.
        try:
            entry = await backend.get_entry(key, type=type)
        except Exception:
            entry = None  # the full path below reports the failure (or fails open)
        if entry is not None and (entry.expire_time is None or entry.expire_time > time.time()):
            return entry.value
    lock_timeout = check_lock_timeout(lock_timeout)
    if early_refresh is not None and not 0 < early_refresh < math.inf:
        raise ConfigurationError(f"early_refresh={early_refresh!r}: expected a number > 0")
    job = _Job(
        backend,
        key,
        encode_key(key),
        factory,
        ttl,
        tag,
        stale_ttl,
        lock_timeout,
        cache_if,
        fail_open,
        type,
    )
    try:
        entry = await backend.get_entry(key, type=type)
    except Exception as exc:
        if not fail_open:
            raise
        _warn_once("read", exc, backend)
        # The cache is down: still one computation per key in this process, nothing stored.
        return await _wait(job, cache_ok=False)
    if entry is None:
        return await _wait(job, cache_ok=True)
    now = time.time()
    if _fresh(entry, now):
        if early_refresh and entry.expire_time is not None:
            delta = _durations.get((id(backend), job.kb), 0.0)
            # XFetch: refresh when now - delta * beta * ln(u) >= expiry, u in (0, 1].
            if delta and now - delta * early_refresh * math.log(1.0 - random.random()) >= (
                entry.expire_time
            ):
                _flight(job, background=True, seen=entry.store_time)
        return entry.value
    # Stale but inside its window: serve it now, refresh once in the background.
    _flight(job, background=True, seen=entry.store_time)
    return entry.value


def _flight(
    job: _Job, *, background: bool, seen: float | None = None, cache_ok: bool = True
) -> tuple[_Flight, bool]:
    """The running flight of ``job``'s key, or a new one; True if this call started it."""
    loop = asyncio.get_running_loop()
    fkey = (id(loop), id(job.backend), job.kb)
    flight = _flights.get(fkey)
    if flight is not None and not flight.task.done():
        return flight, False
    task = loop.create_task(_fill(job, background=background, seen=seen, cache_ok=cache_ok))
    flight = _Flight(task, background, job)
    _flights[fkey] = flight
    task.add_done_callback(functools.partial(_landed, fkey, flight, job.key))
    if background:
        track = getattr(job.backend, "_track", None)
        if track is not None:
            track(task)  # owned by the cache: aclose() waits for it
    return flight, True


def _landed(fkey: _FlightKey, flight: _Flight, key: Key, task: asyncio.Task[Any]) -> None:
    if _flights.get(fkey) is flight:
        del _flights[fkey]
    if task.cancelled():
        return
    exc = task.exception()  # retrieved here too: waiters may all have timed out
    if exc is not None and flight.background:
        logger.warning(
            "shardcache background refresh of %r failed; the stale value is served until "
            "its stale_ttl ends",
            key,
            exc_info=exc,
        )


#: How a backend releases a superseded computation's lease right away: ``(kb, owner)``.
Release = Callable[[bytes, str], None]


def supersede(backend: Any, kb: bytes, release: Release | None = None) -> None:
    """The key (encoded: ``kb``) was just set, deleted, invalidated or refreshed: a
    computation of it already running in this loop started from older data. It must not
    store its result over the newer state, and later calls must not join it or wait for
    its lease. (Its own callers still get its result: they asked before.) One that is
    storing already is left alone: its write is queued ahead of this one, which wins.

    ``release(kb, owner)`` queues the release of its lease ahead of the caller's own write
    (AsyncCache: same shard, same batch); without it, a task releases it."""
    if not _flights:
        return
    fkey = (id(asyncio.get_running_loop()), id(backend), kb)
    flight = _flights.get(fkey)
    if flight is not None and not flight.job.storing:
        _drop(fkey, flight, release)


def supersede_all(backend: Any, tag: str | None = None, release: Release | None = None) -> None:
    """:func:`supersede` for every key of ``backend`` (``clear``), or every key computed
    to be stored under ``tag`` (``evict``)."""
    for fkey, flight in list(_flights.items()):
        job = flight.job
        if fkey[1] == id(backend) and not job.storing and (tag is None or job.tag == tag):
            _drop(fkey, flight, release)


def _drop(fkey: _FlightKey, flight: _Flight, release: Release | None) -> None:
    job = flight.job
    job.superseded = True  # and if it is still taking its lease, _fill lets it go
    del _flights[fkey]
    owner, job.owner = job.owner, None
    if owner is None:
        return
    if release is not None:
        release(job.kb, owner)
    else:
        _release_later(job, owner)


def _release_later(job: _Job, owner: str) -> None:
    task = asyncio.get_running_loop().create_task(_release(job, owner))
    _cleanups.add(task)
    task.add_done_callback(_cleanups.discard)


def _forget(flight: _Flight) -> None:
    for fkey, found in list(_flights.items()):
        if found is flight:
            del _flights[fkey]


def _note_wait(backend: CacheBackend) -> None:
    note = getattr(backend, "_note_stampede_wait", None)
    if note is not None:
        note()


async def _wait(job: _Job, *, cache_ok: bool) -> Any:
    """Lead or join the key's flight until it yields a value (or raise what it raised)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + job.lock_timeout
    while True:
        flight, leader = _flight(job, background=False, cache_ok=cache_ok)
        if not leader:
            _note_wait(job.backend)
        task = flight.task
        flight.waiters += 1
        try:
            if leader:
                # Our own computation: its lease wait is bounded inside, the work is not.
                await asyncio.wait((task,))
            else:
                await asyncio.wait((task,), timeout=max(deadline - loop.time(), 0.0))
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.background and not task.done():
                # Every caller left (cancelled, or timed out): nobody wants the result.
                _forget(flight)
                task.cancel()
        if not task.done():
            # No waiter hangs past lock_timeout: compute ourselves.
            return await _compute(job, store=cache_ok)
        if task.cancelled():
            if leader:
                # Our computation was cancelled from inside: as if we had called the function
                # directly. The callers waiting for it take over (bounded by their number).
                raise asyncio.CancelledError
            continue  # the flight was cancelled but we were not: take over, or join who did
        exc = task.exception()
        if exc is not None:
            raise exc
        value = task.result()
        if value is MISSING:
            continue  # a background refresh that left the work to another process
        # The function's own object goes to the caller that started the flight; every
        # other caller gets a copy, as a hit decodes one: changing it changes nobody else's.
        return value if leader else _own_copy(value)


def _own_copy(value: Any) -> Any:
    if value.__class__ in _SCALARS:
        return value
    try:
        return copy.deepcopy(value)
    except Exception:  # not copyable (it was not stored either, then): share it
        return value


async def _fill(job: _Job, *, background: bool, seen: float | None, cache_ok: bool) -> Any:
    """The body of a flight: take the lease, or wait for the process that holds it."""
    if not cache_ok:
        return await _compute(job, store=False)
    backend = job.backend
    owner = f"{_OWNER_PREFIX}-{uuid.uuid4().hex[:12]}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + job.lock_timeout
    delay = _FIRST_DELAY
    while True:
        try:
            leased = await _acquire(job, owner)
        except Exception as exc:
            if not job.fail_open:
                raise
            _warn_once("lease", exc, backend)
            return await _compute(job, store=False)
        if leased:
            if job.superseded:
                # A write superseded it while it was taking the lease: let the lease go
                # now (the next call must not wait for it) and compute for its callers.
                await _release(job, owner)
                return await _compute(job, store=False)
            job.owner = owner  # supersede() hands the lease on at once
            try:
                # Another process may have stored it while we queued for the lease.
                entry = await _read(job)
                if entry is MISSING:
                    return await _compute(job, store=False)
                if _fresh(entry, time.time()) and (seen is None or entry.store_time > seen):
                    return entry.value
                return await _compute(job, store=True)
            finally:
                await _release(job, owner)
        if background:
            return MISSING  # another process is refreshing; keep serving the stale value
        _note_wait(backend)
        # Another process computes: wait for its value, with backoff and jitter.
        while True:
            left = deadline - loop.time()
            if left <= 0:
                # No waiter hangs past lock_timeout: compute ourselves.
                return await _compute(job, store=True)
            await asyncio.sleep(min(left, delay * (0.5 + random.random())))
            delay = min(delay * 2, _MAX_DELAY)
            entry = await _read(job)
            if entry is MISSING:
                return await _compute(job, store=False)
            if _fresh(entry, time.time()):
                return entry.value
            if delay >= _MAX_DELAY:
                break  # re-try the lease: its holder may have died or given up
        delay = _FIRST_DELAY


async def cache_down(
    backend: CacheBackend,
    exc: Exception,
    key: Key,
    factory: Callable[[], Awaitable[Any]],
    lock_timeout: float,
) -> Any:
    """The cache could not even be opened: one computation per key in this process all the
    same, nothing read or stored (fail open)."""
    _warn_once("open", exc, backend)
    kb = encode_key(key)
    job = _Job(backend, key, kb, factory, None, None, 0, lock_timeout, None, True, None)
    return await _wait(job, cache_ok=False)


async def _read(job: _Job) -> Any:
    """``get_entry``; with fail_open, ``MISSING`` when the cache failed (logged)."""
    try:
        return await job.backend.get_entry(job.key, type=job.type)
    except Exception as exc:
        if not job.fail_open:
            raise
        _warn_once("read", exc, job.backend)
        return MISSING


async def _acquire(job: _Job, owner: str) -> bool:
    """Take the lease, waiting at most ``lock_timeout`` for the shard (a locked shard makes
    the write wait for SQLite's busy timeout, which may be longer)."""
    backend = job.backend
    acquire = asyncio.ensure_future(backend.acquire_lease(job.key, owner, job.lock_timeout))
    try:
        done, _ = await asyncio.wait((acquire,), timeout=job.lock_timeout)
    except asyncio.CancelledError:
        # The lease may commit after all: release it then, or others wait for its deadline.
        acquire.add_done_callback(functools.partial(_release_if_taken, job, owner))
        raise
    if not done:
        acquire.add_done_callback(functools.partial(_release_if_taken, job, owner))
        raise CacheTimeoutError(
            f"the stampede lease of {job.key!r} could not be taken within "
            f"lock_timeout={job.lock_timeout}s (the shard stayed locked)"
        )
    return acquire.result()


def _release_if_taken(job: _Job, owner: str, acquire: asyncio.Future[bool]) -> None:
    if acquire.cancelled() or acquire.exception() is not None or not acquire.result():
        return
    _release_later(job, owner)


async def _bounded(job: _Job, write: Awaitable[Any], what: str) -> Any:
    """Await a write of the leader's own, ``lock_timeout`` at most: a shard another process
    keeps locked would hold its caller for SQLite's busy timeout (10 s) per write, though
    the result is ready. The write goes on meanwhile, also when the caller is cancelled
    (a cancelled leader still frees the lease for the others)."""
    future = asyncio.ensure_future(write)
    _cleanups.add(future)
    future.add_done_callback(_cleanups.discard)
    future.add_done_callback(observed)
    done, _ = await asyncio.wait((future,), timeout=job.lock_timeout)
    if not done:
        raise CacheTimeoutError(
            f"the {what} of {job.key!r} did not commit within lock_timeout="
            f"{job.lock_timeout}s (the shard stayed locked); it goes on in the background"
        )
    return future.result()


async def _release(job: _Job, owner: str) -> None:
    try:
        await _bounded(job, job.backend.release_lease(job.key, owner), "lease release")
    except Exception as exc:
        # Never fatal: the lease expires at its deadline anyway.
        _warn_once("lease release", exc, job.backend)


async def _compute(job: _Job, *, store: bool) -> Any:
    loop = asyncio.get_running_loop()
    started = loop.time()
    value = await job.factory()
    if len(_durations) > 10_000:
        _durations.clear()
    _durations[(id(job.backend), job.kb)] = loop.time() - started
    if not store or job.superseded or (job.cache_if is not None and not job.cache_if(value)):
        return value
    job.storing = True
    write = job.backend.set(job.key, value, ttl=job.ttl, tag=job.tag, stale_ttl=job.stale_ttl)
    try:
        # Failing open, the caller gets its result within lock_timeout, stored or not.
        await (_bounded(job, write, "store") if job.fail_open else write)
    except Exception as exc:
        if not job.fail_open:
            raise
        _warn_once("write", exc, job.backend)
    return value


# -- single flight for results that may not be shareable (the HTTP drivers) ---------------
class _Retry(Exception):
    """The leader of a single flight failed or was cancelled: a waiter takes over."""


_single: dict[_FlightKey, asyncio.Future[tuple[Any, bool]]] = {}


async def single_flight(
    backend: CacheBackend,
    key: Key,
    lookup: Callable[[], Awaitable[Any]],
    produce: Callable[[], Awaitable[tuple[Any, bool]]],
    *,
    lock_timeout: float = 30.0,
    handover: Callable[[Callable[[Any, bool], None]], None] | None = None,
    on_failure: Callable[[Exception], None] | None = None,
) -> tuple[Any, bool]:
    """Run ``produce`` once for concurrent callers of ``key``, in this process and across
    processes, for results that may turn out not to be shareable (HTTP responses).

    ``lookup()`` returns a usable result already in the cache, or ``None``.
    ``produce()`` computes, stores what may be stored, and returns ``(result, shared)``:
    ``shared`` False (a private or ``no-store`` response) means the other waiters must not
    get it, so each of them calls ``produce()`` itself. Unlike ``get_or_compute`` the
    first caller runs ``produce`` in its own task (an ASGI request streams to its own
    client); if it fails or is cancelled, one waiter takes over. No caller waits past
    ``lock_timeout``. Returns ``(result, produced)``, ``produced`` True when this caller
    ran ``produce``. ``handover(publish)`` is called when this caller leads: its
    ``produce`` may then ``publish(result, shared)`` before it returns (``shared`` False
    as soon as it knows: the waiters then go to the source without waiting for its end).
    ``on_failure(exc)`` is told when the lease could not be taken (the cache failed, e.g.
    a shard locked past ``lock_timeout``) before ``produce`` runs without it: its store
    would only wait again.
    """
    lock_timeout = check_lock_timeout(lock_timeout)
    kb = encode_key(key)
    loop = asyncio.get_running_loop()
    fkey = (id(loop), id(backend), kb)
    deadline = loop.time() + lock_timeout
    while True:
        leader = _single.get(fkey)
        if leader is None or (
            leader.done() and (leader.cancelled() or leader.exception() is not None)
        ):
            break
        if not leader.done():
            _note_wait(backend)
            done, _ = await asyncio.wait((leader,), timeout=max(deadline - loop.time(), 0.0))
            if not done:
                return (await produce())[0], True  # nobody waits past lock_timeout
            if leader.cancelled() or leader.exception() is not None:
                continue  # the leader failed: the next loop makes one of us the leader
        # A leader's result is published before its lease release commits (see
        # _lead_single): until then a newcomer takes it like the waiters did.
        result, shared = leader.result()
        if shared:
            return result, False
        return (await produce())[0], True  # not for sharing: go to the source ourselves
    future: asyncio.Future[tuple[Any, bool]] = loop.create_future()
    _single[fkey] = future

    def publish(result: Any, shared: bool) -> None:
        if not future.done():
            future.set_result((result, shared))

    if handover is not None:
        handover(publish)

    try:
        result, shared, produced = await _lead_single(
            backend, key, kb, lookup, produce, deadline, lock_timeout, publish, on_failure
        )
    except BaseException:
        if not future.done():
            future.set_exception(_Retry())
            future.exception()  # retrieved: no "never retrieved" warning without waiters
        raise
    else:
        publish(result, shared)
        return result, produced
    finally:
        if _single.get(fkey) is future:
            del _single[fkey]


async def _lead_single(
    backend: CacheBackend,
    key: Key,
    kb: bytes,
    lookup: Callable[[], Awaitable[Any]],
    produce: Callable[[], Awaitable[tuple[Any, bool]]],
    deadline: float,
    lock_timeout: float,
    publish: Callable[[Any, bool], None],
    on_failure: Callable[[Exception], None] | None,
) -> tuple[Any, bool, bool]:
    """The cross-process part of :func:`single_flight`: (result, shared, produced here).

    ``publish`` hands the result to this process's waiters as soon as it is known, before
    the lease release commits: under load a write waits for the writer thread's batch (tens
    of ms in a busy process), and the waiters of a response that is not shareable would
    otherwise wait that long too before they go to the source themselves.
    """
    job = _Job(backend, key, kb, produce, DEFAULT, None, 0, lock_timeout, None, True, None)
    owner = f"{_OWNER_PREFIX}-{uuid.uuid4().hex[:12]}"
    loop = asyncio.get_running_loop()
    delay = _FIRST_DELAY
    while True:
        try:
            leased = await _acquire(job, owner)
        except Exception as exc:
            _warn_once("lease", exc, backend)
            if on_failure is not None:
                on_failure(exc)
            result, shared = await produce()
            return result, shared, True
        if leased:
            try:
                found = await lookup()  # another process may have stored it meanwhile
                if found is not None:
                    publish(found, True)
                    return found, True, False
                result, shared = await produce()
                publish(result, shared)
                return result, shared, True
            finally:
                await _release(job, owner)
        _note_wait(backend)
        # Another process produces: wait for its result with backoff and jitter, re-trying
        # the lease now and then (its holder may have found the result not storable).
        # Polls stay <= 25 ms apart: a lookup is a cheap read, one poller per process and
        # key, and a request waits on it (a 50 ms endpoint should not cost 150 ms).
        for _ in range(4):
            left = deadline - loop.time()
            if left <= 0:
                result, shared = await produce()
                return result, shared, True
            await asyncio.sleep(min(left, delay * (0.5 + random.random())))
            delay = min(delay * 2, _MAX_DELAY / 4)
            found = await lookup()
            if found is not None:
                return found, True, False
