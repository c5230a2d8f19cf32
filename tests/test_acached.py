"""``@acached`` in one process: the contract of API.md §2 on a real cache in a fresh directory.

Cross-process claims (4 real processes, a killed leader, keys across interpreter runs, the
default cache) are in ``test_acached_multiprocess.py``. ``cache`` (conftest) is a fresh cache
in a fresh directory; every async test runs on asyncio and on uvloop (conftest).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import sqlite3
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shardcache import (
    AsyncCache,
    CachedFunction,
    CacheError,
    ConfigurationError,
    acached,
)

LONG = 10.0  # bound of every wait that should end much sooner


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = LONG) -> None:
    """Re-check a condition that has no event to await, with backoff, bounded."""

    async def loop() -> None:
        delay = 0.001
        while not await predicate():
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    await asyncio.wait_for(loop(), timeout)


async def waits(cache: AsyncCache) -> int:
    return (await cache.stats()).stampede_waits


class Counter:
    """Counts the runs of a function body, optionally holding them at a gate."""

    def __init__(self) -> None:
        self.runs = 0
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    def hold(self) -> None:
        self.gate.clear()

    async def enter(self) -> int:
        self.runs += 1
        self.started.set()
        await asyncio.wait_for(self.gate.wait(), LONG)
        return self.runs


# -- decoration ------------------------------------------------------------------------------


async def add(x: int, y: int = 2) -> int:
    """Add two numbers."""
    return x + y


def test_bare_and_with_arguments(tmp_path: Path) -> None:
    bare = acached(add)  # what @acached does; no I/O until the first call
    assert isinstance(bare, CachedFunction)
    assert bare.__wrapped__ is add
    with_args = acached(AsyncCache(tmp_path), ttl=5, tag="t", version=2)(add)
    assert isinstance(with_args, CachedFunction)
    assert with_args.__wrapped__ is add
    no_cache = acached(ttl=5)(add)
    assert isinstance(no_cache, CachedFunction)


def test_sync_function_is_rejected_at_decoration() -> None:
    def plain(x: int) -> int:
        return x

    async def agen() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(TypeError, match=r"async function.*@cached"):
        acached(plain)
    with pytest.raises(TypeError, match="async function"):
        acached(ttl=5)(plain)
    with pytest.raises(TypeError, match="async function"):
        acached(agen)


def test_bad_options_raise_at_decoration(tmp_path: Path) -> None:
    cache = AsyncCache(tmp_path)
    with pytest.raises(ConfigurationError, match="ttl"):
        acached(cache, ttl=-1)(add)
    with pytest.raises(ConfigurationError, match="stale_ttl"):
        acached(cache, stale_ttl=float("nan"))(add)
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ConfigurationError, match="lock_timeout"):
            acached(cache, lock_timeout=bad)(add)
    with pytest.raises(ConfigurationError, match="early_refresh"):
        acached(cache, early_refresh=0)(add)
    with pytest.raises(ConfigurationError, match=r"ignore='z'.*x, y"):
        acached(cache, ignore=("z",))(add)
    with pytest.raises(ConfigurationError, match="ignore=5"):
        acached(cache, ignore=(5,))(add)
    with pytest.raises(TypeError, match="CacheBackend"):
        acached("/tmp/not-a-cache")(add)


def test_signature_docstring_and_type_hints_are_kept(tmp_path: Path) -> None:
    cached = acached(AsyncCache(tmp_path))(add)
    assert cached.__name__ == "add"
    assert cached.__qualname__ == "add"
    assert cached.__doc__ == "Add two numbers."
    assert cached.__module__ == add.__module__
    assert inspect.signature(cached) == inspect.signature(add)
    assert typing.get_type_hints(cached) == {"x": int, "y": int, "return": int}
    assert inspect.iscoroutinefunction(cached.__call__)


def test_the_wrapper_is_a_coroutine_function_to_introspection(tmp_path: Path) -> None:
    """Frameworks that decide between awaiting and calling in a thread ask inspect or
    asyncio; both answer as for the ``async def`` itself, for methods too."""

    class Users:
        @acached(AsyncCache(tmp_path), ignore=("self",))
        async def get(self, user_id: int) -> int:
            return user_id

    cached = acached(AsyncCache(tmp_path))(add)
    for wrapper in (cached, Users.get, Users().get):
        assert inspect.iscoroutinefunction(wrapper)
        assert asyncio.iscoroutinefunction(wrapper)
    assert inspect.signature(Users().get) == inspect.signature(Users().get.__wrapped__)


# -- caching ---------------------------------------------------------------------------------


async def test_result_is_cached_and_persists_across_reopen(tmp_path: Path) -> None:
    runs = 0

    async def square(x: int) -> int:
        nonlocal runs
        runs += 1
        return x * x

    async with AsyncCache(tmp_path) as first:
        f = acached(first)(square)
        assert await f(3) == 9
        assert await f(3) == 9
        assert await f(4) == 16
        assert runs == 2
    async with AsyncCache(tmp_path) as second:
        g = acached(second)(square)  # same module, qualname and version: same keys
        assert await g(3) == 9
        assert runs == 2


async def test_none_result_is_cached(cache: AsyncCache) -> None:
    counter = Counter()

    @acached(cache)
    async def nothing(x: int) -> None:
        await counter.enter()

    assert await nothing(1) is None
    assert await nothing(1) is None
    assert counter.runs == 1


async def test_exceptions_are_not_cached(cache: AsyncCache) -> None:
    counter = Counter()

    @acached(cache)
    async def flaky(x: int) -> str:
        if await counter.enter() == 1:
            raise ValueError("first call fails")
        return "ok"

    with pytest.raises(ValueError, match="first call fails"):
        await flaky(1)
    assert await flaky(1) == "ok"
    assert await flaky(1) == "ok"
    assert counter.runs == 2


async def test_ttl_expires(cache: AsyncCache) -> None:
    counter = Counter()

    @acached(cache, ttl=0.2)
    async def f(x: int) -> int:
        return await counter.enter()

    assert await f(1) == 1
    assert await f(1) == 1
    await asyncio.sleep(0.3)  # expiry is wall-clock time: nothing to await instead
    assert await f(1) == 2


async def test_type_decodes_the_stored_result(cache: AsyncCache) -> None:
    class Point(msgspec.Struct):
        x: int
        y: int

    @acached(cache, type=Point)
    async def point(x: int) -> Point:
        return Point(x, -x)

    assert await point(2) == Point(2, -2)
    assert await point(2) == Point(2, -2)  # from the cache, decoded as a Point again


# -- keys ------------------------------------------------------------------------------------


async def test_key_normalization(cache: AsyncCache) -> None:
    f = acached(cache)(add)
    same = {
        f.cache_key(1),
        f.cache_key(1, 2),
        f.cache_key(x=1),
        f.cache_key(1, y=2),
        f.cache_key(y=2, x=1),
    }
    assert len(same) == 1
    assert f.cache_key(1, 3) not in same
    assert f.cache_key(2) not in same
    # Differently typed arguments are different calls, as for cache keys.
    assert len({f.cache_key(1), f.cache_key(1.0), f.cache_key("1"), f.cache_key(True)}) == 4

    async def many(*args: int, **kwargs: Any) -> None: ...

    g = acached(cache)(many)
    assert g.cache_key(1, 2, a=1, b=2) == g.cache_key(1, 2, b=2, a=1)
    assert g.cache_key(1, 2) != g.cache_key(2, 1)

    async def containers(d: dict[str, int], s: frozenset[str]) -> None: ...

    h = acached(cache)(containers)
    assert h.cache_key({"a": 1, "b": 2}, frozenset("xyz")) == h.cache_key(
        {"b": 2, "a": 1}, frozenset("zyx")
    )
    # Huge ints are fine (beyond MessagePack's 64 bits) and distinct.
    assert f.cache_key(2**80) != f.cache_key(2**80 + 1)
    # A key is a str that names the function and its version.
    assert isinstance(f.cache_key(1), str) and f.cache_key(1).startswith("acached:")
    assert "add:v1:" in str(f.cache_key(1))
    assert f.cache_key(1) != acached(cache, version=2)(add).cache_key(1)
    assert f.cache_key(1) != acached(cache)(many).cache_key(1)


async def test_one_call_shape_runs_once(cache: AsyncCache) -> None:
    counter = Counter()

    @acached(cache)
    async def f(x: int, y: int = 2) -> int:
        await counter.enter()
        return x + y

    assert [await f(1), await f(x=1), await f(1, 2), await f(y=2, x=1)] == [3, 3, 3, 3]
    assert counter.runs == 1


async def test_unkeyable_argument_raises_type_error_naming_it(cache: AsyncCache) -> None:
    counter = Counter()

    @acached(cache)
    async def f(x: int, client: object) -> int:
        await counter.enter()
        return x

    with pytest.raises(TypeError, match=r"argument 'client' of type object"):
        await f(1, object())
    with pytest.raises(TypeError, match="argument 'client'"):
        f.cache_key(1, object())
    with pytest.raises(TypeError, match="missing a required argument"):
        await f(1)
    assert counter.runs == 0  # raised before the body, before anything was stored


async def test_unkeyable_star_arguments_are_named_by_entry(cache: AsyncCache) -> None:
    @acached(cache)
    async def g(x: int, *rest: object, **options: object) -> int:
        return x

    with pytest.raises(TypeError, match=r"argument 'sock' \(in \*\*options\) of type object"):
        await g(1, sock=object())
    with pytest.raises(TypeError, match=r"argument #1 \(in \*rest\) of type object"):
        await g(1, 2, object())
    assert await g(1, 2, mode="fast") == 1


async def test_key_callable(cache: AsyncCache) -> None:
    counter = Counter()

    @acached(cache, key=lambda user_id, verbose=False: f"user:{user_id}")
    async def user(user_id: int, verbose: bool = False) -> dict[str, int]:
        await counter.enter()
        return {"id": user_id}

    assert user.cache_key(7) == "user:7"
    assert await user(7) == {"id": 7}
    assert await user(7, verbose=True) == {"id": 7}  # same custom key
    assert counter.runs == 1
    assert await cache.get("user:7") == {"id": 7}  # the key is used as is

    @acached(cache, key=lambda x: object())
    async def bad(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="unsupported cache key type"):
        await bad(1)


async def test_ignore_by_name_and_by_position(cache: AsyncCache) -> None:
    counter = Counter()

    async def fetch(session: object, url: str, *, timeout: float = 1.0) -> str:
        await counter.enter()
        return url.upper()

    by_name = acached(cache, ignore=("session", "timeout"))(fetch)
    assert await by_name(object(), "a", timeout=1) == "A"
    assert await by_name(object(), "a", timeout=5) == "A"
    assert counter.runs == 1
    by_position = acached(cache, ignore=(0, "timeout"))(fetch)
    assert by_position.cache_key(object(), "a") == by_name.cache_key(object(), "a")


class Service:
    def __init__(self, factor: int) -> None:
        self.factor = factor
        self.runs = 0

    async def _scale(self, x: int) -> int:
        self.runs += 1
        return x * self.factor

    scale = acached(ignore=("self",))(_scale)  # default cache: only keys are used here


async def test_methods_with_ignore_self(cache: AsyncCache) -> None:
    class Users:
        def __init__(self) -> None:
            self.runs = 0

        @acached(cache, ignore=("self",))
        async def get(self, user_id: int) -> str:
            """Load a user."""
            self.runs += 1
            return f"user {user_id}"

    a, b = Users(), Users()
    assert await a.get(1) == "user 1"
    assert await b.get(1) == "user 1"  # the instance is not part of the key
    assert (a.runs, b.runs) == (1, 0)
    assert a.get.cache_key(1) == b.get.cache_key(1) == Users.get.cache_key(a, 1)
    assert list(inspect.signature(a.get).parameters) == ["user_id"]
    assert a.get.__doc__ == "Load a user."
    assert await a.get.invalidate(1) is True
    assert await a.get.refresh(1) == "user 1"
    assert a.runs == 2
    assert await b.get(1) == "user 1"
    assert b.runs == 0
    assert isinstance(Users.__dict__["get"], CachedFunction)


async def test_ignore_takes_one_name_as_a_str(cache: AsyncCache) -> None:
    class Users:
        @acached(cache, ignore="self")  # as ("self",): not the letters s, e, l, f
        async def get(self, user_id: int) -> str:
            return f"user {user_id}"

    a, b = Users(), Users()
    assert await a.get(1) == await b.get(1) == "user 1"
    assert a.get.cache_key(1) == b.get.cache_key(1)


async def test_method_without_ignore_names_self(cache: AsyncCache) -> None:
    class Repo:
        @acached(cache)
        async def get(self, x: int) -> int:
            return x

    with pytest.raises(TypeError, match=r"argument 'self'.*ignore=\('self',\)"):
        await Repo().get(1)


# -- the hit path: a repeat call is served from what was remembered about its arguments ------


async def test_remembered_calls_keep_equal_but_different_arguments_apart(
    cache: AsyncCache,
) -> None:
    # 1, 1.0 and True (and 0, 0.0, -0.0, False) are equal dict keys: a repeat call must
    # still find its own entry, not the one of an equal argument of another type or sign.
    @acached(cache)
    async def f(x: object) -> str:
        return repr(x)

    @acached(cache)
    async def g(x: object, y: str) -> str:
        return f"{x!r} {y}"

    args: list[object] = [1, 1.0, True, 0, 0.0, -0.0, False, "1", b"1", None]
    for _ in range(3):  # computed, then remembered, then served as remembered
        assert [await f(a) for a in args] == [repr(a) for a in args]
        assert [await g(a, "y") for a in args] == [f"{a!r} y" for a in args]
    assert len({f.cache_key(a) for a in args}) == len(args)
    assert len({g.cache_key(a, "y") for a in args}) == len(args)


async def test_a_remembered_call_sees_every_write_and_expiry(cache: AsyncCache) -> None:
    counter = Counter()

    @acached(cache)
    async def f(x: int) -> dict[str, int]:
        return {"x": x, "run": await counter.enter()}

    assert await f(1) == {"x": 1, "run": 1}
    assert await f(1) == {"x": 1, "run": 1}  # served from the cache from now on
    await cache.set(f.cache_key(1), {"x": 1, "run": 99})  # another task's write
    assert await f(1) == {"x": 1, "run": 99}
    await cache.set(f.cache_key(1), {"x": 1, "run": 98}, ttl=0.2)
    assert await f(1) == {"x": 1, "run": 98}
    await asyncio.sleep(0.3)  # expiry is wall-clock time: nothing to await instead
    assert await f(1) == {"x": 1, "run": 2}
    assert await f.invalidate(1) is True
    assert await f(1) == {"x": 1, "run": 3}
    assert await f(1) == {"x": 1, "run": 3}
    assert counter.runs == 3
    stats = await cache.stats()
    assert (stats.hits, stats.misses) == (4, 3)  # a miss is counted once, not per lookup


async def test_a_remembered_method_call_is_shared_and_never_stale(cache: AsyncCache) -> None:
    class Users:
        def __init__(self) -> None:
            self.runs = 0

        @acached(cache, ignore=("self",))
        async def get(self, user_id: int) -> list[int]:
            self.runs += 1
            return [user_id]

    a, b = Users(), Users()
    assert [await a.get(1), await b.get(1), await a.get(1), await Users.get(b, 1)] == [[1]] * 4
    assert (a.runs, b.runs) == (1, 0)
    await cache.set(a.get.cache_key(1), [7])
    assert [await a.get(1), await b.get(1), await Users.get(a, 1)] == [[7]] * 3
    assert await b.get(2) == [2]
    assert (a.runs, b.runs) == (1, 1)


async def test_a_mutable_result_is_a_fresh_object_per_call(cache: AsyncCache) -> None:
    @acached(cache)
    async def f(x: int) -> tuple[int, list[int]]:
        return (x, [x])

    await f(1)
    first = await f(1)
    first[1].append(2)  # the caller's own copy: the next caller does not see this
    second = await f(1)
    assert second == (1, [1])
    assert second is not first and second[1] is not first[1]


async def test_an_immutable_result_is_decoded_once_and_shared(cache: AsyncCache) -> None:
    value = ("text" * 50, 2**40, 1.5, None, frozenset({b"a", (1, "b")}))

    @acached(cache)
    async def f(x: int) -> Any:
        return value

    assert await f(1) == value
    second, third = await f(1), await f(1)
    assert second == value
    assert third is second  # nobody can change it, so no second decode


def test_class_level_method_keys() -> None:
    # Decorated at class creation, the default cache is never touched by cache_key().
    assert Service(2).scale.cache_key(3) == Service(5).scale.cache_key(3)
    assert Service(2).scale.cache_key(3) != Service(2).scale.cache_key(4)


async def test_tag_and_evict(cache: AsyncCache) -> None:
    counter = Counter()

    @acached(cache, tag="users")
    async def f(x: int) -> int:
        return await counter.enter()

    assert await f(1) == 1
    assert await f(2) == 2
    assert await cache.evict("users") == 2
    assert await f(1) == 3


async def test_cache_if(cache: AsyncCache) -> None:
    counter = Counter()

    @acached(cache, cache_if=lambda result: result["ok"])
    async def call(x: int) -> dict[str, Any]:
        n = await counter.enter()
        return {"ok": x > 0, "n": n}

    assert await call(-1) == {"ok": False, "n": 1}
    assert await call(-1) == {"ok": False, "n": 2}  # not stored: computed again
    assert await call(1) == {"ok": True, "n": 3}
    assert await call(1) == {"ok": True, "n": 3}
    assert await cache.get(call.cache_key(-1), "absent") == "absent"


async def test_invalidate_and_refresh(cache: AsyncCache) -> None:
    counter = Counter()

    @acached(cache)
    async def f(x: int) -> int:
        return await counter.enter()

    assert await f.invalidate(1) is False
    assert await f(1) == 1
    assert await f.refresh(1) == 2  # runs now, whatever is cached
    assert await f(1) == 2
    assert await f.invalidate(1) is True
    assert await f(1) == 3


async def test_invalidate_while_computing_the_next_call_computes_anew(cache: AsyncCache) -> None:
    db = {"v": "old"}
    started = asyncio.Event()
    gate = asyncio.Event()

    @acached(cache)
    async def load() -> str:
        value = db["v"]
        started.set()
        await asyncio.wait_for(gate.wait(), LONG)
        return value

    running = asyncio.create_task(load())
    await asyncio.wait_for(started.wait(), LONG)
    db["v"] = "new"
    assert await load.invalidate() is False  # nothing stored yet
    gate.set()
    # The next call does not join the computation that began before the invalidation...
    assert await asyncio.wait_for(load(), LONG) == "new"
    assert await asyncio.wait_for(running, LONG) == "old"  # its own caller asked before
    # ...and that computation did not store its older result over the newer one.
    assert await cache.get(load.cache_key()) == "new"
    assert await load() == "new"


async def test_refresh_is_not_overwritten_by_an_older_computation(cache: AsyncCache) -> None:
    db = {"v": "old"}
    gates: list[asyncio.Event] = []

    @acached(cache)
    async def load() -> str:
        value = db["v"]
        gate = asyncio.Event()
        gates.append(gate)
        await asyncio.wait_for(gate.wait(), LONG)
        return value

    older = asyncio.create_task(load())
    await until(lambda: _true(len(gates) == 1))
    db["v"] = "new"
    refreshing = asyncio.create_task(load.refresh())
    await until(lambda: _true(len(gates) == 2))
    gates[1].set()
    assert await asyncio.wait_for(refreshing, LONG) == "new"
    gates[0].set()  # the older computation ends after the refresh stored its value
    assert await asyncio.wait_for(older, LONG) == "old"
    assert await cache.get(load.cache_key()) == "new"
    assert await load() == "new"


async def test_delete_and_clear_while_computing_store_nothing_older(cache: AsyncCache) -> None:
    for wipe in ("delete", "clear"):
        gate = asyncio.Event()

        @acached(cache, ignore=("gate",))
        async def load(gate: asyncio.Event = gate) -> str:
            await asyncio.wait_for(gate.wait(), LONG)
            return "computed before the wipe"

        running = asyncio.create_task(load())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        if wipe == "delete":
            await cache.delete(load.cache_key())
        else:
            await cache.clear()
        gate.set()
        assert await asyncio.wait_for(running, LONG) == "computed before the wipe"
        assert await cache.get(load.cache_key(), "absent") == "absent", wipe


@pytest.mark.parametrize("write", ["set_many", "pop", "delete_many", "add", "evict"])
async def test_every_write_of_the_key_supersedes_a_running_computation(
    cache: AsyncCache, write: str
) -> None:
    gate, started = asyncio.Event(), asyncio.Event()

    @acached(cache, tag="T", ignore=("gate", "started"))
    async def load(gate: asyncio.Event = gate, started: asyncio.Event = started) -> str:
        started.set()
        await asyncio.wait_for(gate.wait(), LONG)
        return "computed before the write"

    key = load.cache_key()
    running = asyncio.create_task(load())
    await asyncio.wait_for(started.wait(), LONG)  # it holds its lease, waits at the gate
    expected: Any = "absent"
    if write == "set_many":
        await cache.set_many({key: "written"})
        expected = "written"
    elif write == "add":
        assert await cache.add(key, "written")
        expected = "written"
    elif write == "pop":
        await cache.pop(key)
    elif write == "delete_many":
        await cache.delete_many([key])
    else:
        await cache.evict("T")
    gate.set()
    assert await asyncio.wait_for(running, LONG) == "computed before the write"
    assert await cache.get(key, "absent") == expected


async def test_after_invalidate_the_next_call_does_not_wait_for_the_old_computation(
    cache: AsyncCache,
) -> None:
    """The superseded computation's lease is released at once: the next call computes
    while the old one is still running (here: blocked until the test ends)."""
    load, old_gate, calls = _first_call_held(cache)
    old = asyncio.create_task(load())
    await until(lambda: _true(len(calls) == 1))  # running: it holds the lease
    await load.invalidate()
    assert _leases(cache) == 0  # released with the invalidation's own write
    assert await asyncio.wait_for(load(), 5) == 2  # before the fix: waited for the lease
    assert (await cache.stats()).stampede_waits == 0
    old_gate.set()
    assert await asyncio.wait_for(old, LONG) == 1
    assert await load() == 2  # the old result was not stored over the new one


def _first_call_held(cache: AsyncCache) -> tuple[Any, asyncio.Event, list[int]]:
    """A cached function whose first run waits for the gate; the runs so far."""
    gate = asyncio.Event()
    calls: list[int] = []

    @acached(cache, lock_timeout=30)
    async def load() -> int:
        calls.append(len(calls) + 1)
        n = len(calls)
        if n == 1:
            await asyncio.wait_for(gate.wait(), LONG)
        return n

    return load, gate, calls


def _leases(cache: AsyncCache) -> int:
    total = 0
    for path in sorted(cache.directory.glob("shard-*.db")):
        with contextlib.closing(sqlite3.connect(path)) as conn:
            total += conn.execute("SELECT count(*) FROM leases").fetchone()[0]
    return total


@pytest.mark.parametrize("ticks", range(1, 9))
async def test_a_write_while_the_computation_takes_its_lease_leaves_no_lease(
    cache: AsyncCache, ticks: int
) -> None:
    """However far the first call got (looking up, taking its lease, running), a write of
    the key lets the next call compute at once, never after the old lease's timeout."""
    await cache.open()
    load, gate, _calls = _first_call_held(cache)
    old = asyncio.create_task(load())
    for _ in range(ticks):
        await asyncio.sleep(0)
    await load.invalidate()
    assert await asyncio.wait_for(load(), 5) >= 1
    gate.set()
    await asyncio.wait_for(old, LONG)
    assert _leases(cache) == 0


async def _true(condition: bool) -> bool:
    return condition


async def test_waiters_each_get_their_own_copy_of_a_mutable_result(cache: AsyncCache) -> None:
    counter = Counter()
    counter.hold()

    @acached(cache)
    async def f() -> dict[str, list[int]]:
        await counter.enter()
        return {"a": [1]}

    tasks = [asyncio.create_task(f()) for _ in range(5)]
    await until(lambda: waits_at_least(cache, 4))
    counter.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), LONG)
    assert counter.runs == 1
    results[0]["a"].append(2)  # one caller changes its result: nobody else's changes
    assert [r["a"] for r in results[1:]] == [[1]] * 4
    assert len({id(r) for r in results}) == 5 and len({id(r["a"]) for r in results}) == 5


# -- stampede protection in one process ------------------------------------------------------


async def test_100_concurrent_callers_run_the_body_once(cache: AsyncCache) -> None:
    counter = Counter()
    counter.hold()

    @acached(cache, ttl=60)
    async def slow(x: int) -> str:
        n = await counter.enter()
        return f"value {x} #{n}"

    tasks = [asyncio.create_task(slow(1)) for _ in range(100)]
    await until(lambda: waits_at_least(cache, 99))
    counter.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), LONG)
    assert results == ["value 1 #1"] * 100
    assert counter.runs == 1
    assert (await cache.stats()).stampede_waits == 99


async def waits_at_least(cache: AsyncCache, n: int) -> bool:
    return await waits(cache) >= n


async def test_leader_raises_waiters_get_it_once_then_recompute(cache: AsyncCache) -> None:
    counter = Counter()
    counter.hold()
    error = RuntimeError("boom")

    @acached(cache)
    async def f(x: int) -> str:
        if await counter.enter() == 1:
            raise error
        return "fine"

    tasks = [asyncio.create_task(f(1)) for _ in range(10)]
    await until(lambda: waits_at_least(cache, 9))
    counter.gate.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), LONG)
    assert all(o is error for o in outcomes)  # the same exception, once each
    assert counter.runs == 1
    assert await f(1) == "fine"  # not cached: the next call computes
    assert counter.runs == 2


async def test_leader_cancelled_waiters_still_get_a_value(cache: AsyncCache) -> None:
    counter = Counter()
    counter.hold()

    @acached(cache)
    async def f(x: int) -> str:
        await counter.enter()
        return "value"

    leader = asyncio.create_task(f(1))
    await asyncio.wait_for(counter.started.wait(), LONG)
    waiters = [asyncio.create_task(f(1)) for _ in range(5)]
    await until(lambda: waits_at_least(cache, 5))
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    counter.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), LONG) == ["value"] * 5
    assert counter.runs == 1  # the work went on for the waiters


async def test_cancelled_computation_a_waiter_takes_over(cache: AsyncCache) -> None:
    counter = Counter()
    counter.hold()

    @acached(cache)
    async def f(x: int) -> str:
        n = await counter.enter()
        if n == 1:
            raise asyncio.CancelledError  # the leader's computation is cancelled
        return f"run {n}"

    leader = asyncio.create_task(f(1))
    await asyncio.wait_for(counter.started.wait(), LONG)
    waiters = [asyncio.create_task(f(1)) for _ in range(5)]
    await until(lambda: waits_at_least(cache, 5))
    counter.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), LONG) == ["run 2"] * 5
    assert leader.cancelled()  # as if it had called the function directly
    assert counter.runs == 2  # exactly one waiter took over; the others waited for it


async def test_all_callers_cancelled_cancels_the_work_and_frees_the_lease(
    cache: AsyncCache,
) -> None:
    counter = Counter()
    cancelled = asyncio.Event()

    @acached(cache, lock_timeout=30)
    async def f(x: int) -> int:
        n = await counter.enter()
        if n == 1:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return n

    callers = [asyncio.create_task(f(1)) for _ in range(3)]
    await asyncio.wait_for(counter.started.wait(), LONG)
    for caller in callers:
        caller.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    await asyncio.wait_for(cancelled.wait(), LONG)
    # A leaked lease would make this wait lock_timeout (30 s); the bound is 10 s.
    assert await asyncio.wait_for(f(1), LONG) == 2


async def test_no_waiter_waits_past_lock_timeout(cache: AsyncCache) -> None:
    counter = Counter()
    hung = asyncio.Event()

    @acached(cache, lock_timeout=0.2)
    async def f(x: int) -> int:
        n = await counter.enter()
        if n == 1:
            await asyncio.wait_for(hung.wait(), LONG)  # a leader that hangs
        return n

    leader = asyncio.create_task(f(1))
    await asyncio.wait_for(counter.started.wait(), LONG)
    assert await asyncio.wait_for(f(1), LONG) == 2  # gave up waiting, computed itself
    hung.set()
    assert await asyncio.wait_for(leader, LONG) == 1


async def test_waits_for_a_lease_held_elsewhere_and_takes_its_value(cache: AsyncCache) -> None:
    counter = Counter()

    @acached(cache)
    async def f(x: int) -> str:
        await counter.enter()
        return "computed here"

    key = f.cache_key(1)
    assert await cache.acquire_lease(key, "another-process", 30)
    call = asyncio.create_task(f(1))
    await until(lambda: waits_at_least(cache, 1))
    await cache.set(key, "computed elsewhere")  # what the lease holder does
    assert await asyncio.wait_for(call, LONG) == "computed elsewhere"
    assert counter.runs == 0


async def test_expired_lease_of_a_dead_holder_does_not_block(cache: AsyncCache) -> None:
    counter = Counter()

    @acached(cache, lock_timeout=5)
    async def f(x: int) -> str:
        await counter.enter()
        return "computed"

    key = f.cache_key(1)
    loop = asyncio.get_running_loop()
    assert await cache.acquire_lease(key, "crashed-process", 0.3)
    started = loop.time()
    assert await asyncio.wait_for(f(1), LONG) == "computed"
    assert loop.time() - started >= 0.25  # it did respect the live lease first
    assert counter.runs == 1


# -- stale-while-revalidate and early refresh -------------------------------------------------


async def test_stale_window_serves_at_once_and_refreshes_once(cache: AsyncCache) -> None:
    counter = Counter()

    @acached(cache, ttl=60, stale_ttl=30)
    async def f(x: int) -> str:
        n = await counter.enter()
        return f"fresh #{n}"

    key = f.cache_key(1)
    await cache.set(key, "stale", ttl=0, stale_ttl=30)  # expired, inside its stale window
    counter.hold()
    results = await asyncio.wait_for(asyncio.gather(*(f(1) for _ in range(20))), LONG)
    assert results == ["stale"] * 20  # returned while the refresh is still held
    await asyncio.wait_for(counter.started.wait(), LONG)
    assert counter.runs == 1
    counter.gate.set()
    await until(lambda: entry_is(cache, key, "fresh #1"))
    assert await f(1) == "fresh #1"
    assert counter.runs == 1


async def entry_is(cache: AsyncCache, key: Any, value: Any) -> bool:
    entry = await cache.get_entry(key)
    return entry is not None and entry.value == value


async def test_failed_refresh_keeps_serving_stale_until_the_window_ends(
    cache: AsyncCache, caplog: pytest.LogCaptureFixture
) -> None:
    counter = Counter()

    @acached(cache, ttl=60, stale_ttl=0.5)
    async def f(x: int) -> str:
        n = await counter.enter()
        raise RuntimeError(f"origin down #{n}")

    key = f.cache_key(1)
    await cache.set(key, "stale", ttl=0, stale_ttl=0.5)
    with caplog.at_level(logging.WARNING, logger="shardcache"):
        assert await f(1) == "stale"
        await until(lambda: logged(caplog, "origin down #1"))
        assert await f(1) == "stale"  # still served; another refresh is tried
        await until(lambda: logged(caplog, "origin down #2"))
    await asyncio.sleep(0.6)  # the window ends with wall-clock time
    with pytest.raises(RuntimeError, match="origin down"):
        await f(1)


async def logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(
        text in str(r.exc_info[1] if r.exc_info else "") or text in r.getMessage()
        for r in caplog.records
    )


async def test_close_drains_the_background_refresh(tmp_path: Path) -> None:
    counter = Counter()
    cache = AsyncCache(tmp_path)

    async def f(x: int) -> str:
        n = await counter.enter()
        return f"fresh #{n}"

    cached = acached(cache, ttl=60, stale_ttl=30)(f)
    await cache.set(cached.cache_key(1), "stale", ttl=0, stale_ttl=30)
    counter.hold()
    assert await cached(1) == "stale"
    await asyncio.wait_for(counter.started.wait(), LONG)
    closing = asyncio.create_task(cache.aclose())
    await asyncio.sleep(0.05)
    assert not closing.done()  # aclose() waits for the refresh it owns
    counter.gate.set()
    await asyncio.wait_for(closing, LONG)
    async with AsyncCache(tmp_path) as reopened:
        assert await reopened.get(cached.cache_key(1)) == "fresh #1"


async def test_early_refresh_refreshes_a_fresh_entry(cache: AsyncCache) -> None:
    counter = Counter()
    refreshed = asyncio.Event()

    @acached(cache, ttl=60, early_refresh=1e9)  # a beta so large that it always fires
    async def f(x: int) -> int:
        n = await counter.enter()
        await asyncio.sleep(0.01)  # a measurable compute time: XFetch scales with it
        if n == 2:
            refreshed.set()
        return n

    assert await f(1) == 1
    assert await f(1) == 1  # served fresh; a refresh starts in the background
    await asyncio.wait_for(refreshed.wait(), LONG)
    await until(lambda: entry_is(cache, f.cache_key(1), 2))
    assert await f(1) == 2  # the refreshed value (and another early refresh starts)

    plain = Counter()

    @acached(cache, ttl=60)
    async def g(x: int) -> int:
        n = await plain.enter()
        await asyncio.sleep(0.01)
        return n

    assert [await g(1) for _ in range(5)] == [1] * 5
    assert plain.runs == 1  # without early_refresh nothing runs early


# -- fail open -------------------------------------------------------------------------------


async def test_fail_open_with_a_closed_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    counter = Counter()
    cache = AsyncCache(tmp_path)

    @acached(cache)
    async def f(x: int) -> int:
        await counter.enter()
        return x * 10

    assert await f(1) == 10
    await cache.aclose()
    with caplog.at_level(logging.WARNING, logger="shardcache"):
        assert await f(2) == 20
        assert await f(2) == 20
        assert await f(1) == 10
    warnings = [r for r in caplog.records if r.name == "shardcache"]
    assert len(warnings) == 1
    assert "CacheClosedError" in warnings[0].getMessage()
    assert counter.runs == 4
    counter.hold()  # still one computation per key in this process, cache or not
    tasks = [asyncio.create_task(f(3)) for _ in range(10)]
    await asyncio.wait_for(counter.started.wait(), LONG)
    counter.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*tasks), LONG) == [30] * 10
    assert counter.runs == 5


async def test_fail_open_with_corrupt_shards(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "corrupt"
    directory.mkdir()
    for i in range(8):
        (directory / f"shard-{i:03d}.db").write_bytes(b"this is not an SQLite database" * 100)
    cache = AsyncCache(directory)

    @acached(cache)
    async def f(x: int) -> int:
        return x + 1

    with caplog.at_level(logging.WARNING, logger="shardcache"):
        assert await f(1) == 2
    assert any("Corrupt" in r.getMessage() for r in caplog.records)
    with pytest.raises(CacheError):
        await cache.get("k")  # the cache itself does raise: only @acached fails open


async def test_fail_open_when_the_result_cannot_be_stored(
    cache: AsyncCache, caplog: pytest.LogCaptureFixture
) -> None:
    counter = Counter()
    marker = object()

    @acached(cache)
    async def f(x: int) -> object:
        await counter.enter()
        return marker

    with caplog.at_level(logging.WARNING, logger="shardcache"):
        assert await f(1) is marker
        assert await f(1) is marker
    assert counter.runs == 2
    assert any("SerializationError" in r.getMessage() for r in caplog.records)


async def test_fail_open_while_a_shard_is_locked(tmp_path: Path) -> None:
    # Another connection holds the write lock of every shard: the lease and the write
    # cannot be taken, yet the caller gets the function's result.
    async with AsyncCache(tmp_path, shards=1) as cache:

        @acached(cache, lock_timeout=1)
        async def f(x: int) -> int:
            return x * 2

        await cache.set("warm", 1)
        blocker = sqlite3.connect(tmp_path / "shard-000.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            assert await asyncio.wait_for(f(21), 20) == 42
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()


# -- integrations ----------------------------------------------------------------------------


async def test_fastapi_endpoint_and_helper(cache: AsyncCache) -> None:
    fastapi = pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    counter = Counter()

    @acached(cache, ttl=60)
    async def load_item(item_id: int) -> dict[str, Any]:
        n = await counter.enter()
        return {"id": item_id, "loaded": n}

    app = fastapi.FastAPI()

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, Any]:
        return await load_item(item_id)

    @app.get("/direct/{item_id}")
    @acached(cache, ttl=60)
    async def direct(item_id: int, q: str = "") -> dict[str, Any]:
        n = await counter.enter()
        return {"id": item_id, "q": q, "loaded": n}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = await client.get("/items/3")
        second = await client.get("/items/3")
        assert first.json() == second.json() == {"id": 3, "loaded": 1}
        third = await client.get("/direct/4", params={"q": "x"})
        fourth = await client.get("/direct/4", params={"q": "x"})
        assert third.json() == fourth.json() == {"id": 4, "q": "x", "loaded": 2}
        assert (await client.get("/direct/notanint")).status_code == 422
