"""Stale entries: conditional requests, 304s, stale-if-error, stale-while-revalidate.

``ttl`` is a freshness lifetime, not a deletion time (API.md §4): a stale entry with a
validator stays, and the next request revalidates it (RFC 9111 §4.3).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp_origin import WAIT, Clock, Origin, counting, fetch

from shardcache._http import format_http_date
from shardcache.aiohttp import CachedSession

MakeSession = Callable[..., CachedSession]


def etag_route(origin: Origin, path: str, body: str = "payload", etag: str = '"v1"') -> None:
    """A resource with an ETag, fresh for 60 s, that answers a matching If-None-Match
    with 304 (and counts both kinds of hits on ``path``)."""

    @origin.route(path)
    async def handler(request: web.Request) -> web.Response:
        headers = {"ETag": etag, "Cache-Control": "max-age=60"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(text=body, headers=headers)


async def test_stale_etag_entry_one_conditional_request_keeps_the_body(
    origin: Origin, make_session: MakeSession, clock: Clock
) -> None:
    etag_route(origin, "/e")
    session = make_session()
    assert await fetch(session, origin.url("/e")) == (200, b"payload", False)
    clock.advance(61)
    results = await asyncio.gather(*(fetch(session, origin.url("/e")) for _ in range(10)))
    assert set(results) == {(200, b"payload", True)}
    assert origin.hits["/e"] == 2  # exactly one conditional request for the ten
    assert origin.headers("/e", 1)["If-None-Match"] == '"v1"'
    assert "If-None-Match" not in origin.headers("/e", 0)
    # The 304 refreshed the entry: fresh again for 60 s.
    clock.advance(30)
    assert await fetch(session, origin.url("/e")) == (200, b"payload", True)
    assert origin.hits["/e"] == 2


async def test_last_modified_revalidation(
    origin: Origin, make_session: MakeSession, clock: Clock
) -> None:
    modified = format_http_date(clock() - 3600).decode()

    @origin.route("/lm")
    async def handler(request: web.Request) -> web.Response:
        if request.headers.get("If-Modified-Since") == modified:
            return web.Response(status=304)
        return web.Response(text="page", headers={"Last-Modified": modified})

    session = make_session(ttl=10)
    await fetch(session, origin.url("/lm"))
    clock.advance(11)
    assert await fetch(session, origin.url("/lm")) == (200, b"page", True)
    assert origin.headers("/lm")["If-Modified-Since"] == modified
    assert await fetch(session, origin.url("/lm")) == (200, b"page", True)
    assert origin.hits["/lm"] == 2


async def test_ttl_is_a_freshness_lifetime_not_a_deletion_time(
    origin: Origin, make_session: MakeSession, clock: Clock
) -> None:
    counting(origin, "/t", ETag='"same"')
    session = make_session(ttl=5)
    await fetch(session, origin.url("/t"))
    clock.advance(10**6)  # long past ttl: the entry is stale, not gone
    await fetch(session, origin.url("/t"))
    assert origin.headers("/t")["If-None-Match"] == '"same"'


async def test_a_changed_resource_replaces_the_entry(
    origin: Origin, make_session: MakeSession, clock: Clock
) -> None:
    etag_route(origin, "/c", body="old", etag='"v1"')
    session = make_session()
    await fetch(session, origin.url("/c"))
    etag_route(origin, "/c", body="new", etag='"v2"')
    clock.advance(61)
    assert await fetch(session, origin.url("/c")) == (200, b"new", False)
    assert await fetch(session, origin.url("/c")) == (200, b"new", True)


async def test_a_304_for_another_representation_is_fetched_again(
    origin: Origin, make_session: MakeSession, clock: Clock
) -> None:
    """RFC 9111 §4.3.4: a 304 whose validator contradicts the stored one updates nothing."""

    @origin.route("/odd")
    async def handler(request: web.Request) -> web.Response:
        if "If-None-Match" in request.headers:
            return web.Response(status=304, headers={"ETag": '"other"'})
        return web.Response(text=f"v{origin.hits['/odd']}", headers={"ETag": '"v1"'})

    session = make_session(ttl=10)
    await fetch(session, origin.url("/odd"))
    clock.advance(11)
    assert await fetch(session, origin.url("/odd")) == (200, b"v3", False)
    assert "If-None-Match" not in origin.headers("/odd")


async def test_a_304_bringing_no_store_drops_the_entry(
    origin: Origin, make_session: MakeSession, clock: Clock
) -> None:
    @origin.route("/ns")
    async def handler(request: web.Request) -> web.Response:
        if "If-None-Match" in request.headers:
            return web.Response(status=304, headers={"ETag": '"v1"', "Cache-Control": "no-store"})
        return web.Response(text="body", headers={"ETag": '"v1"'})

    session = make_session(ttl=10)
    await fetch(session, origin.url("/ns"))
    clock.advance(11)
    assert await fetch(session, origin.url("/ns")) == (200, b"body", True)
    assert await fetch(session, origin.url("/ns")) == (200, b"body", False)  # gone
    assert "If-None-Match" not in origin.headers("/ns")


@pytest.mark.parametrize("failure", [503, "connection"])
async def test_stale_if_error_serves_the_stale_entry(
    origin: Origin, make_session: MakeSession, clock: Clock, failure: int | str
) -> None:
    counting(origin, "/s", **{"Cache-Control": "max-age=10"})
    session = make_session(stale_if_error=True)
    strict = make_session()
    await fetch(session, origin.url("/s"))
    clock.advance(3600)
    if failure == "connection":
        url = origin.url("/s")
        await origin.server.close()
        assert await fetch(session, url) == (200, b"v1", True)
        with pytest.raises(aiohttp.ClientConnectionError):
            await fetch(strict, url)
        return

    @origin.route("/s")
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    assert await fetch(session, origin.url("/s")) == (200, b"v1", True)
    assert await fetch(strict, origin.url("/s")) == (503, b"down", False)
    # raise_for_status turns the 503 into an exception: still an origin failure.
    assert await fetch(session, origin.url("/s"), raise_for_status=True) == (200, b"v1", True)


async def test_stale_if_error_seconds_bound_the_staleness(
    origin: Origin, make_session: MakeSession, clock: Clock
) -> None:
    counting(origin, "/w", **{"Cache-Control": "max-age=10"})
    session = make_session(stale_if_error=30)
    await fetch(session, origin.url("/w"))

    @origin.route("/w")
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="down")

    clock.advance(10 + 29)
    assert await fetch(session, origin.url("/w")) == (200, b"v1", True)
    clock.advance(2)
    assert await fetch(session, origin.url("/w")) == (500, b"down", False)


async def test_stale_if_error_ignores_non_error_statuses(
    origin: Origin, make_session: MakeSession, clock: Clock
) -> None:
    counting(origin, "/n", **{"Cache-Control": "max-age=10"})
    session = make_session(stale_if_error=True)
    await fetch(session, origin.url("/n"))

    @origin.route("/n")
    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404, text="gone")

    clock.advance(11)
    assert await fetch(session, origin.url("/n")) == (404, b"gone", False)


async def test_stale_while_revalidate_serves_stale_and_refreshes_once(
    origin: Origin, make_session: MakeSession, clock: Clock
) -> None:
    counting(origin, "/swr", **{"Cache-Control": "max-age=10, stale-while-revalidate=100"})
    session = make_session()
    await fetch(session, origin.url("/swr"))
    clock.advance(11)
    results = await asyncio.gather(*(fetch(session, origin.url("/swr")) for _ in range(5)))
    assert set(results) == {(200, b"v1", True)}  # served at once, stale
    await asyncio.wait_for(asyncio.gather(*session._sc_http.refreshing.values()), WAIT)
    assert origin.hits["/swr"] == 2  # one background refresh for the five
    assert await fetch(session, origin.url("/swr")) == (200, b"v2", True)


async def test_a_truncated_body_is_an_origin_failure(
    origin: Origin, make_session: MakeSession, clock: Clock
) -> None:
    counting(origin, "/cut", **{"Cache-Control": "max-age=10"})
    session = make_session(stale_if_error=True)
    await fetch(session, origin.url("/cut"))

    @origin.route("/cut")
    async def truncated(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"partial")
        assert request.transport is not None
        request.transport.close()  # the connection drops before the 1000 bytes
        return response

    clock.advance(11)
    assert await fetch(session, origin.url("/cut")) == (200, b"v1", True)
    with pytest.raises(aiohttp.ClientPayloadError):
        await fetch(make_session(), origin.url("/cut?fresh"))
