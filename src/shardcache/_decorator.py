"""``@acached``: memoize coroutine functions in a persistent cache, stampede-protected.

The key of a call is ``acached:<module>.<qualname>:v<version>:<digest>``, where the digest is a
BLAKE2b of the arguments bound to the signature (defaults applied, so ``f(1)``, ``f(x=1)``
and ``f(1, y=2)`` with ``y=2`` the default are one call), each encoded with msgspec in
deterministic order (dict keys and sets sorted). No ``hash()`` and no ``repr()`` take part,
so keys agree across processes, restarts and ``PYTHONHASHSEED`` values.
"""

from __future__ import annotations

import asyncio
import atexit
import builtins
import contextlib
import functools
import hashlib
import inspect
import logging
import os
import threading
import types
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import msgspec

from ._breaker import open_within, opened
from ._errors import CacheError, ConfigurationError
from ._keys import encode_key
from ._options import check_compute
from ._stampede import _warn_once, cache_down, get_or_compute, supersede
from ._types import DEFAULT, NOT_NOW, TTL, CacheBackend, Key

__all__ = ["BoundCachedFunction", "CachedFunction", "acached", "default_cache"]

P = ParamSpec("P")
P2 = ParamSpec("P2")
R = TypeVar("R")
S = TypeVar("S")

logger = logging.getLogger("shardcache")

_arg_encoder = msgspec.msgpack.Encoder(order="deterministic")
_BIGINT_EXT = 1
_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})
_ABSENT: Any = object()  # get()'s default on the hit path: None is a value
_MEMO_SIZE = 4096  # calls remembered per function (scalar arguments only)

# A remembered call: the exact types of its arguments (1, 1.0 and True are equal dict keys,
# not equal cache keys), its key and, once the cache is known and it is an AsyncCache, the
# cache's ``_peek_at`` with the encoded key and shard index it takes.
_Call = tuple[tuple[type, ...], Key, Callable[[bytes, int, Any, Any], Any] | None, bytes, int]
_default: Any = None
_default_lock = threading.Lock()
# Python 3.12+; looked up once: a failing hasattr() per ``obj.method`` costs ~0.4 us.
_mark_coroutine: Callable[[Any], Any] | None = getattr(inspect, "markcoroutinefunction", None)


def _coroutine_marks(func: Any) -> dict[str, Any]:
    """Before Python 3.12 (no ``inspect.markcoroutinefunction``): the attributes that make
    ``asyncio.iscoroutinefunction`` (its ``_is_coroutine`` marker) and
    ``inspect.iscoroutinefunction`` (a "function-like" object's code flags) say True for
    the wrapper, as they do for the ``async def`` it wraps."""
    marks: dict[str, Any] = {}
    marker = getattr(asyncio.coroutines, "_is_coroutine", None)
    if marker is not None:
        marks["_is_coroutine"] = marker
    code = getattr(func, "__code__", None)
    if isinstance(code, types.CodeType) and code.co_flags & inspect.CO_COROUTINE:
        marks["__code__"] = code
        marks["__defaults__"] = getattr(func, "__defaults__", None)
        marks["__kwdefaults__"] = getattr(func, "__kwdefaults__", None)
    return marks


def default_cache() -> Any:
    """The process-wide default :class:`AsyncCache`, created on first use.

    Its directory is ``$SHARDCACHE_DIR``, else the platform user cache directory +
    ``shardcache/default``. It opens lazily at its first operation and is closed at
    interpreter exit after committing every queued write. Example::

        @acached            # no cache given: default_cache()
        async def f(x: int) -> int: ...
    """
    global _default
    with _default_lock:
        if _default is None or _default._state == "closed":
            from ._cache import AsyncCache

            _default = AsyncCache()
        return _default


@atexit.register
def _close_default_at_exit() -> None:
    # Registered after the engine's own exit hook, so it runs first (atexit is LIFO): a
    # proper aclose() commits queued writes and closes the files, and the cache does not
    # warn "never closed" at shutdown. If that is impossible (a loop still running in this
    # thread, tasks of a dead loop), the engine's hook still commits the queued writes.
    cache = _default
    if cache is None or cache._state != "open" or cache._pid != os.getpid():
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return  # a loop is running in this thread: aclose() cannot be awaited from here
    if any(not task.done() for task in cache._tasks):
        return
    try:
        asyncio.run(cache.aclose())
    except Exception:
        logger.debug("closing the default cache at exit failed", exc_info=True)


def _is_async(func: Any) -> bool:
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    # A callable object with an ``async def __call__`` counts (not a class: calling a class
    # builds an instance).
    return not isinstance(func, type) and inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - the method itself is what we inspect
    )


def _widen_ints(value: Any) -> Any:
    """Replace ints MessagePack cannot hold (beyond 64 bits) by a private extension."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not -(2**63) <= value < 2**64:
            return msgspec.msgpack.Ext(_BIGINT_EXT, str(int(value)).encode())
        return value
    if isinstance(value, (list, tuple)):
        return [_widen_ints(item) for item in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_widen_ints(item) for item in value), key=_arg_encoder.encode)
    if isinstance(value, dict):
        return {_arg_encoder.encode(_widen_ints(k)): _widen_ints(v) for k, v in value.items()}
    return value


def _encode_arg(value: Any) -> bytes:
    try:
        return _arg_encoder.encode(value)
    except OverflowError:
        return _arg_encoder.encode(_widen_ints(value))


class CachedFunction(Generic[P, R]):
    """A coroutine function wrapped by ``@acached``: call it like the original.

    It keeps the original's signature, docstring and type hints (``__wrapped__`` is the
    original function), and adds::

        get_user.cache_key(42)          # the key of that call (a str)
        await get_user.invalidate(42)   # delete the cached result; True if there was one
        await get_user.refresh(42)      # call the function now and store the result
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
        name = getattr(func, "__qualname__", None) or builtins.type(func).__qualname__
        if not _is_async(func):
            raise TypeError(
                f"@acached needs an async function, and {name!r} is not one; for plain "
                "functions use the sync @cached (coming with shardcache.Cache)"
            )
        if cache is not None and not isinstance(cache, CacheBackend):
            raise TypeError(
                f"@acached(cache=...) needs an AsyncCache or another CacheBackend, not "
                f"{builtins.type(cache).__name__}"
            )
        self._lock_timeout = check_compute(ttl, tag, stale_ttl, lock_timeout)
        if early_refresh is not None and (
            isinstance(early_refresh, bool)
            or not isinstance(early_refresh, (int, float))
            or not 0 < early_refresh < float("inf")
        ):
            raise ConfigurationError(
                f"early_refresh={early_refresh!r}: expected None or a beta > 0 (1.0 is usual)"
            )
        if key is not None and not callable(key):
            raise TypeError(f"key= must be a callable returning a cache key, not {key!r}")
        if cache_if is not None and not callable(cache_if):
            raise TypeError(f"cache_if= must be a callable taking the result, not {cache_if!r}")
        functools.update_wrapper(self, func)
        self.__wrapped__ = func
        # What update_wrapper copies, gathered once: every ``obj.method`` access builds a
        # BoundCachedFunction, and update_wrapper there took as long as a whole hit.
        self._wrapper_attrs: dict[str, Any] = {
            name: getattr(func, name)
            for name in functools.WRAPPER_ASSIGNMENTS
            if hasattr(func, name)
        }
        self._wrapper_attrs.update(getattr(func, "__dict__", {}))
        if _mark_coroutine is not None:
            _mark_coroutine(self)
        else:
            marks = _coroutine_marks(func)
            self._wrapper_attrs.update(marks)
            self.__dict__.update(marks)
        self._func = func
        self._cache = cache
        self._ttl = ttl
        self._tag = tag
        self._stale_ttl = stale_ttl
        self._key = key
        self._cache_if = cache_if
        self._early = early_refresh
        self._type = type
        self._name = name
        self._signature = inspect.signature(func)
        self._ignore = self._check_ignore(ignore)
        # For the common call, positional arguments matching a signature of plain
        # parameters, the key is built without inspect's bind (half the cost of a hit).
        params = list(self._signature.parameters.values())
        plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        self._positional: tuple[bool, ...] | None = (
            tuple(p.name not in self._ignore for p in params)
            if all(p.kind in plain for p in params)
            else None
        )
        # Such calls with scalar arguments are remembered, keyed by their arguments, so a
        # repeat call skips key building, key encoding and shard routing (a hit then costs
        # about what ``cache.get`` costs). An ignored first parameter (``self``) is left out
        # of that dict key: it is not part of the cache key, and methods hit this way.
        self._calls: dict[tuple[Any, ...], _Call] = {}
        self._skip = int(self._positional is not None and bool(params) and not self._positional[0])
        module = getattr(func, "__module__", None) or builtins.type(func).__module__
        self._prefix = f"acached:{module}.{name}:v{version}:"

    def _check_ignore(self, ignore: Iterable[str | int]) -> frozenset[str]:
        params = list(self._signature.parameters)
        names = set()
        for item in ignore:
            if isinstance(item, int) and not isinstance(item, bool):
                if not -len(params) <= item < len(params):
                    raise ConfigurationError(
                        f"ignore={item!r}: {self._name}() has {len(params)} parameters "
                        f"({', '.join(params)})"
                    )
                names.add(params[item])
            elif isinstance(item, str):
                if item not in params:
                    raise ConfigurationError(
                        f"ignore={item!r}: {self._name}() has no such parameter; its "
                        f"parameters are: {', '.join(params) or '(none)'}"
                    )
                names.add(item)
            else:
                raise TypeError(f"ignore= takes parameter names or positions, not {item!r}")
        return frozenset(names)

    @property
    def cache(self) -> CacheBackend:
        """The cache this function stores its results in (the default cache if none given)."""
        if self._cache is not None:
            return self._cache
        cache: CacheBackend = default_cache()
        return cache

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> Key:
        """The cache key of a call: stable across processes, restarts and hash seeds.

        ``TypeError`` (naming the argument) when an argument cannot be part of a key.
        """
        return self._key_of(args, kwargs)[0]

    def _key_of(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Key, tuple[type, ...] | None]:
        """The key of a call, and the types of ``args[self._skip:]`` when the call may be
        remembered in ``_calls`` under those arguments (None when it may not)."""
        if self._key is not None:
            # Never remembered: a key callable may read more than its arguments.
            custom = self._key(*args, **kwargs)
            encode_key(custom)  # a TypeError now, not at the first write
            return custom, None
        keep = self._positional
        if keep is not None and not kwargs and len(args) == len(keep):
            memo_args = args[self._skip :]
            found = tuple(map(builtins.type, memo_args))
            types: tuple[type, ...] | None = None
            if _SCALARS.issuperset(found):
                known = self._calls.get(memo_args)
                if known is not None and known[0] == found:
                    return known[1], found
                # 0.0 and -0.0 are equal dict keys but two encodings, so two cache keys.
                if float not in found or 0.0 not in memo_args:
                    types = found
            try:
                parts = [_encode_arg(arg) for arg, kept in zip(args, keep, strict=True) if kept]
            except (TypeError, ValueError, OverflowError):
                pass  # the general path below names the argument
            else:
                hashed = hashlib.blake2b(_arg_encoder.encode(parts), digest_size=16)
                key = self._prefix + hashed.hexdigest()
                if types is not None:
                    self._remember(memo_args, (types, key, None, b"", 0))
                return key, types
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self._name}(): {exc}") from None
        bound.apply_defaults()
        parts = []
        for name, value in bound.arguments.items():
            if name in self._ignore:
                continue
            try:
                parts.append(_encode_arg(value))
            except (TypeError, ValueError, OverflowError) as exc:
                what = repr(name)
                kind = self._signature.parameters[name].kind
                if (
                    kind is inspect.Parameter.VAR_KEYWORD
                    or kind is inspect.Parameter.VAR_POSITIONAL
                ):
                    # Name the entry of **kwargs / *args that fails, not the catch-all.
                    entries = value.items() if isinstance(value, dict) else enumerate(value)
                    for entry, item in entries:
                        try:
                            _encode_arg(item)
                        except (TypeError, ValueError, OverflowError):
                            star = "**" if isinstance(value, dict) else "*"
                            where = repr(entry) if star == "**" else f"#{entry}"
                            what, value = f"{where} (in {star}{name})", item
                            break
                raise TypeError(
                    f"{self._name}(): argument {what} of type {builtins.type(value).__name__} "
                    f"cannot be part of a cache key ({exc}); pass key= or ignore=({name!r},)"
                ) from None
        digest = hashlib.blake2b(_arg_encoder.encode(parts), digest_size=16).hexdigest()
        return self._prefix + digest, None

    def _remember(self, memo_args: tuple[Any, ...], call: _Call) -> None:
        calls = self._calls
        if len(calls) >= _MEMO_SIZE and memo_args not in calls:
            calls.clear()
        calls[memo_args] = call

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        hit = NOT_NOW
        if not kwargs and (args or not self._skip):
            # The hot path: a call seen before (same arguments, same types) is read from
            # the near cache at the encoded key and shard remembered for it. ``hit`` becomes
            # the value, ``_ABSENT`` (read: a miss), or stays ``NOT_NOW`` (not remembered,
            # or the cache needs an await): the general path below takes those.
            memo_args = args[1:] if self._skip else args
            try:
                known = self._calls.get(memo_args)
            except TypeError:  # an unhashable argument: never remembered
                known = None
            if known is not None:
                types, _key, peek, kb, index = known
                if peek is not None and (
                    type(memo_args[0]) is types[0]
                    if len(types) == 1
                    else tuple(map(type, memo_args)) == types
                ):
                    try:
                        hit = peek(kb, index, _ABSENT, self._type)
                    except Exception:  # get_or_compute meets it again and reports it
                        hit = _ABSENT
                    if hit is not _ABSENT and hit is not NOT_NOW:
                        return hit  # type: ignore[no-any-return]
        return await self._call(args, kwargs, hit)

    async def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any], hit: Any) -> R:
        """A call that the hot path of ``__call__`` did not answer; ``hit`` is what it
        found (``_ABSENT``: the cache was read already, and a second read would count a
        second miss)."""
        key, types = self._key_of(args, kwargs)
        try:
            cache = self.cache
        except CacheError as exc:
            _warn_once("open", exc)
            return await self._func(*args, **kwargs)
        if not opened(cache):
            # An open waits for a shard another process is creating (up to 30 s): no
            # longer than lock_timeout here, then the cache is down (fail open).
            try:
                await open_within(cache, self._lock_timeout)
            except Exception as exc:  # CacheTimeoutError included
                call = functools.partial(self._func, *args, **kwargs)
                return await cache_down(  # type: ignore[no-any-return]
                    cache, exc, key, call, self._lock_timeout
                )
        if self._early is None and hit is NOT_NOW:
            if types is not None:
                # Remember where this call's entry lives (AsyncCache only), so that the
                # next identical call takes the hot path.
                locate = getattr(cache, "_locate", None)
                peek_at = getattr(cache, "_peek_at", None)
                if locate is not None and peek_at is not None:
                    with contextlib.suppress(Exception):  # reported by the calls below
                        kb, index = locate(key)
                        self._remember(args[self._skip :], (types, key, peek_at, kb, index))
            # The hit, before building the factory and the call below (a third of a hit's
            # cost). Any failure here falls through to get_or_compute, which reports it.
            # AsyncCache answers most hits without an await (``_peek``); any backend's
            # ``get`` returns fresh entries only, which is all a hit needs.
            peek = getattr(cache, "_peek", None)
            try:
                hit = NOT_NOW if peek is None else peek(key, _ABSENT, self._type)
                if hit is NOT_NOW:
                    hit = await cache.get(key, _ABSENT, type=self._type)
            except Exception:
                hit = _ABSENT
            if hit is not _ABSENT:
                return hit  # type: ignore[no-any-return]
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
        """Delete the cached result of this call; True if there was one.

        Unlike a call, this is cache management: a failing cache raises. A computation of
        this call already running does not store its (older) result, and the next call
        does not join it.
        """
        key = self.cache_key(*args, **kwargs)
        cache = self.cache
        if not hasattr(cache, "_release_now"):  # AsyncCache.delete supersedes by itself
            supersede(cache, encode_key(key))
        return await cache.delete(key)

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function now and store its result, whatever is cached (fail open).

        A computation of this call that began earlier does not store over it."""
        key = self.cache_key(*args, **kwargs)
        value = await self._func(*args, **kwargs)
        if self._cache_if is None or self._cache_if(value):
            try:
                cache = self.cache
                if not hasattr(cache, "_release_now"):  # AsyncCache.set supersedes itself
                    supersede(cache, encode_key(key))
                await cache.set(key, value, ttl=self._ttl, tag=self._tag, stale_ttl=self._stale_ttl)
            except Exception as exc:
                _warn_once("write", exc, self._cache)
        return value

    @overload
    def __get__(self, instance: None, owner: Any = None) -> CachedFunction[P, R]: ...
    @overload
    def __get__(
        self: CachedFunction[Concatenate[S, P2], R], instance: S, owner: Any = None
    ) -> BoundCachedFunction[P2, R]: ...

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        # Methods: bind like a function, keeping cache_key/invalidate/refresh.
        if instance is None:
            return self
        return BoundCachedFunction(self, instance, owner)

    def __repr__(self) -> str:
        return f"<acached {self._name}>"


class BoundCachedFunction(Generic[P, R]):
    """``obj.method`` for an ``@acached`` method: the instance is passed as first argument.

    Example::

        class Users:
            @acached(cache, ignore=("self",))
            async def get(self, user_id: int) -> dict: ...

        await Users().get(1); Users().get.cache_key(1)
    """

    def __init__(self, cached: CachedFunction[..., Any], instance: Any, owner: Any) -> None:
        self._cached = cached
        self._instance = instance
        self.__dict__.update(cached._wrapper_attrs)  # functools.update_wrapper, precomputed
        self.__wrapped__ = cached.__wrapped__.__get__(instance, owner)
        if _mark_coroutine is not None:
            _mark_coroutine(self)

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = await self._cached(self._instance, *args, **kwargs)
        return result

    def cache_key(self, *args: P.args, **kwargs: P.kwargs) -> Key:
        """The cache key of this call (see :meth:`CachedFunction.cache_key`)."""
        return self._cached.cache_key(self._instance, *args, **kwargs)

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Delete the cached result of this call; True if there was one."""
        return await self._cached.invalidate(self._instance, *args, **kwargs)

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the method now and store its result."""
        result: R = await self._cached.refresh(self._instance, *args, **kwargs)
        return result

    def __repr__(self) -> str:
        return f"<bound acached {self._cached._name} of {self._instance!r}>"


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

        @acached                      # the default cache, no expiry
        async def fetch_user(user_id: int) -> dict: ...

        @acached(cache, ttl=300, stale_ttl=60, ignore=("self",))
        async def summarize(self, text: str) -> str: ...

    Options: ``ttl`` (seconds; ``None`` never expires; omitted: the cache's
    ``default_ttl``), ``tag`` (for ``cache.evict(tag)``), ``stale_ttl`` (serve an expired
    result that long while one background task refreshes it), ``key`` (a callable of the
    same arguments returning the cache key, used as is), ``version`` (bump it to drop old
    results), ``ignore`` (parameter names or positions left out of the key, e.g.
    ``("self",)``; one name may be a str), ``cache_if`` (a predicate on the result: False
    returns it without storing it), ``lock_timeout`` (the longest a caller waits for
    another's computation), ``early_refresh`` (XFetch beta: refresh a fresh entry early,
    with a probability rising near its expiry), ``type`` (decode the stored result into
    this type).

    On a miss exactly one caller (one task in one process, one process per cache
    directory) runs the function; the others await its result. Exceptions are never
    cached. If the cache fails, the function is still called (fail open) and the failure
    is logged once. Decorating a non-async function raises ``TypeError``.
    """
    options: dict[str, Any] = dict(
        ttl=ttl,
        tag=tag,
        stale_ttl=stale_ttl,
        key=key,
        version=version,
        ignore=(ignore,) if isinstance(ignore, str) else tuple(ignore),  # "self" is one name
        cache_if=cache_if,
        lock_timeout=lock_timeout,
        early_refresh=early_refresh,
        type=type,
    )
    if cache is not None and not isinstance(cache, CacheBackend) and callable(cache):
        return CachedFunction(cache, None, **options)  # bare @acached

    def decorate(func: Callable[P, Awaitable[R]]) -> CachedFunction[P, R]:
        return CachedFunction(func, cache, **options)

    if cache is not None and not isinstance(cache, CacheBackend):
        raise TypeError(
            "acached(cache, ...) needs an AsyncCache or another CacheBackend, not "
            f"{builtins.type(cache).__name__}"
        )
    return decorate
