"""CacheMiddleware revalidating a stale entry with the app (RFC 9111 §4.3): the app gets the
cache's validators, and its 304 freshens the stored response instead of reaching the client.

Each test lets a one-second entry go stale (a real wait: freshness is computed from the
exchange times and the Date field, both in whole seconds on the wire)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shardcache import AsyncCache

from .origin import Origin, Reply, cached

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])

SHORT = "Cache-Control: max-age=1"
STALE_AFTER = 1.1


def header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for field, value in scope["headers"]:
        if field.lower() == name:
            return bytes(value)
    return None


class Versioned:
    """An app with validators: 304 to a matching If-None-Match / If-Modified-Since, else
    a 200 with the current version's body and ETag."""

    def __init__(self, *, etag: bool = True, last_modified: bool = False) -> None:
        self.version = 1
        self.etag = etag
        self.last_modified = last_modified
        self.extra: list[str] = []  # fields the next answer (200 or 304) also carries

    def validators(self) -> list[str]:
        fields = []
        if self.etag:
            fields.append(f'ETag: "v{self.version}"')
        if self.last_modified:
            fields.append("Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT")
        return fields

    def __call__(self, scope: dict[str, Any]) -> Reply:
        inm = header(scope, b"if-none-match")
        ims = header(scope, b"if-modified-since")
        if (self.etag and inm == f'"v{self.version}"'.encode()) or (
            self.last_modified and inm is None and ims is not None
        ):
            return Reply(status=304, headers=[SHORT, *self.validators(), *self.extra], chunks=[])
        body = f"body v{self.version}".encode()
        return Reply(headers=[SHORT, *self.validators(), *self.extra], chunks=[body])


def revalidating(cache: AsyncCache, app: Versioned, **options: Any) -> tuple[Origin, Any]:
    origin = Origin()
    origin.route("/a", app)
    _, http = cached(origin, cache, **options)
    return origin, http


async def test_a_stale_entry_is_revalidated_with_its_etag(cache: AsyncCache) -> None:
    """§4.3.1: the app is asked with If-None-Match; its 304 makes the stored body the
    answer (a full 200 to a client without preconditions) and freshens the entry."""
    app = Versioned()
    origin, http = revalidating(cache, app)
    async with http:
        first = await http.get("/a")
        await asyncio.sleep(STALE_AFTER)
        app.extra = ["X-Checked: yes"]
        second = await http.get("/a")
        third = await http.get("/a")
    assert first.content == b"body v1"
    assert header(origin.scopes[1], b"if-none-match") == b'"v1"'
    assert second.status_code == 200 and second.content == b"body v1"
    assert second.headers["x-cache"] == "MISS" and second.headers["etag"] == '"v1"'
    # §4.3.4: the 304's fields update the stored response; the stored body stays.
    assert second.headers["x-checked"] == "yes" and second.headers["content-length"] == "7"
    assert third.headers["x-cache"] == "HIT" and third.content == b"body v1"
    assert third.headers["x-checked"] == "yes"
    assert origin.calls["/a"] == 2


async def test_last_modified_is_sent_as_if_modified_since(cache: AsyncCache) -> None:
    app = Versioned(etag=False, last_modified=True)
    origin, http = revalidating(cache, app)
    async with http:
        await http.get("/a")
        await asyncio.sleep(STALE_AFTER)
        second = await http.get("/a")
    assert header(origin.scopes[1], b"if-modified-since") == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert second.status_code == 200 and second.content == b"body v1"


async def test_the_clients_own_preconditions_are_answered_by_the_cache(
    cache: AsyncCache,
) -> None:
    """The app sees the cache's validator, not the client's; the client's If-None-Match is
    then evaluated against the freshened entry (§4.3.2)."""
    app = Versioned()
    origin, http = revalidating(cache, app)
    async with http:
        await http.get("/a")
        await asyncio.sleep(STALE_AFTER)
        matching = await http.get("/a", headers={"if-none-match": '"v1"'})
        await asyncio.sleep(STALE_AFTER)
        other = await http.get("/a", headers={"if-none-match": '"v0"'})
    assert header(origin.scopes[1], b"if-none-match") == b'"v1"'
    assert header(origin.scopes[2], b"if-none-match") == b'"v1"'
    assert matching.status_code == 304 and matching.content == b""
    assert other.status_code == 200 and other.content == b"body v1"


async def test_a_changed_resource_replaces_the_entry(cache: AsyncCache) -> None:
    """A 200 to the conditional request is a new response: stored and served as such."""
    app = Versioned()
    origin, http = revalidating(cache, app)
    async with http:
        await http.get("/a")
        app.version = 2
        await asyncio.sleep(STALE_AFTER)
        second = await http.get("/a")
        third = await http.get("/a")
    assert second.content == b"body v2" and second.headers["etag"] == '"v2"'
    assert third.headers["x-cache"] == "HIT" and third.content == b"body v2"
    assert origin.calls["/a"] == 2


async def test_a_304_for_another_representation_means_asking_again(cache: AsyncCache) -> None:
    """§4.3.4: a 304 whose validator contradicts the stored one updates nothing; the cache
    asks again without preconditions and answers with that."""
    calls = 0

    def app(scope: dict[str, Any]) -> Reply:
        nonlocal calls
        calls += 1
        if header(scope, b"if-none-match") is not None:
            return Reply(status=304, headers=[SHORT, 'ETag: "other"'], chunks=[])
        return Reply(headers=[SHORT, f'ETag: "v{calls}"'], chunks=[f"body {calls}".encode()])

    origin = Origin()
    origin.route("/a", app)
    _, http = cached(origin, cache)
    async with http:
        await http.get("/a")
        await asyncio.sleep(STALE_AFTER)
        second = await http.get("/a")
        third = await http.get("/a")
    assert origin.calls["/a"] == 3  # the first fetch, the conditional one, the refetch
    assert header(origin.scopes[1], b"if-none-match") == b'"v1"'
    assert header(origin.scopes[2], b"if-none-match") is None
    assert second.status_code == 200 and second.content == b"body 3"
    assert third.headers["x-cache"] == "HIT" and third.content == b"body 3"


async def test_a_304_with_no_store_is_served_but_not_kept(cache: AsyncCache) -> None:
    app = Versioned()
    origin, http = revalidating(cache, app)
    async with http:
        await http.get("/a")
        await asyncio.sleep(STALE_AFTER)
        app.extra = ["Cache-Control: no-store"]
        second = await http.get("/a")
        third = await http.get("/a")
    assert second.status_code == 200 and second.content == b"body v1"
    assert third.headers["x-cache"] == "MISS"  # not freshened: asked again
    assert origin.calls["/a"] == 3


async def test_concurrent_requests_share_one_revalidation(cache: AsyncCache) -> None:
    """Stampede protection holds for revalidation: one conditional request reaches the app."""
    app = Versioned()
    origin, http = revalidating(cache, app)
    async with http:
        await http.get("/a")
        await asyncio.sleep(STALE_AFTER)
        replies = await asyncio.gather(*(http.get("/a") for _ in range(10)))
    assert origin.calls["/a"] == 2
    assert all(r.status_code == 200 and r.content == b"body v1" for r in replies)


async def test_head_revalidates_without_a_body(cache: AsyncCache) -> None:
    app = Versioned()
    origin, http = revalidating(cache, app)
    async with http:
        await http.get("/a")
        await asyncio.sleep(STALE_AFTER)
        head = await http.head("/a")
        get = await http.get("/a")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == "7"
    assert get.headers["x-cache"] == "HIT" and get.content == b"body v1"
    assert origin.calls["/a"] == 2


async def test_stale_while_revalidate_refreshes_with_a_conditional_request(
    cache: AsyncCache,
) -> None:
    app = Versioned()
    app.extra = ["Cache-Control: stale-while-revalidate=60"]
    origin, http = revalidating(cache, app)
    async with http:
        await http.get("/a")
        await asyncio.sleep(STALE_AFTER)
        stale = await http.get("/a")  # served at once; the refresh runs in the background
        await origin.wait_calls("/a", 2)
        for _ in range(100):  # stored right after the app's 304
            fresh = await http.get("/a")
            if fresh.headers.get("age") == "0":
                break
            await asyncio.sleep(0.01)
    assert stale.headers["x-cache"] == "HIT" and stale.content == b"body v1"
    assert header(origin.scopes[1], b"if-none-match") == b'"v1"'
    assert fresh.headers["age"] == "0" and fresh.content == b"body v1"
    assert origin.calls["/a"] == 2
