"""Fail open: a cache that fails never fails a request; one warning per cause."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from shardcache import AsyncCache, CacheBackend, CacheError

from .origin import BackendProxy, Origin, Reply, cached

pytestmark = pytest.mark.asyncio

PUBLIC = "Cache-Control: public, max-age=60"


class Broken(BackendProxy):
    """A CacheBackend whose named operations fail (or hang); the others use ``inner``."""

    def __init__(self, inner: AsyncCache, failing: set[str], *, error: Exception | None = None,
                 hang: bool = False) -> None:  # fmt: skip
        super().__init__(inner)
        self.failing = failing
        self.error = error or OSError("disk on fire")
        self.hang = hang

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name not in self.failing:
            return await super().call(name, *args, **kwargs)
        if self.hang:
            await asyncio.Event().wait()
        raise self.error


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_a_closed_cache_passes_every_request_through(
    cache: AsyncCache, caplog: pytest.LogCaptureFixture
) -> None:
    origin = Origin(Reply(headers=[PUBLIC], chunks=[b"from the app"]))
    _, http = cached(origin, cache)
    await cache.aclose()
    async with http:
        replies = await asyncio.gather(*(http.get("/a") for _ in range(5)))
        replies.append(await http.post("/a"))
        replies.append(await http.head("/a"))
    assert [reply.status_code for reply in replies] == [200] * 7
    assert all(reply.headers.get("x-cache", "MISS") == "MISS" for reply in replies)
    assert replies[0].content == b"from the app"
    messages = warnings(caplog)
    assert messages and all("fail open" in m and "CacheClosedError" in m for m in messages)
    assert len(messages) == len(set(messages))  # once per cause


@pytest.mark.parametrize(
    "failing",
    [
        {"get"},
        {"set", "add"},
        {"acquire_lease"},
        {"release_lease"},
        {"delete", "evict"},
        {"get", "set", "add", "delete", "evict", "acquire_lease", "release_lease"},
    ],
    ids=["read", "write", "lease", "release", "invalidate", "everything"],
)
async def test_a_failing_backend_never_fails_a_request(
    cache: AsyncCache, failing: set[str], caplog: pytest.LogCaptureFixture
) -> None:
    backend = Broken(cache, failing)
    assert isinstance(backend, CacheBackend)
    origin = Origin(Reply(headers=[PUBLIC], chunks=[b"ok"], delay=0.01))
    # A lease that cannot be released is held until it expires: waiters then wait for it,
    # bounded by lock_timeout (kept short here).
    _, http = cached(origin, backend, lock_timeout=0.3)
    async with http:
        for _ in range(3):
            replies = await asyncio.gather(*(http.get("/a") for _ in range(5)))
            assert all(r.status_code == 200 and r.content == b"ok" for r in replies)
            assert (await http.delete("/a")).status_code == 200
    messages = warnings(caplog)
    assert messages and len(messages) == len(set(messages))
    assert all("fail open" in m for m in messages)


async def test_a_cache_error_is_handled_like_any_failure(cache: AsyncCache) -> None:
    backend = Broken(cache, {"get"}, error=CacheError("corrupt"))
    _, http = cached(Origin(Reply(headers=[PUBLIC])), backend)
    async with http:
        assert (await http.get("/a")).status_code == 200


async def test_a_hanging_lease_is_bounded_by_lock_timeout(cache: AsyncCache) -> None:
    backend = Broken(cache, {"acquire_lease"}, hang=True)
    origin = Origin(Reply(headers=[PUBLIC], chunks=[b"ok"]))
    _, http = cached(origin, backend, lock_timeout=0.2)
    async with http:
        reply = await asyncio.wait_for(http.get("/a"), 5)
    assert reply.content == b"ok"


async def test_the_apps_own_errors_are_not_swallowed(cache: AsyncCache) -> None:
    origin = Origin(Reply(error=ValueError("app bug")))
    _, http = cached(origin, cache)
    async with http:
        with pytest.raises(ValueError, match="app bug"):
            await http.get("/a")
        with pytest.raises(ValueError, match="app bug"):
            await http.post("/a")


@pytest.mark.parametrize("hanging", ["set", "delete"])
async def test_a_hanging_write_is_bounded_by_lock_timeout(cache: AsyncCache, hanging: str) -> None:
    """A shard locked for long holds no response longer than lock_timeout."""
    backend = Broken(cache, {hanging}, hang=True)
    origin = Origin(Reply(headers=[PUBLIC], chunks=[b"ok"]))
    _, http = cached(origin, backend, lock_timeout=0.2)
    async with http:
        reply = await asyncio.wait_for(http.get("/a"), 5)
        changed = await asyncio.wait_for(http.put("/a"), 5)
    assert reply.content == b"ok" and changed.status_code == 200


class Recording(Broken):
    """Broken, and every operation the middleware asks for is recorded."""

    def __init__(self, inner: AsyncCache, failing: set[str], **options: Any) -> None:
        super().__init__(inner, failing, **options)
        self.calls: list[str] = []

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(name)
        return await super().call(name, *args, **kwargs)


async def test_a_failing_cache_is_skipped_for_a_moment(
    cache: AsyncCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard locked by another process makes a write wait lock_timeout and fail: the
    requests after it go straight to the app, instead of each waiting again."""
    monkeypatch.setattr("shardcache._breaker.COOL_OFF", 60.0)
    backend = Recording(cache, {"set"}, hang=True)
    origin = Origin(Reply(headers=[PUBLIC], chunks=[b"ok"]))
    _, http = cached(origin, backend, lock_timeout=0.2)
    async with http:
        first = await asyncio.wait_for(http.get("/a"), 5)
        assert "set" in backend.calls
        backend.calls.clear()
        later = [await asyncio.wait_for(http.get(f"/b{i}"), 5) for i in range(3)]
        changed = await asyncio.wait_for(http.put("/a"), 5)
    assert [r.content for r in [first, *later]] == [b"ok"] * 4 and changed.status_code == 200
    assert backend.calls == []  # not a read, not a lease, not an invalidation


async def test_the_cache_is_tried_again_after_the_cool_off(
    cache: AsyncCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shardcache._breaker.COOL_OFF", 0.05)
    backend = Recording(cache, {"set"}, hang=True)
    _, http = cached(Origin(Reply(headers=[PUBLIC], chunks=[b"ok"])), backend, lock_timeout=0.2)
    async with http:
        await asyncio.wait_for(http.get("/a"), 5)
        await asyncio.sleep(0.1)
        backend.calls.clear()
        backend.failing = set()  # the lock is gone
        await asyncio.wait_for(http.get("/b"), 5)
        assert "get" in backend.calls and "set" in backend.calls
        assert (await http.get("/b")).headers["x-cache"] == "HIT"


@pytest.mark.asyncio(loop_factories=["asyncio"])  # waits on another process: once is enough
async def test_a_cache_still_opening_holds_a_request_no_longer_than_lock_timeout(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards another process is creating hold the open up (up to 30 s): a request waits
    lock_timeout for it, then goes to the app; once the open completes, the cache serves."""
    from _helpers import locked, unmade_shards

    monkeypatch.setattr("shardcache._breaker.COOL_OFF", 0.05)
    files = unmade_shards(tmp_path / "cache", 2)
    cache = AsyncCache(tmp_path / "cache", shards=2)
    origin = Origin(Reply(headers=[PUBLIC], chunks=[b"from the app"]))
    _, http = cached(origin, cache, lock_timeout=0.3)
    try:
        async with http:
            with locked(*files):
                first = await asyncio.wait_for(http.get("/a"), 8)
            assert (first.status_code, first.content) == (200, b"from the app")
            await asyncio.sleep(0.1)  # past the failure's cool-off
            await asyncio.wait_for(http.get("/a"), 8)
            assert (await asyncio.wait_for(http.get("/a"), 8)).headers["x-cache"] == "HIT"
    finally:
        await asyncio.wait_for(cache.aclose(), 8)


@pytest.mark.parametrize("declared", [b"10", b"3", b"ten"])
async def test_a_body_that_disagrees_with_its_content_length_is_never_stored(
    cache: AsyncCache, declared: bytes
) -> None:
    """Not a complete response (RFC 9111 §3.3): the client gets it as the app sent it,
    and the next request goes to the app again (replayed, it failed every client)."""
    reply = Reply(headers=[PUBLIC, f"Content-Length: {declared.decode()}"], chunks=[b"12", b"345"])
    origin = Origin(reply)
    _, http = cached(origin, cache)
    async with http:
        for _ in range(3):
            response = await asyncio.wait_for(http.get("/short"), 5)
            assert response.headers["x-cache"] == "MISS"
            assert response.headers["content-length"] == declared.decode()
    assert origin.calls["/short"] == 3


@pytest.mark.asyncio(loop_factories=["asyncio"])  # waits on another process: once is enough
async def test_a_locked_cache_costs_one_request_one_bound_not_two(
    cache: AsyncCache, cache_dir: Any
) -> None:
    """The lease waits lock_timeout and fails; the store after the app's answer used to
    wait as long again. The failed lease now skips the cache, that request's store too."""
    from _helpers import locked

    await cache.set("made", 1)  # the shards exist; another process locks them all
    files = [str(path) for path in sorted(cache_dir.glob("shard-*.db"))]
    origin = Origin(Reply(headers=[PUBLIC], chunks=[b"from the app"]))
    _, http = cached(origin, cache, lock_timeout=1.5)
    async with http:
        with locked(*files):
            # One bound (1.5 s) and some slack; two bounds would be 3 s.
            response = await asyncio.wait_for(http.get("/a"), 2.6)
    assert (response.status_code, response.content) == (200, b"from the app")
