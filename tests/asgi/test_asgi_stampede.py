"""Concurrent identical misses reach the app once; what may not be shared never is."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import httpx
import pytest

from shardcache import AsyncCache
from shardcache.asgi import CacheMiddleware

from .origin import Origin, Reply, cached

pytestmark = pytest.mark.asyncio

PUBLIC = "Cache-Control: public, max-age=60"


async def test_50_concurrent_identical_misses_reach_the_app_once(cache: AsyncCache) -> None:
    origin = Origin(Reply(headers=[PUBLIC], chunks=[b"computed ", b"once"], delay=0.1))
    _, http = cached(origin, cache)
    async with http:
        replies = await asyncio.gather(*(http.get("/slow") for _ in range(50)))
    assert origin.calls["/slow"] == 1
    assert {reply.content for reply in replies} == {b"computed once"}
    assert sorted(reply.headers["x-cache"] for reply in replies) == ["HIT"] * 49 + ["MISS"]
    assert (await cache.stats()).stampede_waits >= 49


async def test_a_response_that_may_not_be_stored_is_never_handed_to_waiters(
    cache: AsyncCache,
) -> None:
    """API.md §3: each waiter goes to the app itself and gets its own response."""
    serial = itertools.count()

    def page(scope: dict[str, Any]) -> Reply:
        n = next(serial)
        return Reply(
            headers=["Cache-Control: max-age=60", f"Set-Cookie: session={n}"],
            chunks=[f"user {n}".encode()],
            delay=0.05,
        )

    origin = Origin()
    origin.route("/login", page)
    _, http = cached(origin, cache)
    async with http:
        replies = await asyncio.gather(*(http.get("/login") for _ in range(20)))
    assert origin.calls["/login"] == 20
    cookies = [reply.headers["set-cookie"] for reply in replies]
    assert len(set(cookies)) == 20
    for reply in replies:  # each client got the page that goes with its own cookie
        assert reply.content == b"user " + reply.headers["set-cookie"].split("=")[1].encode()


async def test_hit_for_pass_keeps_uncacheable_requests_from_queueing(cache: AsyncCache) -> None:
    """After a response that may not be stored, the URL is remembered as "pass": requests
    go to the app side by side instead of waiting for one another."""
    origin = Origin(Reply(headers=["Cache-Control: no-store"], delay=0.2))
    _, http = cached(origin, cache, pass_ttl=30)
    async with http:
        await http.get("/live")
        marker = await cache.get("GET http://testserver/live")
        assert isinstance(marker, str) and marker.startswith("pass: ")
        origin.most_inside = 0
        started = time.monotonic()
        await asyncio.gather(*(http.get("/live") for _ in range(20)))
        elapsed = time.monotonic() - started
    assert origin.most_inside == 20 and elapsed < 1.0
    assert origin.calls["/live"] == 21


async def test_hit_for_pass_still_stores_a_response_that_became_storable(
    cache: AsyncCache,
) -> None:
    """Varnish's hit-for-miss: a marker never keeps a storable response out."""
    origin = Origin(Reply(headers=["Cache-Control: no-store"]))
    _, http = cached(origin, cache, pass_ttl=300)
    async with http:
        await http.get("/a")
        origin.route("/a", Reply(headers=[PUBLIC]))
        await http.get("/a")
        assert (await http.get("/a")).headers["x-cache"] == "HIT"


async def test_a_pass_marker_never_replaces_a_stored_response(cache: AsyncCache) -> None:
    """A request that gets an uncacheable answer (here: with Authorization) cannot evict
    the entry other clients are served."""
    origin = Origin(Reply(headers=[PUBLIC]))
    _, http = cached(origin, cache)
    async with http:
        await http.get("/a")
        origin.route("/a", Reply(headers=["Cache-Control: no-store"]))
        await http.get("/a", headers={"cache-control": "no-cache"})
        origin.route("/a", Reply(headers=[PUBLIC]))
        assert (await http.get("/a")).headers["x-cache"] == "HIT"


async def test_a_failed_leader_hands_over_to_a_waiter(cache: AsyncCache) -> None:
    attempts = itertools.count()

    def page(scope: dict[str, Any]) -> Reply:
        if next(attempts) == 0:
            return Reply(delay=0.05, error=RuntimeError("boom"))
        return Reply(headers=[PUBLIC], chunks=[b"ok"], delay=0.05)

    origin = Origin()
    origin.route("/a", page)
    middleware = CacheMiddleware(origin, cache=cache)
    transport = httpx.ASGITransport(app=middleware, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        replies = await asyncio.gather(*(http.get("/a") for _ in range(10)))
    assert sorted(reply.status_code for reply in replies) == [200] * 9 + [500]
    assert origin.calls["/a"] == 2


async def test_a_cancelled_leader_hands_over_to_a_waiter(cache: AsyncCache) -> None:
    """A client that disconnects while its request computes does not strand the others."""
    origin = Origin(Reply(headers=[PUBLIC], chunks=[b"ok"], delay=0.2))
    middleware = CacheMiddleware(origin, cache=cache)

    async def call() -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http", "method": "GET", "scheme": "http", "path": "/a",
            "raw_path": b"/a", "query_string": b"", "headers": [(b"host", b"testserver")],
        }  # fmt: skip
        await middleware(scope, receive, send)
        return sent

    leader = asyncio.ensure_future(call())
    await origin.wait_calls("/a", 1)
    waiters = [asyncio.ensure_future(call()) for _ in range(5)]
    await asyncio.sleep(0.05)
    leader.cancel()
    results = await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert all(sent[-1]["body"] == b"ok" for sent in results)
    assert origin.calls["/a"] == 2


async def test_no_waiter_waits_past_lock_timeout(cache: AsyncCache) -> None:
    origin = Origin(Reply(headers=[PUBLIC], delay=1.0))
    _, http = cached(origin, cache, lock_timeout=0.2)
    async with http:
        leader = asyncio.ensure_future(http.get("/a"))
        await origin.wait_calls("/a", 1)
        started = time.monotonic()
        waiter = await http.get("/a")
        waited = time.monotonic() - started
        await leader
    assert waiter.status_code == 200 and origin.calls["/a"] == 2
    assert 0.15 < waited < 1.9


async def test_concurrent_requests_for_different_variants_each_get_their_own(
    cache: AsyncCache,
) -> None:
    def page(scope: dict[str, Any]) -> Reply:
        language = dict(scope["headers"]).get(b"accept-language", b"-")
        return Reply(headers=[PUBLIC, "Vary: Accept-Language"], chunks=[language], delay=0.05)

    origin = Origin()
    origin.route("/a", page)
    _, http = cached(origin, cache)
    languages = ["en", "fr", "de"] * 6
    async with http:
        replies = await asyncio.gather(
            *(http.get("/a", headers={"accept-language": lang}) for lang in languages)
        )
        assert [reply.content.decode() for reply in replies] == languages
        again = await asyncio.gather(
            *(http.get("/a", headers={"accept-language": lang}) for lang in languages)
        )
    assert [reply.content.decode() for reply in again] == languages
    assert {reply.headers["x-cache"] for reply in again} == {"HIT"}
    # A cold URL: the requests for the leader's variant shared its response, and those
    # for each other variant coalesced again, on their own variant, once its Vary was known.
    assert origin.calls["/a"] == 3


async def test_credentialed_requests_never_get_another_users_response(
    cache: AsyncCache,
) -> None:
    """Anonymous and authorized requests at once, to a page the app does not mark public:
    the anonymous ones share one response, each authorized one gets its own."""

    def page(scope: dict[str, Any]) -> Reply:
        who = dict(scope["headers"]).get(b"authorization", b"anonymous")
        return Reply(chunks=[who], delay=0.05)

    origin = Origin()
    origin.route("/a", page)
    _, http = cached(origin, cache, ttl=60)
    users = [None, "alice", None, "bob", None, "carol"] * 3
    async with http:
        replies = await asyncio.gather(
            *(http.get("/a", headers={"authorization": u} if u else {}) for u in users)
        )
    assert [reply.content.decode() for reply in replies] == [u or "anonymous" for u in users]


async def test_a_leader_whose_client_hangs_up_mid_stream_hands_over_to_one_waiter(
    cache: AsyncCache,
) -> None:
    """The app stops a stream when its client disconnects (Starlette's StreamingResponse
    does): that says nothing about the URL, so ONE waiting request takes over, instead of
    every waiter calling the app."""
    calls = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        headers = [(b"cache-control", b"public, max-age=60")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        try:
            message = await asyncio.wait_for(receive(), 0.5)
        except asyncio.TimeoutError:
            message = {}
        if message.get("type") == "http.disconnect":
            return  # the client is gone: the stream ends here
        await send({"type": "http.response.body", "body": b"b"})

    middleware = CacheMiddleware(app, cache=cache)

    async def request(hang_up: bool) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if hang_up:
                await asyncio.sleep(0.2)
                return {"type": "http.disconnect"}
            await asyncio.Event().wait()  # a client that stays
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": "/stream",
            "raw_path": b"/stream",
            "query_string": b"",
            "headers": [(b"host", b"testserver")],
            "scheme": "http",
            "server": ("testserver", 80),
        }
        await asyncio.wait_for(middleware(scope, receive, send), 10)
        return sent

    def body(sent: list[dict[str, Any]]) -> bytes:
        return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")

    leader = asyncio.create_task(request(hang_up=True))
    while calls == 0:
        await asyncio.sleep(0.01)
    waiters = [asyncio.create_task(request(hang_up=False)) for _ in range(5)]
    assert body(await leader) == b"a"  # what the app sent before its client left
    answers = await asyncio.gather(*waiters)
    assert [body(sent) for sent in answers] == [b"ab"] * 5
    assert calls == 2  # the leader's, and the one waiter that took over
    assert body(await request(hang_up=False)) == b"ab" and calls == 2  # stored: a hit
