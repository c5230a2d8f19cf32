"""``@acached``: memoize coroutine functions in a persistent cache, stampede-protected."""

from __future__ import annotations

import functools
import hashlib
import inspect
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, overload

import msgspec

from ._errors import CacheError, ConfigurationError
from ._keys import encode_key
from ._options import check_ttl
from ._stampede import _warn_once, get_or_compute
from ._types import DEFAULT, TTL, CacheBackend, Key

__all__ = ["CachedFunction", "acached", "default_cache"]

P = ParamSpec("P")
R = TypeVar("R")

_arg_encoder = msgspec.msgpack.Encoder(order="deterministic")
_default: Any = None
_default_lock = threading.Lock()


def default_cache() -> Any:
    """The process-wide default :class:`AsyncCache` (``$SHARDCACHE_DIR`` or the user cache
    directory), created on first use; its queued writes are committed at interpreter exit."""
    global _default
    with _default_lock:
        if _default is None or _default._state == "closed":
            from ._cache import AsyncCache

            _default = AsyncCache()
        return _default


def _is_async(func: Any) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - an async __call__ counts
    )


class CachedFunction(Generic[P, R]):
    """A coroutine function wrapped by ``@acached``: call it like the original.

    It also offers ``cache_key(*a, **kw)``, ``await invalidate(*a, **kw)`` and
    ``await refresh(*a, **kw)``; ``__wrapped__`` is the original function.
    """

    def __init__(
        self,
        func: Callable[P, Awaitable[R]],
        cache: CacheBackend | None,
        *,
        ttl: TTL,
        tag: str | None,
        stale_ttl: float,
        key: Callable[..., Key] | None,
        version: int | str,
        ignore: Iterable[str | int],
        cache_if: Callable[[Any], bool] | None,
        lock_timeout: float,
        early_refresh: float | None,
        type: Any,
    ) -> None:
        if not _is_async(func):
            raise TypeError(
                f"@acached needs an async function, and {getattr(func, '__qualname__', func)!r} "
                "is not one; for plain functions use the sync @cached (coming with "
                "shardcache.Cache)"
            )
        if ttl is not DEFAULT:
            check_ttl(ttl)
        if check_ttl(stale_ttl, "stale_ttl") is None:
            raise ConfigurationError("stale_ttl must be a finite number of seconds")
        if not lock_timeout > 0:
            raise ConfigurationError(f"lock_timeout={lock_timeout!r}: expected seconds > 0")
        functools.update_wrapper(self, func)
        self.__wrapped__ = func
        self._func = func
        self._cache = cache
        self._ttl = ttl
        self._tag = tag
        self._stale_ttl = stale_ttl
        self._key = key
        self._cache_if = cache_if
        self._lock_timeout = lock_timeout
        self._early = early_refresh
        self._type = type
        self._signature = inspect.signature(func)
        params = list(self._signature.parameters)
        self._ignore = {params[i] if isinstance(i, int) else i for i in ignore}
        self._qualname: str = getattr(func, "__qualname__", repr(func))
        self._prefix = f"acached:{getattr(func, '__module__', '')}.{self._qualname}:v{version}:"

    @property
    def cache(self) -> CacheBackend:
        """The cache this function stores its results in."""
        cache: CacheBackend = self._cache if self._cache is not None else default_cache()
        return cache

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> Key:
        """The cache key of a call: stable across processes, restarts and hash seeds."""
        if self._key is not None:
            custom = self._key(*args, **kwargs)
            encode_key(custom)  # a TypeError now, not at the first write
            return custom
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self._qualname}(): {exc}") from None
        bound.apply_defaults()
        parts = []
        for name, value in bound.arguments.items():
            if name in self._ignore:
                continue
            try:
                parts.append(_arg_encoder.encode(value))
            except (TypeError, OverflowError) as exc:
                raise TypeError(
                    f"{self._qualname}(): argument {name!r} of type {type(value).__name__} "
                    f"cannot be part of a cache key ({exc}); pass key= or ignore="
                ) from None
        digest = hashlib.blake2b(_arg_encoder.encode(parts), digest_size=16).hexdigest()
        return self._prefix + digest

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        key = self.cache_key(*args, **kwargs)
        try:
            cache = self.cache
        except CacheError as exc:
            _warn_once("open", exc)
            return await self._func(*args, **kwargs)
        result: R = await get_or_compute(
            cache,
            key,
            functools.partial(self._func, *args, **kwargs),
            ttl=self._ttl,
            tag=self._tag,
            stale_ttl=self._stale_ttl,
            lock_timeout=self._lock_timeout,
            cache_if=self._cache_if,
            early_refresh=self._early,
            fail_open=True,
            type=self._type,
        )
        return result

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Delete the cached result of this call; True if there was one."""
        return await self.cache.delete(self.cache_key(*args, **kwargs))

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function now and store its result, whatever is cached."""
        value = await self._func(*args, **kwargs)
        if self._cache_if is None or self._cache_if(value):
            try:
                await self.cache.set(
                    self.cache_key(*args, **kwargs),
                    value,
                    ttl=self._ttl,
                    tag=self._tag,
                    stale_ttl=self._stale_ttl,
                )
            except CacheError as exc:
                _warn_once("write", exc)
        return value

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        # Methods: bind like a function, keeping cache_key/invalidate/refresh.
        if instance is None:
            return self
        return _BoundCached(self, instance)

    def __repr__(self) -> str:
        return f"<acached {self._qualname}>"


class _BoundCached:
    """``obj.method`` for an ``@acached`` method."""

    def __init__(self, cached: CachedFunction[..., Any], instance: Any) -> None:
        self._cached = cached
        self._instance = instance
        self.__wrapped__ = cached.__wrapped__
        functools.update_wrapper(self, cached.__wrapped__)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return await self._cached(self._instance, *args, **kwargs)

    def cache_key(self, *args: Any, **kwargs: Any) -> Key:
        return self._cached.cache_key(self._instance, *args, **kwargs)

    async def invalidate(self, *args: Any, **kwargs: Any) -> bool:
        return await self._cached.invalidate(self._instance, *args, **kwargs)

    async def refresh(self, *args: Any, **kwargs: Any) -> Any:
        return await self._cached.refresh(self._instance, *args, **kwargs)


@overload
def acached(func: Callable[P, Awaitable[R]], /) -> CachedFunction[P, R]: ...
@overload
def acached(
    cache: CacheBackend | None = None,
    /,
    *,
    ttl: TTL = DEFAULT,
    tag: str | None = None,
    stale_ttl: float = 0,
    key: Callable[..., Key] | None = None,
    version: int | str = 1,
    ignore: Iterable[str | int] = (),
    cache_if: Callable[[Any], bool] | None = None,
    lock_timeout: float = 30.0,
    early_refresh: float | None = None,
    type: Any = None,
) -> Callable[[Callable[P, Awaitable[R]]], CachedFunction[P, R]]: ...


def acached(
    cache: Any = None,
    /,
    *,
    ttl: TTL = DEFAULT,
    tag: str | None = None,
    stale_ttl: float = 0,
    key: Callable[..., Key] | None = None,
    version: int | str = 1,
    ignore: Iterable[str | int] = (),
    cache_if: Callable[[Any], bool] | None = None,
    lock_timeout: float = 30.0,
    early_refresh: float | None = None,
    type: Any = None,
) -> Any:
    """Memoize a coroutine function, with stampede protection.

    Example::

        @acached(ttl=60)
        async def fetch_user(user_id: int) -> dict: ...

        @acached(cache, ttl=300, stale_ttl=60, ignore=("self",))
        async def summarize(self, text: str) -> str: ...

    On a miss exactly one caller (one task in one process, one process per cache
    directory) runs the function; the others await its result. If the cache fails, the
    function is still called (fail open) and the failure is logged.
    """
    options = dict(
        ttl=ttl,
        tag=tag,
        stale_ttl=stale_ttl,
        key=key,
        version=version,
        ignore=tuple(ignore),
        cache_if=cache_if,
        lock_timeout=lock_timeout,
        early_refresh=early_refresh,
        type=type,
    )
    if cache is not None and not isinstance(cache, CacheBackend) and callable(cache):
        return CachedFunction(cache, None, **options)  # bare @acached

    def decorate(func: Callable[P, Awaitable[R]]) -> CachedFunction[P, R]:
        return CachedFunction(func, cache, **options)

    return decorate
