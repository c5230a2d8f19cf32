"""The responses a CachedSession returns: aiohttp's own surface, and what is buffered.

A cached response is rebuilt from the store without a connection; these tests pin every
public attribute a scraper uses, so that an aiohttp release that changes the internals the
rebuild relies on fails here.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp_origin import Origin, fetch

from shardcache.aiohttp import CachedResponse, CachedSession

MakeSession = Callable[..., CachedSession]


async def test_a_cached_response_has_the_client_response_surface(
    origin: Origin, make_session: MakeSession
) -> None:
    @origin.route("/api")
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(
            {"name": "caf\u00e9"}, headers={"Link": '</next>; rel="next"', "X-Custom": "1"}
        )

    session = make_session()
    async with session.get(origin.url("/api?page=1")) as live:
        live_body = await live.read()
        live_headers = dict(live.headers)
    async with session.get(origin.url("/api?page=1")) as resp:
        assert isinstance(resp, aiohttp.ClientResponse) and resp.from_cache
        assert (resp.status, resp.reason, resp.ok, resp.method) == (200, "OK", True, "GET")
        assert resp.version == aiohttp.HttpVersion11
        assert str(resp.url) == origin.url("/api?page=1") == str(resp.real_url)
        assert resp.host == "127.0.0.1"
        assert resp.history == ()
        assert resp.connection is None
        assert resp.content_type == "application/json"
        assert resp.charset == "utf-8"
        assert resp.get_encoding() == "utf-8"
        assert resp.content_length == len(live_body)
        assert resp.headers["X-Custom"] == "1"
        assert {**live_headers, "age": resp.headers["age"]} == dict(resp.headers)
        assert (b"X-Custom", b"1") in resp.raw_headers
        assert str(resp.links["next"]["url"]) == origin.url("/next")
        assert resp.request_info.url == resp.url and resp.request_info.method == "GET"
        assert "User-Agent" in resp.request_info.headers
        assert await resp.read() == live_body
        assert await resp.text() == live_body.decode()
        assert await resp.json() == {"name": "caf\u00e9"}
        assert await resp.content.read() == live_body
        resp.raise_for_status()
        assert "ClientResponse" in repr(resp) and "200 OK" in repr(resp)
    assert resp.closed
    resp.release()  # idempotent, as aiohttp's


async def test_a_cached_error_response_raises_like_aiohttp(
    origin: Origin, make_session: MakeSession
) -> None:
    @origin.route("/gone")
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=410, text="gone", content_type="text/plain")

    session = make_session()
    await fetch(session, origin.url("/gone"))
    resp = await session.get(origin.url("/gone"))
    assert (resp.from_cache, resp.ok, resp.reason) == (True, False, "Gone")
    with pytest.raises(aiohttp.ClientResponseError) as caught:
        resp.raise_for_status()
    assert (caught.value.status, caught.value.message) == (410, "Gone")
    with pytest.raises(aiohttp.ContentTypeError):
        await resp.json()
    resp.release()


async def test_a_body_stored_in_its_own_file_round_trips(
    origin: Origin, make_session: MakeSession
) -> None:
    payload = os.urandom(300 * 1024)  # above the engine's min_file_size (64 KiB)

    @origin.route("/big")
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=payload, content_type="application/octet-stream")

    session = make_session()
    assert await fetch(session, origin.url("/big")) == (200, payload, False)
    async with session.get(origin.url("/big")) as resp:
        assert resp.from_cache
        chunks = [chunk async for chunk in resp.content.iter_chunked(64 * 1024)]
    assert b"".join(chunks) == payload
    assert origin.hits["/big"] == 1


async def test_a_body_announced_above_max_body_size_is_streamed_untouched(
    origin: Origin, make_session: MakeSession
) -> None:
    payload = b"x" * 5000

    @origin.route("/large")
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=payload)

    session = make_session(max_body_size=1000)
    async with session.get(origin.url("/large")) as resp:
        assert resp.from_cache is False
        assert resp._body is None  # the session did not read it: the caller streams it
        chunks = [chunk async for chunk in resp.content.iter_chunked(1024)]
    assert b"".join(chunks) == payload
    assert (await fetch(session, origin.url("/large")))[2] is False
    assert origin.hits["/large"] == 2


async def test_a_chunked_body_above_max_body_size_is_not_stored(
    origin: Origin, make_session: MakeSession
) -> None:
    @origin.route("/chunked")
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(3):
            await response.write(b"y" * 1000)
        await response.write_eof()
        return response

    session = make_session(max_body_size=2000)
    assert await fetch(session, origin.url("/chunked")) == (200, b"y" * 3000, False)
    assert await fetch(session, origin.url("/chunked")) == (200, b"y" * 3000, False)
    small = make_session(max_body_size=None)
    await fetch(small, origin.url("/chunked?all"))
    assert (await fetch(small, origin.url("/chunked?all")))[2] is True


async def test_response_class_must_be_a_cached_response(make_session: MakeSession) -> None:
    class Mine(CachedResponse):
        pass

    with pytest.raises(TypeError, match="response_class"):
        make_session(response_class=aiohttp.ClientResponse)
    assert make_session(response_class=Mine)._sc_http.response_class is Mine
