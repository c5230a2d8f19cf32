"""Hit-for-pass as each process remembers it (``shardcache._asgi_pass``).

A URL known as "pass" costs its requests no cache read; nobody waits for a lease when its
marker expires or while it is being written; and a response that becomes storable, or is
stored by another process, or an invalidation, still ends the pass within a second.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import httpx
import pytest

from _helpers import outlive
from shardcache import AsyncCache, _asgi_pass
from shardcache.asgi import CacheMiddleware

from .origin import BackendProxy, Origin, Reply, cached

pytestmark = pytest.mark.asyncio

KEY = "GET http://testserver/a"
NO_STORE = "Cache-Control: no-store"
PUBLIC = "Cache-Control: public, max-age=60"


class Spy(BackendProxy):
    """Counts the operations; those named in :meth:`hold` wait until released."""

    def __init__(self, inner: AsyncCache) -> None:
        super().__init__(inner)
        self.calls: collections.Counter[str] = collections.Counter()
        self.held: dict[str, asyncio.Event] = {}
        self.entered: dict[str, asyncio.Event] = {}

    def hold(self, name: str) -> asyncio.Event:
        """Hold every ``name`` operation until the returned event is set."""
        self.held[name], self.entered[name] = asyncio.Event(), asyncio.Event()
        return self.held[name]

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.calls[name] += 1
        if name in self.held:
            self.entered[name].set()
            await self.held[name].wait()
        return await super().call(name, *args, **kwargs)


class Clock:
    """The monotonic clock of the middleware's pass memo, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(_asgi_pass, "_monotonic", clock)
    return clock


class Call:
    """One GET straight into an ASGI app; ``answered`` is set once its body is sent."""

    def __init__(self, app: Any, path: str) -> None:
        self.sent: list[dict[str, Any]] = []
        self.answered = asyncio.Event()
        scope = {
            "type": "http", "method": "GET", "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": b"", "headers": [(b"host", b"testserver")],
        }  # fmt: skip
        self.task = asyncio.ensure_future(app(scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def _send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.answered.set()


def uncacheable(backend: Any, **options: Any) -> tuple[Origin, httpx.AsyncClient]:
    """An origin whose responses say ``no-store``, and a client through the middleware."""
    origin = Origin(Reply(headers=[NO_STORE]))
    return origin, cached(origin, backend, **options)[1]


async def known_as_pass(http: httpx.AsyncClient) -> None:
    """Two GETs of a URL whose response may not be stored: the first marks it, the second
    reads the marker and probes the app. The process then passes it for a second."""
    await http.get("/a")
    await http.get("/a")


async def test_a_url_known_as_pass_is_not_read_from_the_cache(
    cache: AsyncCache, clock: Clock
) -> None:
    backend = Spy(cache)
    origin, http = uncacheable(backend)
    async with http:
        await known_as_pass(http)
        backend.calls.clear()
        replies = await asyncio.gather(*(http.get("/a") for _ in range(20)))
        replies.append(await http.head("/a"))
    assert all(reply.headers["x-cache"] == "MISS" for reply in replies)
    assert origin.calls["/a"] == 23
    assert sum(backend.calls.values()) == 0  # no read, no lease, no write


async def test_a_request_with_rule_fields_still_goes_through_the_rules(
    cache: AsyncCache, clock: Clock
) -> None:
    """Only plain requests skip the cache: ``only-if-cached`` still gets its 504."""
    origin, http = uncacheable(cache)
    async with http:
        await known_as_pass(http)
        reply = await http.get("/a", headers={"cache-control": "only-if-cached"})
    assert reply.status_code == 504 and origin.calls["/a"] == 2


async def test_a_pass_url_is_probed_again_after_a_second(cache: AsyncCache, clock: Clock) -> None:
    origin, http = uncacheable(cache)
    async with http:
        await known_as_pass(http)
        origin.route("/a", Reply(headers=[PUBLIC]))
        assert (await http.get("/a")).headers["x-cache"] == "MISS"  # passed within the second
        assert str(await cache.get(KEY)).startswith("pass: ")
        clock.now += 1.0
        await http.get("/a")  # this second's probe finds it storable and stores it
        assert (await http.get("/a")).headers["x-cache"] == "HIT"


async def test_a_response_another_process_stored_is_served_after_a_second(
    cache: AsyncCache, clock: Clock
) -> None:
    origin = Origin(Reply(headers=[NO_STORE], chunks=[b"old"]))
    _, here = cached(origin, cache)
    _, there = cached(Origin(Reply(headers=[PUBLIC], chunks=[b"new"])), cache)
    async with here, there:
        await known_as_pass(here)
        await there.get("/a")  # another worker's probe stores the new response
        assert (await here.get("/a")).content == b"old"  # this one passes for its second
        clock.now += 1.0
        reply = await here.get("/a")
    assert reply.headers["x-cache"] == "HIT" and reply.content == b"new"


async def test_an_unsafe_request_ends_the_pass_at_once(cache: AsyncCache, clock: Clock) -> None:
    origin, http = uncacheable(cache)
    async with http:
        await known_as_pass(http)
        origin.route("/a", Reply(headers=[PUBLIC]))
        assert (await http.post("/a")).status_code == 200  # drops the marker (RFC 9111 §4.4)
        await http.get("/a")
        assert (await http.get("/a")).headers["x-cache"] == "HIT"


async def test_an_expired_marker_is_renewed_without_making_requests_wait(
    cache: AsyncCache, clock: Clock
) -> None:
    """Every pass_ttl the marker expires: its URL's requests do not queue behind a lease
    then, and one of them marks the URL again."""
    backend = Spy(cache)
    origin = Origin(Reply(headers=[NO_STORE], delay=0.05))
    _, http = cached(origin, backend, pass_ttl=0.3)
    async with http:
        await known_as_pass(http)
        await outlive(0.3)
        assert await cache.get(KEY) is None  # the marker expired
        clock.now += 1.0  # and the process's second is over
        backend.calls.clear()
        origin.most_inside = 0
        replies = await asyncio.gather(*(http.get("/a") for _ in range(10)))
        assert str(await cache.get(KEY)).startswith("pass: ")
    assert all(reply.status_code == 200 for reply in replies)
    assert backend.calls["acquire_lease"] == 0
    assert origin.most_inside == 10  # side by side, nobody waited for another


async def test_a_url_passed_long_ago_has_stampede_protection_again(
    cache: AsyncCache, clock: Clock
) -> None:
    origin, http = uncacheable(cache, pass_ttl=0.3)
    async with http:
        await known_as_pass(http)
        await outlive(0.3)
        clock.now += 1.0 + 0.3 + 0.01  # past the second and pass_ttl: nothing is remembered
        origin.route("/a", Reply(headers=[PUBLIC], delay=0.05))
        replies = await asyncio.gather(*(http.get("/a") for _ in range(10)))
    assert origin.calls["/a"] == 3
    assert sorted(reply.headers["x-cache"] for reply in replies) == ["HIT"] * 9 + ["MISS"]


async def test_a_request_arriving_while_the_marker_is_written_does_not_wait(
    cache: AsyncCache,
) -> None:
    backend = Spy(cache)
    release = backend.hold("add")
    middleware = CacheMiddleware(Origin(Reply(headers=[NO_STORE])), cache=backend)
    first = Call(middleware, "/a")
    await asyncio.wait_for(backend.entered["add"].wait(), 5)  # answered; the marker is held
    later = Call(middleware, "/a")
    await asyncio.wait_for(later.answered.wait(), 5)
    assert backend.calls["acquire_lease"] == 1  # the first request's only
    release.set()
    await asyncio.wait_for(asyncio.gather(first.task, later.task), 5)


async def test_a_waiting_request_does_not_wait_for_the_marker_write(cache: AsyncCache) -> None:
    """The marker is written after the stampede lease is released: a request that waited
    for the first response goes to the app as soon as that response proves unshareable."""
    backend = Spy(cache)
    release = backend.hold("add")
    origin = Origin(Reply(headers=[NO_STORE], delay=0.1))
    middleware = CacheMiddleware(origin, cache=backend)
    first = Call(middleware, "/a")
    await origin.wait_calls("/a", 1)
    waiter = Call(middleware, "/a")  # joins the first request's flight
    await asyncio.wait_for(waiter.answered.wait(), 5)
    assert origin.calls["/a"] == 2 and not first.task.done()  # its marker write is held
    release.set()
    await asyncio.wait_for(asyncio.gather(first.task, waiter.task), 5)


async def test_one_request_writes_the_marker(cache: AsyncCache) -> None:
    """The requests that waited for the first response go to the app themselves; they do
    not write the marker again (under load each write lengthens the writer's batches)."""
    backend = Spy(cache)
    origin = Origin(Reply(headers=[NO_STORE], delay=0.05))
    _, http = cached(origin, backend)
    async with http:
        replies = await asyncio.gather(*(http.get("/a") for _ in range(10)))
    assert all(reply.status_code == 200 for reply in replies) and origin.calls["/a"] == 10
    assert backend.calls["add"] == 1
    assert str(await cache.get(KEY)).startswith("pass: ")


async def test_pass_ttl_0_remembers_no_url(cache: AsyncCache) -> None:
    backend = Spy(cache)
    _, http = uncacheable(backend, pass_ttl=0)
    async with http:
        for _ in range(3):
            await http.get("/a")
    assert await cache.get(KEY) is None
    assert backend.calls["acquire_lease"] == 3  # each request a miss like any other
