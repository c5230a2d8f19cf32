"""HEAD through CachedSession: the GET entry first, else a HEAD entry of its own (API.md §4).

A HEAD response is stored under GET's rules (RFC 9111 §3 allows caching it) at the key
``"HEAD <url>"``, never at the GET key: it has no body, so it must never answer a GET.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from aiohttp_origin import Clock, Origin, counting, fetch

from shardcache import AsyncCache
from shardcache._http import StoredResponse, primary_key_url
from shardcache.aiohttp import CachedSession

MakeSession = Callable[..., CachedSession]


def methods(origin: Origin, path: str) -> list[str]:
    return [method for method, _ in origin.requests[path]]


async def test_repeat_head_is_a_hit(
    origin: Origin, make_session: MakeSession, cache: AsyncCache
) -> None:
    counting(origin, "/h", **{"X-Kind": "page", "Cache-Control": "max-age=60"})
    session = make_session()
    async with session.head(origin.url("/h")) as resp:
        assert (resp.status, resp.from_cache, await resp.read()) == (200, False, b"")
    async with session.head(origin.url("/h")) as resp:
        assert (resp.status, resp.from_cache, await resp.read()) == (200, True, b"")
        assert resp.headers["X-Kind"] == "page"
        assert resp.headers["Cache-Control"] == "max-age=60"
        assert resp.headers["Content-Length"] == "2"  # the GET body's length, as sent
        assert "Age" in resp.headers
    assert origin.hits["/h"] == 1
    # Stored at a key of its own; nothing at the GET key.
    get_key = primary_key_url("GET", origin.url("/h"))
    assert await cache.get(get_key, None) is None
    stored = await cache.get("HEAD " + get_key.removeprefix("GET "), None, type=StoredResponse)
    assert isinstance(stored, StoredResponse)
    assert (stored.status, stored.body) == (200, b"")


async def test_a_head_entry_never_answers_a_get(origin: Origin, make_session: MakeSession) -> None:
    counting(origin, "/page")
    session = make_session()
    assert await fetch(session, origin.url("/page"), "HEAD") == (200, b"", False)
    assert await fetch(session, origin.url("/page")) == (200, b"v2", False)
    assert await fetch(session, origin.url("/page")) == (200, b"v2", True)
    assert methods(origin, "/page") == ["HEAD", "GET"]


async def test_head_after_get_is_answered_from_the_get_entry(
    origin: Origin, make_session: MakeSession
) -> None:
    counting(origin, "/g", **{"X-Kind": "page"})
    session = make_session()
    await fetch(session, origin.url("/g"))
    async with session.head(origin.url("/g")) as resp:
        assert (resp.from_cache, await resp.read()) == (True, b"")
        assert (resp.headers["X-Kind"], resp.headers["Content-Length"]) == ("page", "2")
    assert methods(origin, "/g") == ["GET"]


async def test_a_later_get_is_preferred_over_the_head_entry(
    origin: Origin, make_session: MakeSession, clock: Clock
) -> None:
    @origin.route("/v")
    async def handler(request: web.Request) -> web.Response:
        # The HEAD response stays fresh longer than the GET response that follows it.
        age = 600 if request.method == "HEAD" else 60
        headers = {"X-Hit": str(origin.hits["/v"]), "Cache-Control": f"max-age={age}"}
        return web.Response(text="body", headers=headers)

    session = make_session()
    await fetch(session, origin.url("/v"), "HEAD")
    await fetch(session, origin.url("/v"))
    async with session.head(origin.url("/v")) as resp:
        assert (resp.from_cache, resp.headers["X-Hit"]) == (True, "2")
    # The GET entry is stale; the HEAD entry is fresh but older than it: superseded.
    clock.advance(61)
    async with session.head(origin.url("/v")) as resp:
        assert (resp.from_cache, resp.headers["X-Hit"]) == (False, "3")
    async with session.head(origin.url("/v")) as resp:
        assert (resp.from_cache, resp.headers["X-Hit"]) == (True, "3")
    assert methods(origin, "/v") == ["HEAD", "GET", "HEAD"]


async def test_unstorable_head_responses_are_not_stored(
    origin: Origin, make_session: MakeSession
) -> None:
    counting(origin, "/ns", **{"Cache-Control": "no-store"})
    counting(origin, "/cookie", **{"Set-Cookie": "id=1"})
    counting(origin, "/mine", **{"Cache-Control": "private, max-age=60"})
    session = make_session(ttl=3600)
    for path in ("/ns", "/cookie"):
        assert await fetch(session, origin.url(path), "HEAD") == (200, b"", False)
        assert await fetch(session, origin.url(path), "HEAD") == (200, b"", False)
        assert origin.hits[path] == 2
    # The session is a private cache: a private response is stored, as for GET.
    await fetch(session, origin.url("/mine"), "HEAD")
    assert await fetch(session, origin.url("/mine"), "HEAD") == (200, b"", True)
    # The request's own no-store (RFC 9111 §5.2.1.5) applies too.
    counting(origin, "/req")
    no_store = {"Cache-Control": "no-store"}
    await fetch(session, origin.url("/req"), "HEAD", headers=no_store)
    assert (await fetch(session, origin.url("/req"), "HEAD"))[2] is False


async def test_post_drops_the_head_entry(origin: Origin, make_session: MakeSession) -> None:
    counting(origin, "/item")
    session = make_session()
    await fetch(session, origin.url("/item?b=1&a=2"), "HEAD")
    assert (await fetch(session, origin.url("/item?a=2&b=1"), "HEAD"))[2] is True
    await fetch(session, origin.url("/item?a=2&b=1"), "POST", data=b"x")
    assert (await fetch(session, origin.url("/item?b=1&a=2"), "HEAD"))[2] is False
    assert methods(origin, "/item") == ["HEAD", "POST", "HEAD"]


async def test_head_entry_expires_with_its_ttl(
    origin: Origin, make_session: MakeSession, clock: Clock
) -> None:
    counting(origin, "/t")
    session = make_session(ttl=60)
    await fetch(session, origin.url("/t"), "HEAD")
    clock.advance(59)
    assert (await fetch(session, origin.url("/t"), "HEAD"))[2] is True
    clock.advance(2)  # no validator: fetched again, and stored again
    assert (await fetch(session, origin.url("/t"), "HEAD"))[2] is False
    assert (await fetch(session, origin.url("/t"), "HEAD"))[2] is True
    assert origin.hits["/t"] == 2


async def test_a_stale_head_entry_is_revalidated_with_its_validators(
    origin: Origin, make_session: MakeSession, clock: Clock
) -> None:
    @origin.route("/e")
    async def handler(request: web.Request) -> web.Response:
        headers = {"ETag": '"v1"', "Cache-Control": "max-age=60"}
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers=headers)
        return web.Response(text="payload", headers=headers)

    session = make_session()
    await fetch(session, origin.url("/e"), "HEAD")
    clock.advance(61)
    async with session.head(origin.url("/e")) as resp:
        assert (resp.status, resp.from_cache, await resp.read()) == (200, True, b"")
        assert resp.headers["ETag"] == '"v1"'
    assert origin.headers("/e", 1)["If-None-Match"] == '"v1"'
    clock.advance(30)  # the 304 freshened the HEAD entry
    assert await fetch(session, origin.url("/e"), "HEAD") == (200, b"", True)
    assert methods(origin, "/e") == ["HEAD", "HEAD"]
    # Still no GET entry: a GET goes to the origin for the body.
    assert await fetch(session, origin.url("/e")) == (200, b"payload", False)


async def test_head_entries_follow_vary(origin: Origin, make_session: MakeSession) -> None:
    counting(origin, "/vary", Vary="Accept")
    session = make_session()
    await fetch(session, origin.url("/vary"), "HEAD", headers={"Accept": "a/b"})
    assert (await fetch(session, origin.url("/vary"), "HEAD", headers={"Accept": "a/b"}))[2]
    assert not (await fetch(session, origin.url("/vary"), "HEAD", headers={"Accept": "c/d"}))[2]
    assert origin.hits["/vary"] == 2


async def test_methods_get_only_does_not_store_heads(
    origin: Origin, make_session: MakeSession
) -> None:
    counting(origin, "/m")
    session = make_session(methods=["GET"])
    await fetch(session, origin.url("/m"), "HEAD")
    assert (await fetch(session, origin.url("/m"), "HEAD"))[2] is False
    assert origin.hits["/m"] == 2


async def test_head_redirects_store_the_final_head_response_under_both_urls(
    origin: Origin, make_session: MakeSession
) -> None:
    @origin.route("/old")
    async def old(request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/new")  # reusable; a bare 302 is not (below)

    counting(origin, "/new")
    session = make_session()
    await fetch(session, origin.url("/old"), "HEAD")
    # (session.head does not follow redirects unless told; session.request does.)
    async with session.head(origin.url("/old"), allow_redirects=True) as resp:
        assert (resp.from_cache, resp.url.path) == (True, "/new")
    assert (await fetch(session, origin.url("/new"), "HEAD"))[2] is True
    # The HEAD alias never leads a GET to the HEAD entry.
    assert await fetch(session, origin.url("/old")) == (200, b"v2", False)
    assert (methods(origin, "/old"), methods(origin, "/new")) == (["HEAD", "GET"], ["HEAD", "GET"])


async def test_stale_if_error_serves_the_stale_head_entry(
    origin: Origin, make_session: MakeSession, clock: Clock
) -> None:
    @origin.route("/flaky")
    async def handler(request: web.Request) -> web.Response:
        if origin.hits["/flaky"] > 1:
            return web.Response(status=503)
        return web.Response(text="ok", headers={"Cache-Control": "max-age=10", "X-Hit": "1"})

    session = make_session(stale_if_error=True)
    await fetch(session, origin.url("/flaky"), "HEAD")
    clock.advance(11)
    async with session.head(origin.url("/flaky")) as resp:
        assert (resp.status, resp.from_cache, resp.headers["X-Hit"]) == (200, True, "1")
    assert origin.hits["/flaky"] == 2
