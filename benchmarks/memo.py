"""Memoization hits: one coroutine ``f(k)`` wrapped by each library, called on warmed arguments.

``get(k)`` is ``await f(k)``; ``populate`` warms every argument once, so every timed call is a
hit. A call that reaches the body during the timed run is counted as a miss.

| name | wrapper |
|---|---|
| ``acached`` | ``@acached(AsyncCache(dir), ttl=60)`` |
| ``shardcache-get`` | no wrapper: a bare ``await cache.get(k)`` (see ``systems.ShardCache``) |
| ``cashews-mem`` / ``cashews-disk`` | ``@cache(ttl=60)`` on ``mem://`` / ``disk://`` |
| ``aiocache`` | ``@cached(ttl=60)`` (in-memory) |
| ``alru_cache`` | ``@alru_cache(maxsize=None)``: the pure in-memory reference |
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from systems import ShardCache, shardcache_missing
from workloads import AsyncGet, AsyncSet, AsyncSystem, System, Value, value

MEMO = ("acached", "shardcache-get", "cashews-mem", "cashews-disk", "aiocache", "alru_cache")
REFERENCE = "acached"
MEMO_TTL = 60

Fn = Callable[[str], Coroutine[Any, Any, Value]]


def unavailable(name: str) -> str | None:
    if name == "acached":
        return shardcache_missing("AsyncCache") or shardcache_missing("acached")
    if name == "shardcache-get":
        return shardcache_missing("AsyncCache")
    return None


def make(name: str) -> System:
    if name == "shardcache-get":
        return ShardCache("shardcache-get")
    factories: dict[str, Callable[[], Memo]] = {
        "acached": Acached,
        "cashews-mem": functools.partial(Cashews, "cashews-mem", "mem://"),
        "cashews-disk": functools.partial(Cashews, "cashews-disk", "disk://"),
        "aiocache": Aiocache,
        "alru_cache": Alru,
    }
    return factories[name]()


class Memo(AsyncSystem):
    """A memoized ``f(k)``; ``calls`` counts executions of its body."""

    def __init__(self) -> None:
        self.calls = 0
        self._fn: Fn | None = None

    def function(self) -> Fn:
        """A fresh undecorated ``f`` (fresh, so no wrapper state leaks between runs)."""

        async def f(k: str) -> Value:
            self.calls += 1
            return value(int(k.rpartition(":")[2]))

        return f

    @abc.abstractmethod
    async def wrap(self, directory: str) -> Fn:
        """Open the library's cache in ``directory`` and return the decorated ``f``."""

    async def setup(self, directory: str) -> None:
        self._fn = await self.wrap(directory)

    @property
    def fn(self) -> Fn:
        if self._fn is None:
            raise RuntimeError(f"{self.name}: setup() first")
        return self._fn

    async def get(self, key: str) -> Any:
        return await self.fn(key)

    def hidden_misses(self) -> int:
        return self.calls

    async def set(self, key: str, value: Value, ttl: float) -> None:
        raise NotImplementedError("memoization is measured on hits only")

    def ops(self, ttl: float) -> tuple[AsyncGet, AsyncSet]:
        return self.fn, functools.partial(self.set, ttl=ttl)

    async def populate(self, pairs: Sequence[tuple[str, Value]], ttl: float) -> None:
        for k, _ in pairs:
            await self.fn(k)

    async def close(self) -> None:
        return None


class Acached(Memo):
    name = "acached"

    async def wrap(self, directory: str) -> Fn:
        from shardcache import AsyncCache, acached

        self._cache = AsyncCache(directory)
        wrapped: Fn = acached(self._cache, ttl=MEMO_TTL)(self.function())
        return wrapped

    async def close(self) -> None:
        await self._cache.aclose()


class Cashews(Memo):
    def __init__(self, name: str, url: str) -> None:
        super().__init__()
        self.name = name
        self._url = url

    async def wrap(self, directory: str) -> Fn:
        from cashews import Cache

        self._cache = Cache()
        if self._url.startswith("disk://"):
            self._cache.setup(self._url, directory=directory)
        else:
            self._cache.setup(self._url)
        await self._cache.init()
        wrapped: Fn = self._cache(ttl=MEMO_TTL)(self.function())
        return wrapped

    async def close(self) -> None:
        await self._cache.close()


class Aiocache(Memo):
    name = "aiocache"

    async def wrap(self, directory: str) -> Fn:
        from aiocache import cached

        wrapped: Fn = cached(ttl=MEMO_TTL)(self.function())
        return wrapped


class Alru(Memo):
    name = "alru_cache"

    async def wrap(self, directory: str) -> Fn:
        from async_lru import alru_cache

        self._wrapped: Any = alru_cache(maxsize=None)(self.function())
        wrapped: Fn = self._wrapped
        return wrapped

    async def close(self) -> None:
        await self._wrapped.cache_close()
