"""The storage systems under test, each behind one small adapter (see ``workloads.System``).

| name | what it is |
|---|---|
| ``shardcache`` | ``AsyncCache(dir, shards=8)`` |
| ``shardcache-nonear`` | ``AsyncCache(dir, near_cache=0)``: the SQLite path alone |
| ``shardcache-full`` | ``AsyncCache(dir, shards=8, durability="full")`` |
| ``diskcache-to_thread`` | ``diskcache.Cache(dir)`` at its defaults, one ``asyncio.to_thread`` per op |
| ``diskcache-sync`` | the same cache called directly from one thread, no asyncio |
| ``aiosqlite`` | one connection, a key/value table (WAL, synchronous=NORMAL), one statement per op |
| ``redis`` | ``redis.asyncio`` against a local redis-server (see ``redis_server.py``) |
| ``sqlite3-raw`` | raw sqlite3 in one thread: the single-thread limit of any SQLite cache |

Peers that store bytes (aiosqlite, redis, sqlite3-raw) encode values with msgspec msgpack
and decode on get, as a cache has to; diskcache keeps its default pickle.

``set_many`` (a few keys in one awaited call, loophealth's SET/cpu-bound-loop), each system's
fastest batch path: shardcache's ``set_many``; aiosqlite one ``executemany`` in autocommit
(one trip to its thread; BEGIN / executemany / COMMIT, three trips, measured 2x slower
there); diskcache-to_thread one ``asyncio.to_thread`` running ``cache.set`` per key inside
``cache.transact()`` (one trip, one transaction).
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
from collections.abc import Callable, Sequence
from time import time
from typing import Any, cast

import msgspec

from workloads import AsyncGet, AsyncSet, AsyncSystem, SyncSystem, System, Value

CORE = (
    "shardcache",
    "shardcache-nonear",
    "diskcache-to_thread",
    "diskcache-sync",
    "aiosqlite",
    "redis",
    "sqlite3-raw",
)

_SHARDCACHE_OPTIONS: dict[str, dict[str, Any]] = {
    "shardcache": {"shards": 8},
    "shardcache-nonear": {"near_cache": 0},
    "shardcache-full": {"shards": 8, "durability": "full"},
}


def shardcache_missing(name: str = "AsyncCache") -> str | None:
    """None when ``from shardcache import <name>`` works, else why it does not."""
    try:
        import shardcache

        getattr(shardcache, name)
    except Exception as exc:  # the engine may be half-written: any failure means "skip"
        return f"`from shardcache import {name}` fails: {exc!r}"
    return None


def unavailable(name: str, *, redis_url: str | None, redis_note: str = "") -> str | None:
    """None when ``name`` can be measured here, else the note to print instead."""
    if name.startswith("shardcache"):
        return shardcache_missing()
    if name == "redis" and redis_url is None:
        return redis_note or "no redis-server"
    return None


def make(name: str, *, redis_url: str | None = None) -> System:
    """A fresh adapter for ``name`` (not yet set up)."""
    if name in _SHARDCACHE_OPTIONS:
        return ShardCache(name, **_SHARDCACHE_OPTIONS[name])
    if name == "redis":
        if redis_url is None:
            raise ValueError("redis needs a server url")
        return Redis(redis_url)
    factories: dict[str, Callable[[], System]] = {
        "diskcache-to_thread": DiskcacheThread,
        "diskcache-sync": DiskcacheSync,
        "aiosqlite": Aiosqlite,
        "sqlite3-raw": Sqlite3Raw,
    }
    try:
        return factories[name]()
    except KeyError:
        known = sorted([*_SHARDCACHE_OPTIONS, "redis", *factories])
        raise ValueError(f"unknown system {name!r}; known: {', '.join(known)}") from None


# -- shardcache ------------------------------------------------------------------------------


class ShardCache(AsyncSystem):
    def __init__(self, name: str, **options: Any) -> None:
        self.name = name
        self._options = options
        self.cache: Any = None

    async def setup(self, directory: str) -> None:
        from shardcache import AsyncCache

        self.cache = AsyncCache(directory, **self._options)
        opener = getattr(self.cache, "open", None)
        if opener is not None:
            await opener()

    async def get(self, key: str) -> Any:
        return await self.cache.get(key)

    async def set(self, key: str, value: Value, ttl: float) -> None:
        await self.cache.set(key, value, ttl=ttl)

    def ops(self, ttl: float) -> tuple[AsyncGet, AsyncSet]:
        # The bound methods themselves: no adapter frame on shardcache's (µs-scale) hot path.
        return self.cache.get, functools.partial(self.cache.set, ttl=ttl)

    async def populate(self, pairs: Sequence[tuple[str, Value]], ttl: float) -> None:
        await self.cache.set_many(dict(pairs), ttl=ttl)

    async def set_many(self, pairs: Sequence[tuple[str, Value]], ttl: float) -> None:
        await self.cache.set_many(dict(pairs), ttl=ttl)

    async def close(self) -> None:
        if self.cache is not None:
            await self.cache.aclose()


# -- diskcache -------------------------------------------------------------------------------


class _Diskcache:
    """Setup, bulk fill and close shared by both ways of driving diskcache."""

    _cache: Any

    async def setup(self, directory: str) -> None:
        import diskcache

        self._cache = diskcache.Cache(directory)

    async def populate(self, pairs: Sequence[tuple[str, Value]], ttl: float) -> None:
        with self._cache.transact():
            for k, v in pairs:
                self._cache.set(k, v, expire=ttl)

    async def close(self) -> None:
        self._cache.close()


class DiskcacheThread(_Diskcache, AsyncSystem):
    name = "diskcache-to_thread"

    async def get(self, key: str) -> Any:
        return await asyncio.to_thread(self._cache.get, key)

    async def set(self, key: str, value: Value, ttl: float) -> None:
        await asyncio.to_thread(self._cache.set, key, value, expire=ttl)

    async def set_many(self, pairs: Sequence[tuple[str, Value]], ttl: float) -> None:
        await asyncio.to_thread(self._set_all, pairs, ttl)

    def _set_all(self, pairs: Sequence[tuple[str, Value]], ttl: float) -> None:
        with self._cache.transact():  # one transaction, as the others' batch paths
            for k, v in pairs:
                self._cache.set(k, v, expire=ttl)


class DiskcacheSync(_Diskcache, SyncSystem):
    name = "diskcache-sync"

    def get(self, key: str) -> Any:
        return self._cache.get(key)

    def set(self, key: str, value: Value, ttl: float) -> None:
        self._cache.set(key, value, expire=ttl)


# -- a key/value table, the schema a SQLite cache needs ---------------------------------------

_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv "
    "(key BLOB PRIMARY KEY, value BLOB NOT NULL, expire REAL) WITHOUT ROWID"
)
_GET = "SELECT value, expire FROM kv WHERE key = ?"
_PUT = "INSERT OR REPLACE INTO kv (key, value, expire) VALUES (?, ?, ?)"
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


def _live(row: Any, now: float) -> Any:
    """The decoded value of a ``(value, expire)`` row, or None if absent or expired."""
    if row is None or (row[1] is not None and row[1] <= now):
        return None
    return _decode(row[0])


def _rows(pairs: Sequence[tuple[str, Value]], ttl: float) -> list[tuple[bytes, bytes, float]]:
    expire = time() + ttl
    return [(k.encode(), _encode(v), expire) for k, v in pairs]


class Sqlite3Raw(SyncSystem):
    name = "sqlite3-raw"

    async def setup(self, directory: str) -> None:
        self._db = sqlite3.connect(os.path.join(directory, "kv.sqlite3"), isolation_level=None)
        for statement in (*_PRAGMAS, _SCHEMA):
            self._db.execute(statement)
        self._cur = self._db.cursor()

    def get(self, key: str) -> Any:
        return _live(self._cur.execute(_GET, (key.encode(),)).fetchone(), time())

    def set(self, key: str, value: Value, ttl: float) -> None:
        self._cur.execute(_PUT, (key.encode(), _encode(value), time() + ttl))

    async def populate(self, pairs: Sequence[tuple[str, Value]], ttl: float) -> None:
        self._db.execute("BEGIN")  # one transaction per chunk
        self._db.executemany(_PUT, _rows(pairs, ttl))
        self._db.execute("COMMIT")

    async def close(self) -> None:
        self._db.close()


class Aiosqlite(AsyncSystem):
    name = "aiosqlite"

    async def setup(self, directory: str) -> None:
        import aiosqlite

        self._db = await aiosqlite.connect(
            os.path.join(directory, "kv.sqlite3"), isolation_level=None
        )
        for statement in (*_PRAGMAS, _SCHEMA):
            await self._db.execute(statement)

    async def get(self, key: str) -> Any:
        rows = list(await self._db.execute_fetchall(_GET, (key.encode(),)))
        return _live(rows[0] if rows else None, time())

    async def set(self, key: str, value: Value, ttl: float) -> None:
        await self._db.execute(_PUT, (key.encode(), _encode(value), time() + ttl))

    async def set_many(self, pairs: Sequence[tuple[str, Value]], ttl: float) -> None:
        # aiosqlite's best batch here: one trip to its thread, one executemany in autocommit
        # (a commit per key). BEGIN / executemany / COMMIT is one transaction but three
        # trips, and under a CPU-bound loop each trip waits for the GIL: measured 2x slower.
        await self._db.executemany(_PUT, _rows(pairs, ttl))

    async def populate(self, pairs: Sequence[tuple[str, Value]], ttl: float) -> None:
        await self._db.execute("BEGIN")
        await self._db.executemany(_PUT, _rows(pairs, ttl))
        await self._db.execute("COMMIT")

    async def close(self) -> None:
        await self._db.close()


# -- redis -----------------------------------------------------------------------------------


class Redis(AsyncSystem):
    name = "redis"

    def __init__(self, url: str) -> None:
        self._url = url

    async def setup(self, directory: str) -> None:
        import redis.asyncio

        self._r = redis.asyncio.Redis.from_url(self._url)
        await self._r.flushdb()

    async def get(self, key: str) -> Any:
        raw = await self._r.get(key)  # bytes: the client does not decode responses
        return None if raw is None else _decode(cast(bytes, raw))

    async def set(self, key: str, value: Value, ttl: float) -> None:
        await self._r.set(key, _encode(value), ex=int(ttl))

    async def populate(self, pairs: Sequence[tuple[str, Value]], ttl: float) -> None:
        pipe = self._r.pipeline(transaction=False)
        for k, v in pairs:
            pipe.set(k, _encode(v), ex=int(ttl))
        await pipe.execute()

    async def close(self) -> None:
        await self._r.aclose()
