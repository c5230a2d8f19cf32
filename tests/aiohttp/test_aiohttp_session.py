"""CachedSession against a real origin: hits, what is stored, keys, methods (API.md §4)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp_origin import WAIT, Clock, Origin, counting, fetch

from shardcache import AsyncCache
from shardcache._http import format_http_date, primary_key_url
from shardcache.aiohttp import CachedSession

MakeSession = Callable[..., CachedSession]


async def test_repeat_get_is_a_hit(origin: Origin, make_session: MakeSession) -> None:
    counting(origin, "/page")
    session = make_session()
    assert isinstance(session, aiohttp.ClientSession)
    assert await fetch(session, origin.url("/page")) == (200, b"v1", False)
    assert await fetch(session, origin.url("/page")) == (200, b"v1", True)
    resp = await session.get(origin.url("/page"))  # awaited rather than `async with`
    assert (resp.from_cache, await resp.text()) == (True, "v1")
    resp.release()
    assert origin.hits["/page"] == 1


async def test_query_order_does_not_matter(origin: Origin, make_session: MakeSession) -> None:
    counting(origin, "/q")
    session = make_session()
    await fetch(session, origin.url("/q?b=2&a=1"))
    assert (await fetch(session, origin.url("/q?a=1&b=2")))[2] is True
    assert (await fetch(session, origin.url("/q"), params={"a": "1", "b": "2"}))[2] is True
    assert (await fetch(session, origin.url("/q?a=1&b=3")))[2] is False
    assert origin.hits["/q"] == 2


async def test_hit_survives_a_new_session_and_cache_object(
    origin: Origin, make_session: MakeSession, make_cache: Callable[..., AsyncCache]
) -> None:
    counting(origin, "/page")
    session = make_session()
    await fetch(session, origin.url("/page"))
    await session.close()
    async with make_cache() as reopened:
        again = make_session(cache=reopened)
        assert await fetch(again, origin.url("/page")) == (200, b"v1", True)
    assert origin.hits["/page"] == 1


async def test_no_store_is_not_cached(origin: Origin, make_session: MakeSession) -> None:
    counting(origin, "/private", **{"Cache-Control": "no-store"})
    session = make_session(ttl=3600)
    assert await fetch(session, origin.url("/private")) == (200, b"v1", False)
    assert await fetch(session, origin.url("/private")) == (200, b"v2", False)


async def test_max_age_respected(origin: Origin, make_session: MakeSession, clock: Clock) -> None:
    counting(origin, "/ma", **{"Cache-Control": "max-age=60"})
    session = make_session(ttl=5)  # the server's freshness wins over ttl
    await fetch(session, origin.url("/ma"))
    clock.advance(59)
    assert await fetch(session, origin.url("/ma")) == (200, b"v1", True)
    clock.advance(2)  # no validator: a stale entry is fetched again
    assert await fetch(session, origin.url("/ma")) == (200, b"v2", False)
    assert await fetch(session, origin.url("/ma")) == (200, b"v2", True)


async def test_expires_respected(origin: Origin, make_session: MakeSession, clock: Clock) -> None:
    @origin.route("/exp")
    async def handler(request: web.Request) -> web.Response:
        moment = format_http_date(clock() + 100).decode()
        return web.Response(text=f"v{origin.hits['/exp']}", headers={"Expires": moment})

    session = make_session()
    await fetch(session, origin.url("/exp"))
    clock.advance(90)
    assert (await fetch(session, origin.url("/exp")))[2] is True
    clock.advance(20)
    assert await fetch(session, origin.url("/exp")) == (200, b"v2", False)


async def test_ttl_applies_when_the_server_gives_no_freshness(
    origin: Origin, make_session: MakeSession, clock: Clock
) -> None:
    counting(origin, "/plain")
    session = make_session(ttl=10)
    await fetch(session, origin.url("/plain"))
    clock.advance(9)
    assert (await fetch(session, origin.url("/plain")))[2] is True
    clock.advance(2)
    assert await fetch(session, origin.url("/plain")) == (200, b"v2", False)


async def test_cache_control_false_ignores_the_server(
    origin: Origin, make_session: MakeSession
) -> None:
    counting(origin, "/nostore", **{"Cache-Control": "no-store"})
    session = make_session(cache_control=False, ttl=60)
    await fetch(session, origin.url("/nostore"))
    assert await fetch(session, origin.url("/nostore")) == (200, b"v1", True)


async def test_urls_ttl_patterns(origin: Origin, make_session: MakeSession, clock: Clock) -> None:
    for path in ("/nocache/a", "/short/a", "/other"):
        counting(origin, path)
    session = make_session(
        ttl=None, urls_ttl={"127.0.0.1:*/nocache/*": 0, "127.0.0.1:*/short/*": 5}
    )
    for path in ("/nocache/a", "/short/a", "/other"):
        await fetch(session, origin.url(path))
    clock.advance(4)
    assert (await fetch(session, origin.url("/nocache/a")))[2] is False  # 0: do not cache
    assert (await fetch(session, origin.url("/short/a")))[2] is True
    clock.advance(2)
    assert (await fetch(session, origin.url("/short/a")))[2] is False
    clock.advance(10**6)
    assert (await fetch(session, origin.url("/other")))[2] is True  # ttl=None: never stale
    assert dict(origin.hits) == {"/nocache/a": 2, "/short/a": 2, "/other": 1}


async def test_ttl_zero_caches_nothing(origin: Origin, make_session: MakeSession) -> None:
    counting(origin, "/p", **{"Cache-Control": "max-age=600"})
    session = make_session(ttl=0)
    await fetch(session, origin.url("/p"))
    assert (await fetch(session, origin.url("/p")))[2] is False
    assert origin.hits["/p"] == 2


async def test_vary_keys(origin: Origin, make_session: MakeSession) -> None:
    @origin.route("/v")
    async def handler(request: web.Request) -> web.Response:
        language = request.headers.get("Accept-Language", "none")
        return web.Response(text=language, headers={"Vary": "Accept-Language"})

    session = make_session()
    url = origin.url("/v")
    assert await fetch(session, url, headers={"Accept-Language": "en"}) == (200, b"en", False)
    assert await fetch(session, url, headers={"Accept-Language": "fr"}) == (200, b"fr", False)
    assert await fetch(session, url, headers={"Accept-Language": "en"}) == (200, b"en", True)
    assert await fetch(session, url, headers={"Accept-Language": "fr"}) == (200, b"fr", True)
    assert await fetch(session, url) == (200, b"none", False)
    assert await fetch(session, url) == (200, b"none", True)
    assert origin.hits["/v"] == 3


async def test_vary_on_an_automatic_header_hits(origin: Origin, make_session: MakeSession) -> None:
    """aiohttp adds Accept-Encoding itself; the key uses the value it sends."""
    counting(origin, "/gz", Vary="Accept-Encoding")
    session = make_session()
    await fetch(session, origin.url("/gz"))
    assert (await fetch(session, origin.url("/gz")))[2] is True


@pytest.mark.parametrize(("method", "body"), [("GET", b"payload"), ("HEAD", b"")])
async def test_concurrent_requests_reach_the_origin_once(
    origin: Origin, make_session: MakeSession, method: str, body: bytes
) -> None:
    @origin.route("/slow")
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)  # a slow origin: every unprotected request would get here
        return web.Response(text="payload")

    session = make_session()
    results = await asyncio.gather(
        *(fetch(session, origin.url("/slow"), method) for _ in range(50))
    )
    assert origin.hits["/slow"] == 1
    assert {got for _, got, _ in results} == {body}
    assert sorted(from_cache for *_, from_cache in results) == [False] + [True] * 49


async def test_a_waiter_reports_the_url_it_asked_for(
    origin: Origin, make_session: MakeSession
) -> None:
    """Served the leader's response, a waiter's ``url`` keeps its own query order and
    its ``real_url`` its fragment, as aiohttp reports them."""

    @origin.route("/slow")
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return web.Response(text="payload")

    session = make_session()

    async def get(url: str) -> tuple[str, str, bool]:
        async with session.get(url) as resp:
            return str(resp.url), str(resp.real_url), resp.from_cache

    leader = origin.url("/slow?a=1&b=2")
    waiters = [origin.url("/slow?b=2&a=1"), origin.url("/slow?a=1&b=2#part")]
    first = asyncio.ensure_future(get(leader))
    await origin.wait_hits("/slow", 1)
    got = await asyncio.gather(*(get(url) for url in waiters))
    assert (await first)[:2] == (leader, leader)
    assert got[0] == (waiters[0], waiters[0], True)
    assert got[1] == (leader, waiters[1], True)  # url drops the fragment; real_url keeps it
    assert origin.hits["/slow"] == 1


async def test_vary_on_a_field_a_client_middleware_adds_still_hits(
    origin: Origin, make_session: MakeSession
) -> None:
    """The entry is keyed with the fields the lookup sees (a hit never runs aiohttp's
    client middlewares), not with what a middleware added on the way out."""

    async def german(
        request: aiohttp.ClientRequest, handler: Callable[..., Any]
    ) -> aiohttp.ClientResponse:
        request.headers["Accept-Language"] = "de"
        return await handler(request)  # type: ignore[no-any-return]

    counting(origin, "/page", **{"Cache-Control": "max-age=60", "Vary": "Accept-Language"})
    session = make_session(middlewares=(german,))
    first = await fetch(session, origin.url("/page"))
    second = await fetch(session, origin.url("/page"))
    assert first == (200, b"v1", False) and second == (200, b"v1", True)
    assert origin.headers("/page")["Accept-Language"] == "de"


async def test_a_hit_keeps_the_origins_reason_phrase(
    origin: Origin, make_session: MakeSession
) -> None:
    @origin.route("/odd")
    async def odd(request: web.Request) -> web.Response:
        return web.Response(text="x", reason="Totally Fine")

    counting(origin, "/plain")
    session = make_session(ttl=60)
    for _ in range(2):
        async with session.get(origin.url("/odd")) as resp:
            assert resp.reason == "Totally Fine"
        async with session.get(origin.url("/plain")) as resp:
            assert resp.reason == "OK"
    assert origin.hits["/odd"] == origin.hits["/plain"] == 1


async def test_max_redirects_applies_to_a_cached_redirect_chain(
    origin: Origin, make_session: MakeSession
) -> None:
    """A redirect alias does not record how many hops it stands for: a request with its
    own max_redirects follows the chain on the network, where aiohttp counts them."""

    @origin.route("/r2")
    async def r2(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/r1")

    @origin.route("/r1")
    async def r1(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/target")

    counting(origin, "/target")
    session = make_session()
    assert (await fetch(session, origin.url("/r2")))[1] == b"v1"
    assert (await fetch(session, origin.url("/r2")))[2] is True  # the alias: a hit
    with pytest.raises(aiohttp.TooManyRedirects):
        await fetch(session, origin.url("/r2"), max_redirects=1)
    status, _, from_cache = await fetch(session, origin.url("/r2"), max_redirects=3)
    assert (status, from_cache) == (200, False)  # followed on the network, within 3
    assert origin.hits["/r2"] == 3


async def test_concurrent_gets_of_an_unstorable_response_each_go_to_the_origin(
    origin: Origin, make_session: MakeSession
) -> None:
    @origin.route("/mine")
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)
        return web.Response(text="secret", headers={"Cache-Control": "no-store"})

    session = make_session()
    results = await asyncio.gather(*(fetch(session, origin.url("/mine")) for _ in range(5)))
    assert origin.hits["/mine"] == 5
    assert {from_cache for *_, from_cache in results} == {False}


async def test_post_passes_through_and_invalidates(
    origin: Origin, make_session: MakeSession
) -> None:
    counting(origin, "/item")
    session = make_session()
    await fetch(session, origin.url("/item?b=1&a=2"))
    assert (await fetch(session, origin.url("/item?a=2&b=1")))[2] is True
    status, _, from_cache = await fetch(session, origin.url("/item?a=2&b=1"), "POST", data=b"x")
    assert (status, from_cache) == (200, False)
    assert [method for method, _ in origin.requests["/item"]] == ["GET", "POST"]
    assert await fetch(session, origin.url("/item?b=1&a=2")) == (200, b"v3", False)


async def test_failed_post_does_not_invalidate(origin: Origin, make_session: MakeSession) -> None:
    @origin.route("/it")
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=400 if request.method == "POST" else 200, text="x")

    session = make_session()
    await fetch(session, origin.url("/it"))
    await fetch(session, origin.url("/it"), "POST")
    assert (await fetch(session, origin.url("/it")))[2] is True  # RFC 9111 §4.4: 4xx


async def test_head_is_answered_from_the_get_entry(
    origin: Origin, make_session: MakeSession
) -> None:
    counting(origin, "/h")
    session = make_session()
    status, body, from_cache = await fetch(session, origin.url("/h"), "HEAD")
    assert (status, body, from_cache) == (200, b"", False)
    await fetch(session, origin.url("/h"))  # the HEAD entry never answers a GET
    async with session.head(origin.url("/h")) as resp:
        assert (resp.from_cache, await resp.read()) == (True, b"")
        assert resp.headers["Content-Length"] == "2"
    assert [method for method, _ in origin.requests["/h"]] == ["HEAD", "GET"]


async def test_methods_option(origin: Origin, make_session: MakeSession) -> None:
    counting(origin, "/m")
    session = make_session(methods=["GET"])
    await fetch(session, origin.url("/m"))
    assert (await fetch(session, origin.url("/m"), "HEAD"))[2] is False
    assert origin.hits["/m"] == 2


async def test_statuses_option(origin: Origin, make_session: MakeSession) -> None:
    @origin.route("/gone")
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=404, text="gone")

    default = make_session()
    await fetch(default, origin.url("/gone"))
    assert await fetch(default, origin.url("/gone")) == (404, b"gone", True)  # RFC 9110 §15.1
    only_ok = make_session(statuses={200})
    await fetch(only_ok, origin.url("/gone?x"))
    assert (await fetch(only_ok, origin.url("/gone?x")))[2] is False


async def test_set_cookie_is_not_stored_unless_allowed(
    origin: Origin, make_session: MakeSession
) -> None:
    counting(origin, "/login", **{"Set-Cookie": "session=abc"})
    session = make_session()
    await fetch(session, origin.url("/login"))
    assert (await fetch(session, origin.url("/login")))[2] is False
    allowing = make_session(allow_set_cookie=True)
    await fetch(allowing, origin.url("/login?a"))
    async with allowing.get(origin.url("/login?a")) as resp:
        assert resp.from_cache is True
        assert resp.cookies["session"].value == "abc"


async def test_redirects_store_the_final_response_under_both_urls(
    origin: Origin, make_session: MakeSession
) -> None:
    @origin.route("/old")
    async def old(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/new")  # reusable; a bare 302 is not (below)

    counting(origin, "/new")
    session = make_session()
    async with session.get(origin.url("/old")) as resp:
        assert (resp.from_cache, resp.url.path, len(resp.history)) == (False, "/new", 1)
    async with session.get(origin.url("/old")) as resp:
        assert (resp.from_cache, resp.url.path, await resp.text()) == (True, "/new", "v1")
    assert (await fetch(session, origin.url("/new")))[2] is True
    assert (origin.hits["/old"], origin.hits["/new"]) == (1, 1)
    # Without following redirects the alias does not apply: the origin answers the 301.
    status, _, from_cache = await fetch(session, origin.url("/old"), allow_redirects=False)
    assert (status, from_cache) == (301, False)


@pytest.mark.parametrize(
    ("status", "fields"),
    [
        (302, {}),  # no explicit freshness, and not heuristically cacheable
        (307, {"Cache-Control": "max-age=0"}),
        (301, {"Cache-Control": "no-store"}),
        (301, {"Set-Cookie": "sid=1"}),  # a login redirect: its cookie must reach the jar
    ],
    ids=["302", "307-max-age-0", "301-no-store", "301-set-cookie"],
)
async def test_a_redirect_that_may_not_be_reused_is_asked_again(
    origin: Origin, make_session: MakeSession, status: int, fields: dict[str, str]
) -> None:
    @origin.route("/hop")
    async def hop(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": "/end", **fields})

    counting(origin, "/end", **{"Cache-Control": "max-age=600"})
    session = make_session()
    for _ in range(2):
        async with session.get(origin.url("/hop")) as resp:
            assert (resp.status, resp.url.path) == (200, "/end")
    # The redirect reached the origin each time (and aiohttp, which follows redirects
    # below the cache, fetched its target again: docs/aiohttp.md).
    assert (origin.hits["/hop"], origin.hits["/end"]) == (2, 2)


async def test_a_redirect_alias_lasts_no_longer_than_the_redirect(
    origin: Origin, make_session: MakeSession
) -> None:
    @origin.route("/hop")
    async def hop(request: web.Request) -> web.Response:
        return web.Response(status=301, headers={"Location": "/end", "Cache-Control": "max-age=1"})

    counting(origin, "/end", **{"Cache-Control": "max-age=600"})
    session = make_session()
    await fetch(session, origin.url("/hop"))
    assert (await fetch(session, origin.url("/hop")))[2] is True
    await asyncio.sleep(1.2)  # the alias is a cache entry: it expires by the cache's clock
    assert (await fetch(session, origin.url("/hop")))[2] is False  # asked again
    assert (origin.hits["/hop"], origin.hits["/end"]) == (2, 2)


async def test_a_closed_session_raises_even_for_a_cached_url(
    origin: Origin, make_session: MakeSession
) -> None:
    counting(origin, "/x", **{"Cache-Control": "max-age=600"})
    session = make_session()
    await fetch(session, origin.url("/x"))
    await session.close()
    with pytest.raises(RuntimeError, match="Session is closed"):
        await session.get(origin.url("/x"))


async def test_a_request_body_bypasses_the_cache(origin: Origin, make_session: MakeSession) -> None:
    counting(origin, "/search")
    session = make_session()
    for data in (b"q=1", "q=1", {"q": "1"}):
        assert (await fetch(session, origin.url("/search"), data=data))[2] is False
    assert (await fetch(session, origin.url("/search"), json={"q": 1}))[2] is False
    assert origin.hits["/search"] == 4


async def test_a_foreign_value_at_the_key_is_a_miss(
    origin: Origin, make_session: MakeSession, cache: AsyncCache
) -> None:
    """A value that is not a stored response (its body not bytes) reads as a miss."""
    counting(origin, "/x")
    key = primary_key_url("GET", origin.url("/x"))
    await cache.set(key, {"status": 200, "headers": [], "body": "not bytes"})
    session = make_session()
    assert await fetch(session, origin.url("/x")) == (200, b"v1", False)
    assert await fetch(session, origin.url("/x")) == (200, b"v1", True)


async def test_a_closed_cache_passes_through_with_one_warning(
    origin: Origin, make_session: MakeSession, cache: AsyncCache, caplog: pytest.LogCaptureFixture
) -> None:
    counting(origin, "/c")
    session = make_session()
    await cache.aclose()
    with caplog.at_level(logging.WARNING, logger="shardcache"):
        for expected in (b"v1", b"v2", b"v3"):
            assert await fetch(session, origin.url("/c")) == (200, expected, False)
        await fetch(session, origin.url("/c"), "POST")
    warnings = [r for r in caplog.records if r.name.startswith("shardcache")]
    assert len(warnings) == 1
    assert "CacheClosedError" in warnings[0].getMessage()


class _FailingBackend:
    """A third-party backend whose every call fails with its own (non-shardcache) error."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        async def fail(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return fail


@pytest.mark.parametrize(
    "error",
    [OSError(28, "No space left on device"), ConnectionError("redis down"), RuntimeError("bug")],
    ids=["oserror", "connection", "runtime"],
)
async def test_any_backend_failure_passes_through(
    origin: Origin, make_session: MakeSession, error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    counting(origin, "/f")
    session = make_session(cache=_FailingBackend(error))
    with caplog.at_level(logging.WARNING, logger="shardcache"):
        assert await fetch(session, origin.url("/f")) == (200, b"v1", False)
        assert await fetch(session, origin.url("/f")) == (200, b"v2", False)
        await fetch(session, origin.url("/f"), "POST")  # the invalidation fails open too
    assert origin.hits["/f"] == 3
    assert any(type(error).__name__ in r.getMessage() for r in caplog.records)


class _LockedWrites:
    """A real cache whose writes hang, as when another process holds the shards locked;
    every operation asked for is recorded."""

    def __init__(self, inner: AsyncCache) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name in ("set", "add", "delete", "evict"):
                await asyncio.Event().wait()
            return await getattr(self.inner, name)(*args, **kwargs)

        return call


async def test_a_locked_cache_holds_no_response_and_is_skipped_for_a_moment(
    origin: Origin, make_session: MakeSession, cache: AsyncCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store of a fetched response waits at most lock_timeout (or the request's own
    timeout); the requests after a failure go straight to the network for a moment."""
    monkeypatch.setattr("shardcache._breaker.COOL_OFF", 60.0)
    counting(origin, "/l", **{"Cache-Control": "max-age=60"})
    backend = _LockedWrites(cache)
    session = make_session(cache=backend, lock_timeout=0.2)
    assert await asyncio.wait_for(fetch(session, origin.url("/l")), 5) == (200, b"v1", False)
    assert "set" in backend.calls
    backend.calls.clear()
    for expected in (b"v2", b"v3"):
        got = await asyncio.wait_for(fetch(session, origin.url("/l")), 5)
        assert got == (200, expected, False)
    await asyncio.wait_for(fetch(session, origin.url("/l"), "POST"), 5)
    assert backend.calls == []  # no read, no lease, no store, no invalidation


async def test_the_first_fetch_can_be_read_as_a_stream(
    origin: Origin, make_session: MakeSession
) -> None:
    payload = bytes(range(256)) * 50

    @origin.route("/stream")
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=payload, headers={"Cache-Control": "max-age=60"})

    session = make_session()
    for from_cache in (False, True):  # stored on the way (read for storing), then a hit
        async with session.get(origin.url("/stream")) as resp:
            assert resp.from_cache is from_cache
            chunks = [chunk async for chunk in resp.content.iter_chunked(1000)]
            assert b"".join(chunks) == payload
            assert await resp.read() == payload
    assert origin.hits["/stream"] == 1


async def test_only_if_cached_miss_is_504(origin: Origin, make_session: MakeSession) -> None:
    counting(origin, "/oic")
    session = make_session()
    headers = {"Cache-Control": "only-if-cached"}
    assert await fetch(session, origin.url("/oic"), headers=headers) == (504, b"", True)
    assert origin.hits["/oic"] == 0
    await fetch(session, origin.url("/oic"))
    assert await fetch(session, origin.url("/oic"), headers=headers) == (200, b"v1", True)


async def test_request_no_cache_goes_to_the_origin_and_refreshes(
    origin: Origin, make_session: MakeSession
) -> None:
    counting(origin, "/nc")
    session = make_session()
    await fetch(session, origin.url("/nc"))
    no_cache = {"Cache-Control": "no-cache"}
    assert await fetch(session, origin.url("/nc"), headers=no_cache) == (200, b"v2", False)
    assert await fetch(session, origin.url("/nc")) == (200, b"v2", True)


async def test_client_validators_are_answered_from_the_cache(
    origin: Origin, make_session: MakeSession
) -> None:
    counting(origin, "/tag", ETag='"abc"')
    session = make_session()
    await fetch(session, origin.url("/tag"))
    matching = {"If-None-Match": '"abc"'}
    assert await fetch(session, origin.url("/tag"), headers=matching) == (304, b"", True)
    other = {"If-None-Match": '"zzz"'}
    assert await fetch(session, origin.url("/tag"), headers=other) == (200, b"v1", True)
    # On a miss the origin is asked without the client's validators, so that the full
    # response can be stored; the client still gets its 304.
    assert await fetch(session, origin.url("/tag?new"), headers=matching) == (304, b"", True)
    assert "If-None-Match" not in origin.headers("/tag")
    assert (await fetch(session, origin.url("/tag?new")))[2] is True


async def test_raise_for_status_applies_to_cached_responses(
    origin: Origin, make_session: MakeSession
) -> None:
    @origin.route("/missing")
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=404, text="nope")

    session = make_session()
    await fetch(session, origin.url("/missing"))
    with pytest.raises(aiohttp.ClientResponseError) as caught:
        await fetch(session, origin.url("/missing"), raise_for_status=True)
    assert caught.value.status == 404
    assert origin.hits["/missing"] == 1


async def test_a_waiter_waits_no_longer_than_its_own_timeout(
    origin: Origin, make_session: MakeSession
) -> None:
    release = asyncio.Event()

    @origin.route("/hang")
    async def handler(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), WAIT)
        return web.Response(text="late")

    session = make_session(lock_timeout=60)
    first = asyncio.ensure_future(fetch(session, origin.url("/hang")))
    await origin.wait_hits("/hang", 1)
    quick = aiohttp.ClientTimeout(total=0.2)
    # aiohttp's total bounds the whole request: spent waiting, it times out as a plain
    # session's request to this origin would, instead of starting a fetch of its own.
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(fetch(session, origin.url("/hang"), timeout=quick), WAIT)
    release.set()
    assert await first == (200, b"late", False)
    assert origin.hits["/hang"] == 1


async def test_websockets_pass_through(origin: Origin, make_session: MakeSession) -> None:
    @origin.route("/ws")
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("hi")
        await ws.close()
        return ws

    session = make_session()
    for _ in range(2):
        async with session.ws_connect(origin.url("/ws")) as ws:
            assert await ws.receive_str() == "hi"
    assert origin.hits["/ws"] == 2


async def test_a_waiter_with_another_vary_variant_fetches_its_own(
    origin: Origin, make_session: MakeSession
) -> None:
    @origin.route("/lang")
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(0.1)
        language = request.headers.get("Accept-Language", "none")
        return web.Response(text=language, headers={"Vary": "Accept-Language"})

    session = make_session()
    url = origin.url("/lang")
    results = await asyncio.gather(
        fetch(session, url, headers={"Accept-Language": "en"}),
        fetch(session, url, headers={"Accept-Language": "fr"}),
        fetch(session, url, headers={"Accept-Language": "en"}),
    )
    assert [body for _, body, _ in results] == [b"en", b"fr", b"en"]
    assert origin.hits["/lang"] == 2


@pytest.mark.asyncio(loop_factories=["asyncio"])  # waits on another process: once is enough
async def test_a_cache_still_opening_holds_a_request_no_longer_than_lock_timeout(
    origin: Origin, make_session: MakeSession, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shards another process is creating hold the open up (up to 30 s): a request waits
    lock_timeout for it, then goes to the network; once the open completes, it caches."""
    from _helpers import locked, unmade_shards

    monkeypatch.setattr("shardcache._breaker.COOL_OFF", 0.05)
    counting(origin, "/o", **{"Cache-Control": "max-age=60"})
    files = unmade_shards(tmp_path / "cache", 2)
    cache = AsyncCache(tmp_path / "cache", shards=2)
    session = make_session(cache=cache, lock_timeout=0.3)
    try:
        with locked(*files):
            got = await asyncio.wait_for(fetch(session, origin.url("/o")), 8)
        assert got == (200, b"v1", False)
        await asyncio.sleep(0.1)  # past the cool-off
        assert await asyncio.wait_for(fetch(session, origin.url("/o")), 8) == (200, b"v2", False)
        assert await asyncio.wait_for(fetch(session, origin.url("/o")), 8) == (200, b"v2", True)
    finally:
        await session.close()
        await asyncio.wait_for(cache.aclose(), 8)


async def test_a_redirect_stored_unfollowed_is_followed_by_requests_that_follow(
    origin: Origin, make_session: MakeSession
) -> None:
    """A 301 stored for an ``allow_redirects=False`` request is its answer only: requests
    that follow redirects (aiohttp's default) get the final response, in either order."""

    @origin.route("/moved")
    async def moved(request: web.Request) -> web.Response:
        return web.Response(status=301, headers={"Location": "/here"})

    counting(origin, "/here", **{"Cache-Control": "max-age=600"})
    session = make_session()
    for _ in range(2):
        async with session.get(origin.url("/moved"), allow_redirects=False) as resp:
            assert resp.status == 301 and resp.headers["Location"] == "/here"
        async with session.get(origin.url("/moved")) as resp:
            assert resp.status == 200 and (await resp.read()).startswith(b"v")
            assert str(resp.url).endswith("/here")
        async with session.get(origin.url("/moved")) as resp:  # now through the alias
            assert (resp.status, resp.from_cache) == (200, True)
            assert str(resp.url).endswith("/here")


async def test_raise_for_status_raises_on_a_stored_404_fetched_once(
    origin: Origin, make_session: MakeSession
) -> None:
    """``raise_for_status`` applies to what the caller gets; the 404 is stored first (it
    raised inside aiohttp before, so it was never stored and every caller fetched it)."""

    @origin.route("/gone")
    async def gone(request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)
        return web.Response(status=404, text="nope", headers={"Cache-Control": "max-age=600"})

    session = make_session(raise_for_status=True)
    results = await asyncio.wait_for(
        asyncio.gather(
            *(session.get(origin.url("/gone")) for _ in range(5)), return_exceptions=True
        ),
        WAIT,
    )
    with pytest.raises(aiohttp.ClientResponseError) as raised:
        await session.get(origin.url("/gone"))
    assert raised.value.status == 404
    assert all(isinstance(r, aiohttp.ClientResponseError) and r.status == 404 for r in results)
    assert origin.hits["/gone"] == 1
    async with session.get(origin.url("/gone"), raise_for_status=False) as resp:
        assert (resp.status, resp.from_cache, await resp.text()) == (404, True, "nope")


@pytest.mark.asyncio(loop_factories=["asyncio"])  # waits on another process: once is enough
async def test_a_locked_cache_costs_one_request_one_bound_not_two(
    origin: Origin, make_session: MakeSession, cache: AsyncCache, cache_dir: Any
) -> None:
    """The lease waits lock_timeout and fails; the store after the fetch used to wait as
    long again. The failed lease now skips the cache, that request's store included."""
    from _helpers import locked

    counting(origin, "/locked", **{"Cache-Control": "max-age=60"})
    await cache.set("made", 1)  # the shards exist; another process locks them all
    files = [str(path) for path in sorted(cache_dir.glob("shard-*.db"))]
    session = make_session(lock_timeout=1.5)
    with locked(*files):
        # One bound (1.5 s) and some slack; two bounds would be 3 s.
        got = await asyncio.wait_for(fetch(session, origin.url("/locked")), 2.6)
    assert got == (200, b"v1", False)
