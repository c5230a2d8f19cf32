"""CacheMiddleware against a raw ASGI origin: the HTTP checklist of API.md §3, one rule per
test, each citing the RFC 9111 section it shows (docs/asgi.md links here)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shardcache import AsyncCache, ConfigurationError
from shardcache._http import strong_etag
from shardcache.asgi import CacheMiddleware

from .origin import Origin, Reply, cached, client, http_date

# The HTTP rules do not depend on the event loop: one loop is enough here.
pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])

PUBLIC = "Cache-Control: public, max-age=60"


def body(reply: Any) -> bytes:
    return bytes(reply.content)


# -- what is stored, what is served -----------------------------------------------------
async def test_get_is_stored_then_served_as_a_hit_with_age(cache: AsyncCache) -> None:
    """RFC 9111 §3, §4, §5.1: a storable GET response answers the next request, with Age."""
    origin = Origin(Reply(headers=[PUBLIC, "Content-Type: text/plain"], chunks=[b"one"]))
    _, http = cached(origin, cache)
    async with http:
        first = await http.get("/a")
        second = await http.get("/a")
    assert first.headers["x-cache"] == "MISS" and "age" not in first.headers
    assert second.headers["x-cache"] == "HIT" and second.headers["age"] == "0"
    assert body(second) == b"one" and second.headers["content-type"] == "text/plain"
    assert origin.calls["/a"] == 1


async def test_age_counts_the_time_since_the_origin_made_the_response(cache: AsyncCache) -> None:
    """RFC 9111 §4.2.3, §5.1: Age includes the apparent age from Date."""
    origin = Origin(Reply(headers=["Cache-Control: max-age=600", f"Date: {http_date(-30)}"]))
    _, http = cached(origin, cache)
    async with http:
        await http.get("/a")
        hit = await http.get("/a")
    assert hit.headers["x-cache"] == "HIT"
    assert 30 <= int(hit.headers["age"]) <= 40


async def test_only_get_and_head_are_answered_from_the_cache(cache: AsyncCache) -> None:
    """RFC 9111 §3: POST (and OPTIONS) go to the app and are never stored."""
    origin = Origin()
    _, http = cached(origin, cache)
    async with http:
        for _ in range(2):
            await http.post("/a", content=b"x")
            await http.options("/a")
    assert origin.calls["/a"] == 4


async def test_query_and_host_are_part_of_the_key(cache: AsyncCache) -> None:
    """API.md §3: the key is method + scheme + host + path + query."""
    origin = Origin()
    _, http = cached(origin, cache)
    async with http:
        await http.get("/a?x=1")
        assert (await http.get("/a?x=1")).headers["x-cache"] == "HIT"
        assert (await http.get("/a?x=2")).headers["x-cache"] == "MISS"
        assert (await http.get("/a?x=1", headers={"host": "other"})).headers["x-cache"] == "MISS"
    assert origin.calls["/a"] == 3


@pytest.mark.parametrize(
    "lines",
    [
        ["Cache-Control: max-age=60", "Set-Cookie: id=1"],
        ["Cache-Control: private, max-age=60"],
        ["Cache-Control: no-store"],
        ["Cache-Control: max-age=60", "Vary: *"],
    ],
    ids=["set-cookie", "private", "no-store", "vary-star"],
)
async def test_responses_that_are_never_stored(cache: AsyncCache, lines: list[str]) -> None:
    """RFC 9111 §3, §5.2.2.5, §5.2.2.7, §4.1; API.md §3: Set-Cookie never stored."""
    origin = Origin(Reply(headers=lines))
    _, http = cached(origin, cache)
    async with http:
        for _ in range(3):
            assert (await http.get("/a")).headers["x-cache"] == "MISS"
    assert origin.calls["/a"] == 3


async def test_cache_private_stores_private_responses(cache: AsyncCache) -> None:
    """RFC 9111 §5.2.2.7: opt-in for deployments where a shared cache may keep them."""
    origin = Origin(Reply(headers=["Cache-Control: private, max-age=60"]))
    _, http = cached(origin, cache, cache_private=True)
    async with http:
        await http.get("/a")
        assert (await http.get("/a")).headers["x-cache"] == "HIT"


async def test_one_users_set_cookie_page_never_reaches_another(cache: AsyncCache) -> None:
    """RFC 9111 §3 (shared cache): a page that sets a cookie is that user's alone."""

    def page(scope: dict[str, Any]) -> Reply:
        user = dict(scope["headers"]).get(b"x-user", b"?").decode()
        return Reply(
            headers=["Cache-Control: max-age=60", f"Set-Cookie: session={user}"],
            chunks=[f"page of {user}".encode()],
        )

    origin = Origin()
    origin.route("/me", page)
    _, http = cached(origin, cache)
    async with http:
        alice = await http.get("/me", headers={"x-user": "alice"})
        bob = await http.get("/me", headers={"x-user": "bob"})
    assert body(alice) == b"page of alice" and body(bob) == b"page of bob"
    assert bob.headers["set-cookie"] == "session=bob"


# -- Authorization and Cookie (RFC 9111 §3.5) ---------------------------------------------
async def test_authorization_bypasses_unless_public(cache: AsyncCache) -> None:
    """RFC 9111 §3.5: a response to a request with Authorization is stored only when it says
    public (or s-maxage / must-revalidate), and it is not served to another client."""
    origin = Origin(Reply(headers=["Cache-Control: max-age=60"], chunks=[b"secret"]))
    origin.route("/public", Reply(headers=[PUBLIC], chunks=[b"for all"]))
    _, http = cached(origin, cache)
    auth = {"authorization": "Bearer alice"}
    async with http:
        assert (await http.get("/a", headers=auth)).headers["x-cache"] == "MISS"
        assert (await http.get("/a")).headers["x-cache"] == "MISS"  # not alice's copy
        assert (await http.get("/a", headers=auth)).headers["x-cache"] == "MISS"
        await http.get("/public", headers=auth)
        assert (await http.get("/public")).headers["x-cache"] == "HIT"
    assert origin.calls["/a"] == 3


async def test_a_stored_anonymous_page_is_not_served_to_an_authorized_request(
    cache: AsyncCache,
) -> None:
    """RFC 9111 §3.5: the request with credentials goes to the app; the entry stays."""
    origin = Origin(Reply(headers=["Cache-Control: max-age=60"]))
    _, http = cached(origin, cache)
    async with http:
        await http.get("/a")
        assert (await http.get("/a", headers={"authorization": "x"})).headers["x-cache"] == "MISS"
        assert (await http.get("/a")).headers["x-cache"] == "HIT"


async def test_cookie_requests_need_explicit_freshness(cache: AsyncCache) -> None:
    """cookies="explicit" (default): a page built from a session cookie, with no
    Cache-Control at all, is not cached under the configured ttl."""

    def page(scope: dict[str, Any]) -> Reply:
        cookie = dict(scope["headers"]).get(b"cookie", b"").decode()
        return Reply(chunks=[f"dashboard for {cookie}".encode()])

    origin = Origin()
    origin.route("/dash", page)
    _, http = cached(origin, cache, ttl=60)
    async with http:
        alice = await http.get("/dash", headers={"cookie": "session=alice"})
        bob = await http.get("/dash", headers={"cookie": "session=bob"})
    assert body(alice) == b"dashboard for session=alice"
    assert body(bob) == b"dashboard for session=bob" and bob.headers["x-cache"] == "MISS"


@pytest.mark.parametrize("lines", [[PUBLIC], ["Cache-Control: max-age=60"]])
async def test_cookie_requests_share_explicitly_cacheable_responses(
    cache: AsyncCache, lines: list[str]
) -> None:
    """Explicit freshness is the app saying "shareable": cookie requests then hit."""
    origin = Origin(Reply(headers=lines))
    _, http = cached(origin, cache)
    async with http:
        await http.get("/a", headers={"cookie": "a=1"})
        assert (await http.get("/a", headers={"cookie": "a=2"})).headers["x-cache"] == "HIT"


async def test_vary_cookie_keeps_one_entry_per_cookie(cache: AsyncCache) -> None:
    """RFC 9111 §4.1: with Vary: Cookie the cookie is part of the key."""

    def page(scope: dict[str, Any]) -> Reply:
        cookie = dict(scope["headers"]).get(b"cookie", b"").decode()
        return Reply(headers=["Vary: Cookie"], chunks=[cookie.encode()])

    origin = Origin()
    origin.route("/a", page)
    _, http = cached(origin, cache, ttl=60)
    async with http:
        for cookie in ("s=1", "s=2", "s=1", "s=2"):
            reply = await http.get("/a", headers={"cookie": cookie})
            assert body(reply) == cookie.encode()
    assert origin.calls["/a"] == 2


async def test_cookies_ignore_caches_cookie_requests_by_ttl(cache: AsyncCache) -> None:
    """cookies="ignore": RFC 9111's own rule (cookies do not matter)."""
    origin = Origin(Reply())
    _, http = cached(origin, cache, ttl=60, cookies="ignore")
    async with http:
        await http.get("/a", headers={"cookie": "s=1"})
        assert (await http.get("/a", headers={"cookie": "s=2"})).headers["x-cache"] == "HIT"


# -- freshness: s-maxage > max-age > Expires > ttl (RFC 9111 §4.2.1) ------------------------
@pytest.mark.parametrize(
    ("lines", "ttl", "hit"),
    [
        (["Cache-Control: s-maxage=600, max-age=10", f"Date: {http_date(-100)}"], 0, True),
        (["Cache-Control: s-maxage=10, max-age=600", f"Date: {http_date(-100)}"], 0, False),
        (["Cache-Control: max-age=600", f"Expires: {http_date(-50)}"], 0, True),
        (
            ["Cache-Control: max-age=10", f"Date: {http_date(-100)}", f"Expires: {http_date(900)}"],
            600,
            False,
        ),
        ([f"Expires: {http_date(600)}"], 0, True),
        ([f"Expires: {http_date(-10)}"], 600, False),
        (["Expires: 0"], 600, False),
        ([], 60, True),
        ([], 0, False),
        (["Cache-Control: public"], 60, True),
        (["Cache-Control: max-age=60, no-cache"], 60, False),
    ],
    ids=[
        "s-maxage-over-max-age",
        "s-maxage-stale",
        "max-age-over-expires",
        "max-age-over-expires-stale",
        "expires-over-ttl",
        "expires-past-over-ttl",
        "invalid-expires-is-stale",
        "ttl-when-nothing-else",
        "ttl-0-stores-only-explicit",
        "public-without-lifetime-uses-ttl",
        "response-no-cache",
    ],
)
async def test_freshness_precedence(
    cache: AsyncCache, lines: list[str], ttl: float, hit: bool
) -> None:
    """RFC 9111 §4.2.1, §5.2.2.10, §5.3, §5.2.2.4: the first freshness source wins."""
    origin = Origin(Reply(headers=lines))
    _, http = cached(origin, cache, ttl=ttl)
    async with http:
        await http.get("/a")
        second = await http.get("/a")
    assert second.headers["x-cache"] == ("HIT" if hit else "MISS")


async def test_ttl_none_never_goes_stale(cache: AsyncCache) -> None:
    origin = Origin(Reply(headers=[f"Date: {http_date(-(10**6))}"]))
    _, http = cached(origin, cache, ttl=None)
    async with http:
        await http.get("/a")
        assert (await http.get("/a")).headers["x-cache"] == "HIT"


async def test_stale_while_revalidate_serves_stale_and_refreshes(cache: AsyncCache) -> None:
    """RFC 5861 §3 (RFC 9111 §4.2.4): a stale entry within stale-while-revalidate is served
    at once while one background request refreshes it."""
    count = 0

    def page(scope: dict[str, Any]) -> Reply:
        nonlocal count
        count += 1
        date = http_date(-100) if count == 1 else http_date()
        return Reply(
            headers=["Cache-Control: max-age=10, stale-while-revalidate=600", f"Date: {date}"],
            chunks=[f"v{count}".encode()],
        )

    origin = Origin()
    origin.route("/a", page)
    _, http = cached(origin, cache)
    async with http:
        assert body(await http.get("/a")) == b"v1"
        stale = await http.get("/a")
        assert stale.headers["x-cache"] == "HIT" and body(stale) == b"v1"
        await origin.wait_calls("/a", 2)
        for _ in range(50):  # the refresh is stored right after the app answers it
            fresh = await http.get("/a")
            if body(fresh) == b"v2":
                break
            await asyncio.sleep(0.01)
    assert body(fresh) == b"v2" and fresh.headers["x-cache"] == "HIT"
    assert origin.calls["/a"] == 2


# -- requests that bypass ---------------------------------------------------------------
@pytest.mark.parametrize(
    "request_headers",
    [{"cache-control": "no-cache"}, {"pragma": "no-cache"}, {"cache-control": "max-age=0"}],
)
async def test_no_cache_requests_go_to_the_app_and_refresh(
    cache: AsyncCache, request_headers: dict[str, str]
) -> None:
    """RFC 9111 §5.2.1.4, §5.4, §5.2.1.1: not answered from the cache, but stored."""
    count = 0

    def page(scope: dict[str, Any]) -> Reply:
        nonlocal count
        count += 1
        return Reply(headers=[PUBLIC], chunks=[f"v{count}".encode()])

    origin = Origin()
    origin.route("/a", page)
    _, http = cached(origin, cache)
    async with http:
        await http.get("/a")
        bypass = await http.get("/a", headers=request_headers)
        after = await http.get("/a")
    assert bypass.headers["x-cache"] == "MISS" and body(bypass) == b"v2"
    assert after.headers["x-cache"] == "HIT" and body(after) == b"v2"


async def test_no_store_request_neither_reads_nor_writes(cache: AsyncCache) -> None:
    """RFC 9111 §5.2.1.5."""
    origin = Origin(Reply(headers=[PUBLIC]))
    _, http = cached(origin, cache)
    async with http:
        await http.get("/a", headers={"cache-control": "no-store"})
        assert (await http.get("/a")).headers["x-cache"] == "MISS"
        assert (await http.get("/a", headers={"cache-control": "no-store"})).headers[
            "x-cache"
        ] == "MISS"


async def test_only_if_cached(cache: AsyncCache) -> None:
    """RFC 9111 §5.2.1.7: 504 when nothing stored may answer; the stored response if one may."""
    origin = Origin(Reply(headers=[PUBLIC]))
    _, http = cached(origin, cache)
    only = {"cache-control": "only-if-cached"}
    async with http:
        assert (await http.get("/a", headers=only)).status_code == 504
        await http.get("/a")
        assert (await http.get("/a", headers=only)).headers["x-cache"] == "HIT"
    assert origin.calls["/a"] == 1


async def test_range_requests_are_not_answered_from_the_cache(cache: AsyncCache) -> None:
    """RFC 9111 §3.3: partial content is neither served nor stored here."""
    origin = Origin(Reply(headers=[PUBLIC]))
    _, http = cached(origin, cache)
    async with http:
        await http.get("/a")
        assert (await http.get("/a", headers={"range": "bytes=0-1"})).headers["x-cache"] == "MISS"


# -- Vary (RFC 9111 §4.1) -------------------------------------------------------------------
async def test_vary_request_headers_are_part_of_the_key(cache: AsyncCache) -> None:
    def page(scope: dict[str, Any]) -> Reply:
        language = dict(scope["headers"]).get(b"accept-language", b"none")
        return Reply(headers=[PUBLIC, "Vary: Accept-Language"], chunks=[language])

    origin = Origin()
    origin.route("/a", page)
    _, http = cached(origin, cache)
    async with http:
        seen = []
        for language in ("en", "fr", "en", "fr", None, None):
            headers = {"accept-language": language} if language else {}
            reply = await http.get("/a", headers=headers)
            seen.append((body(reply), reply.headers["x-cache"]))
    assert seen == [
        (b"en", "MISS"),
        (b"fr", "MISS"),
        (b"en", "HIT"),
        (b"fr", "HIT"),
        (b"none", "MISS"),
        (b"none", "HIT"),
    ]


# -- validators: ETag, If-None-Match, 304 (RFC 9111 §4.3.2, RFC 9110 §13.1.2) --------------
async def test_a_strong_etag_is_generated_from_the_body(cache: AsyncCache) -> None:
    origin = Origin(Reply(headers=[PUBLIC], chunks=[b"he", b"llo"]))
    _, http = cached(origin, cache)
    async with http:
        miss = await http.get("/a")
        hit = await http.get("/a")
    assert miss.headers["etag"] == hit.headers["etag"] == strong_etag(b"hello").decode()


async def test_the_apps_own_etag_is_kept(cache: AsyncCache) -> None:
    origin = Origin(Reply(headers=[PUBLIC, 'ETag: W/"v7"']))
    _, http = cached(origin, cache)
    async with http:
        await http.get("/a")
        hit = await http.get("/a", headers={"if-none-match": '"v7"'})  # weak comparison
    assert hit.status_code == 304 and hit.headers["etag"] == 'W/"v7"'


async def test_if_none_match_on_a_hit_gives_304(cache: AsyncCache) -> None:
    origin = Origin(Reply(headers=[PUBLIC, "Content-Type: text/plain"]))
    _, http = cached(origin, cache)
    async with http:
        etag = (await http.get("/a")).headers["etag"]
        match = await http.get("/a", headers={"if-none-match": f'"nope", {etag}'})
        other = await http.get("/a", headers={"if-none-match": '"nope"'})
        star = await http.get("/a", headers={"if-none-match": "*"})
    assert match.status_code == 304 and match.content == b"" and match.headers["etag"] == etag
    assert "content-type" not in match.headers and match.headers["x-cache"] == "HIT"
    assert other.status_code == 200 and star.status_code == 304


async def test_if_none_match_on_a_miss_that_got_stored_gives_304(cache: AsyncCache) -> None:
    """The client's validators are not sent to the app (it answers a full 200 that can be
    stored); the cache then answers the precondition itself (RFC 9111 §4.3.2)."""
    origin = Origin(Reply(headers=[PUBLIC], chunks=[b"hello"]))
    _, http = cached(origin, cache)
    async with http:
        first = await http.get("/a", headers={"if-none-match": strong_etag(b"hello").decode()})
        second = await http.get("/a")
    assert first.status_code == 304 and first.headers["x-cache"] == "MISS"
    assert second.status_code == 200 and second.headers["x-cache"] == "HIT"
    assert all(name != b"if-none-match" for name, _ in origin.scopes[0]["headers"])


@pytest.mark.parametrize(
    "cache_control",
    ["no-store", "private, max-age=60", "no-cache", None],  # None: no freshness, ttl=0
)
async def test_the_clients_preconditions_hold_for_a_response_that_is_not_stored(
    cache: AsyncCache, cache_control: str | None
) -> None:
    """The cache asked the app for a complete response (the client's validators taken
    off); when that response may not be stored, the client still gets the 304 it would
    have had without the cache, and a changed representation in full."""
    headers = ['ETag: "v7"', "Content-Type: text/plain", "Set-Cookie: s=1"]
    if cache_control is not None:
        headers.append(f"Cache-Control: {cache_control}")
    origin = Origin(Reply(headers=headers, chunks=[b"body"]))
    origin.route("/dated", Reply(headers=[f"Last-Modified: {http_date(-3600)}"]))
    _, http = cached(origin, cache)
    async with http:
        same = await http.get("/a", headers={"if-none-match": 'W/"v6", "v7"'})
        changed = await http.get("/a", headers={"if-none-match": '"v6"'})
        unmodified = await http.get("/dated", headers={"if-modified-since": http_date(-60)})
        modified = await http.get("/dated", headers={"if-modified-since": http_date(-7200)})
    assert same.status_code == 304 and same.content == b""
    assert same.headers["etag"] == '"v7"' and same.headers["set-cookie"] == "s=1"
    assert "content-type" not in same.headers and "content-length" not in same.headers
    assert same.headers["x-cache"] == "MISS"
    assert changed.status_code == 200 and changed.content == b"body"
    assert unmodified.status_code == 304 and modified.status_code == 200
    assert origin.calls["/a"] == 2  # both went to the app: nothing was stored


async def test_if_modified_since(cache: AsyncCache) -> None:
    """RFC 9110 §13.1.3 against the stored Last-Modified."""
    origin = Origin(Reply(headers=[PUBLIC, f"Last-Modified: {http_date(-3600)}"]))
    _, http = cached(origin, cache)
    async with http:
        await http.get("/a")
        unchanged = await http.get("/a", headers={"if-modified-since": http_date(-60)})
        changed = await http.get("/a", headers={"if-modified-since": http_date(-7200)})
    assert unchanged.status_code == 304 and changed.status_code == 200


# -- HEAD (RFC 9110 §9.3.2) -----------------------------------------------------------------
async def test_head_is_answered_from_the_get_entry(cache: AsyncCache) -> None:
    origin = Origin(Reply(headers=[PUBLIC], chunks=[b"12345"]))
    _, http = cached(origin, cache)
    async with http:
        get = await http.get("/a")
        head = await http.head("/a")
    assert head.headers["x-cache"] == "HIT" and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"] == "5"
    assert head.headers["etag"] == get.headers["etag"]
    assert origin.calls["/a"] == 1


async def test_a_head_miss_goes_to_the_app_and_stores_nothing(cache: AsyncCache) -> None:
    origin = Origin(Reply(headers=[PUBLIC]))
    _, http = cached(origin, cache)
    async with http:
        assert (await http.head("/a")).headers["x-cache"] == "MISS"
        assert (await http.get("/a")).headers["x-cache"] == "MISS"
    assert [scope["method"] for scope in origin.scopes] == ["HEAD", "GET"]


# -- bodies and headers ---------------------------------------------------------------------
async def test_streamed_body_is_buffered_and_stored(cache: AsyncCache) -> None:
    origin = Origin(Reply(headers=[PUBLIC], chunks=[b"a" * 100, b"b" * 100, b"c"]))
    _, http = cached(origin, cache, max_body_size=1000)
    async with http:
        miss = await http.get("/a")
        hit = await http.get("/a")
    assert body(miss) == body(hit) == b"a" * 100 + b"b" * 100 + b"c"
    assert hit.headers["content-length"] == "201"


async def _raw_get(middleware: CacheMiddleware, path: str, send: Any) -> None:
    """A GET straight through the ASGI interface, every message to ``send`` as it comes
    (httpx's ASGITransport would hand over the body only at its end)."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
    }
    await middleware(scope, receive, send)


@pytest.mark.parametrize(
    "cache_control",
    [None, "no-cache", "max-age=0", "public, max-age=0"],
    ids=["no-freshness-ttl-0", "no-cache", "max-age-0", "public-max-age-0"],
)
async def test_a_stream_that_will_not_be_stored_is_not_held_back(
    cache: AsyncCache, cache_control: str | None
) -> None:
    """An event stream (no freshness, or no-cache) would be stale on arrival: each chunk
    reaches the client as the app sends it, not when the stream ends."""
    release = asyncio.Event()

    async def events(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        if cache_control is not None:
            headers.append((b"cache-control", cache_control.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await asyncio.wait_for(release.wait(), 10)  # until the client has the first event
        await send({"type": "http.response.body", "body": b"data: 2\n\n"})

    received: list[bytes] = []
    first = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            received.append(message.get("body", b""))
            if b"data: 1" in b"".join(received):
                first.set()

    call = asyncio.create_task(_raw_get(CacheMiddleware(events, cache=cache), "/events", send))
    await asyncio.wait_for(first.wait(), 10)  # held back until the end: this times out
    release.set()
    await asyncio.wait_for(call, 10)
    assert b"".join(received) == b"data: 1\n\ndata: 2\n\n"
    assert await cache.get("GET http://testserver/events") is not None  # remembered: pass


async def test_concurrent_requests_for_a_stream_not_stored_all_stream_at_once(
    cache: AsyncCache,
) -> None:
    """Three clients of one event stream: the first one's stream is decided "not stored" at
    its start, so the others go to the app at once instead of waiting for its end. The app
    ends a stream only once every client has its first event: held back, this deadlocks."""
    clients = 3
    firsts = 0
    everyone = asyncio.Event()

    async def events(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await asyncio.wait_for(everyone.wait(), 10)
        await send({"type": "http.response.body", "body": b"data: 2\n\n"})

    async def client(middleware: CacheMiddleware) -> bytes:
        received: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal firsts
            if message["type"] == "http.response.body":
                received.append(message.get("body", b""))
                if len(received) == 1:
                    firsts += 1
                    if firsts == clients:
                        everyone.set()

        await _raw_get(middleware, "/events", send)
        return b"".join(received)

    middleware = CacheMiddleware(events, cache=cache, pass_ttl=0)
    bodies = await asyncio.wait_for(
        asyncio.gather(*(client(middleware) for _ in range(clients))), 15
    )
    assert bodies == [b"data: 1\n\ndata: 2\n\n"] * clients


async def test_a_body_larger_than_max_body_size_passes_through_uncached(
    cache: AsyncCache,
) -> None:
    """Buffered up to max_body_size, then streamed as it comes, and never stored; the URL
    is then passed through without buffering (hit-for-pass)."""
    chunks = [bytes([65 + i]) * 400 for i in range(5)]
    origin = Origin(Reply(headers=[PUBLIC], chunks=chunks))
    _, http = cached(origin, cache, max_body_size=1000)
    async with http:
        for _ in range(3):
            reply = await http.get("/a")
            assert body(reply) == b"".join(chunks) and reply.headers["x-cache"] == "MISS"
            assert "etag" not in reply.headers
    assert origin.calls["/a"] == 3
    assert await cache.get("GET http://testserver/a") == (
        "pass: the body is larger than max_body_size"
    )


async def test_a_declared_content_length_over_the_limit_is_not_buffered(
    cache: AsyncCache,
) -> None:
    origin = Origin(Reply(headers=[PUBLIC, "Content-Length: 2000"], chunks=[b"x" * 2000]))
    _, http = cached(origin, cache, max_body_size=1000)
    async with http:
        assert len((await http.get("/a")).content) == 2000
        assert (await http.get("/a")).headers["x-cache"] == "MISS"


async def test_multi_valued_headers_keep_their_lines_and_order(cache: AsyncCache) -> None:
    """RFC 9110 §5.3: repeated fields are kept line by line, in order, case as sent."""
    lines = [
        "X-B: 1",
        "Link: </a.css>; rel=preload",
        "X-B: 2",
        "Link: </b.js>; rel=preload",
        "Cache-Control: public",
        "cache-control: max-age=60",
        "X-Custom-Case: kept",
    ]
    origin = Origin(Reply(headers=lines))
    _, http = cached(origin, cache)
    async with http:
        miss = await http.get("/a")
        hit = await http.get("/a")
    added = {b"age", b"x-cache"}
    assert [h for h in hit.headers.raw if h[0].lower() not in added] == [
        h for h in miss.headers.raw if h[0].lower() not in added
    ]
    sent = [tuple(line.split(": ", 1)) for line in lines]
    assert [(n.decode(), v.decode()) for n, v in hit.headers.raw][: len(lines)] == sent


@pytest.mark.parametrize(
    ("status", "stored"),
    [(200, True), (203, True), (204, True), (301, True), (404, True), (410, True),
     (302, False), (400, False), (500, False), (501, False), (503, False)],
)  # fmt: skip
async def test_default_statuses(cache: AsyncCache, status: int, stored: bool) -> None:
    """RFC 9110 §15.1 heuristically cacheable statuses (less 206, 501) are stored."""
    chunks = [] if status == 204 else [b"x"]
    origin = Origin(Reply(status=status, headers=["Cache-Control: max-age=60"], chunks=chunks))
    _, http = cached(origin, cache)
    async with http:
        await http.get("/a")
        reply = await http.get("/a")
    assert reply.status_code == status
    assert reply.headers["x-cache"] == ("HIT" if stored else "MISS")


async def test_statuses_option(cache: AsyncCache) -> None:
    origin = Origin(Reply(status=404, headers=[PUBLIC]))
    _, http = cached(origin, cache, statuses={200})
    async with http:
        await http.get("/a")
        assert (await http.get("/a")).headers["x-cache"] == "MISS"
    with pytest.raises(ConfigurationError):
        CacheMiddleware(origin, cache=cache, statuses={200, 206})


# -- invalidation (RFC 9111 §4.4) ---------------------------------------------------------------
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_a_successful_unsafe_request_invalidates_its_url(
    cache: AsyncCache, method: str
) -> None:
    origin = Origin(Reply(headers=[PUBLIC]))
    _, http = cached(origin, cache)
    async with http:
        await http.get("/items?page=1")
        await http.get("/items?page=2")
        await http.request(method, "/items?page=1")
        assert (await http.get("/items?page=1")).headers["x-cache"] == "MISS"
        assert (await http.get("/items?page=2")).headers["x-cache"] == "HIT"


async def test_a_failed_unsafe_request_invalidates_nothing(cache: AsyncCache) -> None:
    origin = Origin(Reply(headers=[PUBLIC]))
    _, http = cached(origin, cache)
    async with http:
        await http.get("/items")
        origin.route("/items", Reply(status=422))
        await http.post("/items")
        origin.route("/items", Reply(headers=[PUBLIC]))
        assert (await http.get("/items")).headers["x-cache"] == "HIT"


async def test_location_and_content_location_are_invalidated_on_the_same_origin(
    cache: AsyncCache,
) -> None:
    origin = Origin(Reply(headers=[PUBLIC]))
    _, http = cached(origin, cache)
    async with http:
        for path in ("/items", "/items/7", "/items/8", "/other"):
            await http.get(path)
        origin.route(
            "/items",
            Reply(
                status=201, headers=["Location: /items/7", "Content-Location: http://evil/other"]
            ),
        )
        await http.post("/items")
        origin.route("/items", Reply(headers=[PUBLIC]))
        hits = {
            p: (await http.get(p)).headers["x-cache"] for p in ("/items/7", "/items/8", "/other")
        }
    assert hits == {"/items/7": "MISS", "/items/8": "HIT", "/other": "HIT"}


async def test_invalidation_drops_every_vary_variant(cache: AsyncCache) -> None:
    def page(scope: dict[str, Any]) -> Reply:
        return Reply(
            headers=[PUBLIC, "Vary: Accept"], chunks=[dict(scope["headers"]).get(b"accept", b"")]
        )

    origin = Origin()
    origin.route("/a", page)
    _, http = cached(origin, cache)
    async with http:
        for accept in ("a/b", "c/d"):
            await http.get("/a", headers={"accept": accept})
        await http.delete("/a")
        for accept in ("a/b", "c/d"):
            assert (await http.get("/a", headers={"accept": accept})).headers["x-cache"] == "MISS"


# -- options ----------------------------------------------------------------------------------
async def test_rules_set_a_ttl_per_path_and_zero_means_never(cache: AsyncCache) -> None:
    origin = Origin(Reply())
    origin.route("/admin/users", Reply(headers=[PUBLIC]))
    _, http = cached(origin, cache, ttl=0, rules={"/static/*": 3600, "/admin/*": 0})
    async with http:
        for path in ("/static/app.css", "/admin/users", "/other"):
            await http.get(path)
        seen = {
            p: (await http.get(p)).headers["x-cache"]
            for p in ("/static/app.css", "/admin/users", "/other")
        }
    assert seen == {"/static/app.css": "HIT", "/admin/users": "MISS", "/other": "MISS"}


@pytest.mark.parametrize(
    ("root_path", "path"),
    [
        ("/api", "/api/admin/users"),  # uvicorn --root-path /api: the prefix stays in path
        ("/sub", "/sub/admin/users"),  # the middleware on an app mounted at /sub
        ("/api", "/admin/users"),  # a proxy that strips the prefix itself
        ("", "/admin/users"),
    ],
)
async def test_rules_match_the_path_the_app_routes_behind_a_root_path(
    cache: AsyncCache, root_path: str, path: str
) -> None:
    """A "never cache" rule written against the app's routes keeps working when the app
    runs under a root path: it matches the path without root_path, and the full path."""
    origin = Origin(Reply(headers=[PUBLIC]))
    middleware = CacheMiddleware(
        origin, cache=cache, rules={"/admin/*": 0, "/static/*": 3600, "/api/full/*": 0}
    )

    def with_root(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        return middleware({**scope, "root_path": root_path}, receive, send)

    async with client(with_root) as http:
        admin = [(await http.get(path)).headers["x-cache"] for _ in range(2)]
        static = root_path + "/static/app.css"
        assets = [(await http.get(static)).headers["x-cache"] for _ in range(2)]
        full = [(await http.get("/api/full/x")).headers["x-cache"] for _ in range(2)]
    assert admin == ["MISS", "MISS"]
    assert assets == ["MISS", "HIT"]
    assert full == ["MISS", "MISS"]  # a rule written with the prefix matches too


async def test_a_get_with_a_body_is_not_answered_with_another_bodys_response(
    cache: AsyncCache,
) -> None:
    """The key leaves the body out: a GET carrying content (a search API taking a query
    document) goes to the app, uncached."""
    origin = Origin(lambda scope: Reply(headers=[PUBLIC], chunks=[b"answer"]))
    _, http = cached(origin, cache)
    async with http:
        first = await http.request("GET", "/search", content=b'{"q": "a"}')
        second = await http.request("GET", "/search", content=b'{"q": "b"}')
        plain = [await http.get("/search") for _ in range(2)]
    assert first.headers["x-cache"] == second.headers["x-cache"] == "MISS"
    assert origin.calls["/search"] == 3
    assert [r.headers["x-cache"] for r in plain] == ["MISS", "HIT"]


async def test_a_key_function_that_raises_passes_the_request_through(
    cache: AsyncCache, caplog: pytest.LogCaptureFixture
) -> None:
    def key(scope: dict[str, Any], default: str) -> str | None:
        if scope["path"] == "/boom":
            raise LookupError("no tenant header")
        return default

    origin = Origin(Reply(headers=[PUBLIC]))
    _, http = cached(origin, cache, key=key)
    async with http:
        replies = [await http.get("/boom") for _ in range(2)]
        posted = await http.post("/boom")
        fine = [await http.get("/a") for _ in range(2)]
    assert [r.status_code for r in replies] == [200, 200] and posted.status_code == 200
    assert [r.headers["x-cache"] for r in replies] == ["MISS", "MISS"]
    assert origin.calls["/boom"] == 3
    assert [r.headers["x-cache"] for r in fine] == ["MISS", "HIT"]
    assert "key function failed" in caplog.text


async def test_key_function(cache: AsyncCache) -> None:
    """key(scope, default_key): here the query is ignored, and /private is not cached."""

    def key(scope: dict[str, Any], default: str) -> str | None:
        if scope["path"].startswith("/private"):
            return None
        return default.partition("?")[0]

    origin = Origin(Reply(headers=[PUBLIC]))
    _, http = cached(origin, cache, key=key)
    async with http:
        await http.get("/a?utm=1")
        assert (await http.get("/a?utm=2")).headers["x-cache"] == "HIT"
        await http.get("/private")
        assert (await http.get("/private")).headers["x-cache"] == "MISS"
        await http.post("/a?x=1")  # invalidation goes through the key function too
        assert (await http.get("/a")).headers["x-cache"] == "MISS"


async def test_methods_option(cache: AsyncCache) -> None:
    origin = Origin(Reply(headers=[PUBLIC]))
    _, http = cached(origin, cache, methods=["get"])
    async with http:
        await http.get("/a")
        head = await http.head("/a")
    assert "x-cache" not in head.headers and origin.calls["/a"] == 2


@pytest.mark.parametrize("option", ["header", "cache_header"])  # the name, an alias
async def test_header_option(cache: AsyncCache, option: str) -> None:
    origin = Origin(Reply(headers=[PUBLIC]))
    _, http = cached(origin, cache, **{option: "X-Shardcache"})
    async with http:
        assert (await http.get("/a")).headers["x-shardcache"] == "MISS"
        reply = await http.get("/a")
        assert reply.headers["x-shardcache"] == "HIT" and "x-cache" not in reply.headers
    _, quiet = cached(origin, cache, **{option: None})
    async with quiet:
        reply = await quiet.get("/a")
    assert "x-cache" not in reply.headers and "x-shardcache" not in reply.headers


async def test_rules_take_no_cache_and_no_store_for_never(cache: AsyncCache) -> None:
    origin = Origin(Reply(headers=[PUBLIC]))
    rules = {"/admin/*": "no-cache", "/private/*": "no-store", "/*": 60}
    _, http = cached(origin, cache, ttl=0, rules=rules)
    async with http:
        for path in ("/admin/a", "/private/b", "/c"):
            await http.get(path)
        seen = {p: (await http.get(p)).headers["x-cache"] for p in ("/admin/a", "/private/b", "/c")}
    assert seen == {"/admin/a": "MISS", "/private/b": "MISS", "/c": "HIT"}


@pytest.mark.parametrize(
    "options",
    [
        {"methods": ["POST"]},
        {"max_body_size": -1},
        {"ttl": -1},
        {"ttl": float("nan")},
        {"cookies": "sometimes"},
        {"cache_header": "X Cache"},
        {"header": "X Cache"},
        {"header": 123},
        {"header": "X-A", "cache_header": "X-B"},
        {"pass_ttl": -1},
        {"pass_ttl": "30"},
        {"lock_timeout": 0},
        {"lock_timeout": "1"},
        {"rules": {"/a": -5}},
        {"rules": {"/a": "sometimes"}},
        {"rules": ["/a/*"]},
        {"rules": {5: 60}},
        {"ttl": "60"},
        {"ttl": True},
        {"statuses": ("200",)},
        {"statuses": (99,)},
        {"key": "not callable"},
        {"cache_private": "yes"},
        {"methods": "GET"},
        {"targeted_fields": 5},
        {"statuses": (200, 206)},
        {"statuses": 5},
        {"statuses": None},
        {"methods": 5},
        {"methods": None},
        {"header": "X-Cache", "cache_header": "X-B"},
    ],
)
async def test_bad_options_raise_configuration_error(
    cache: AsyncCache, options: dict[str, Any]
) -> None:
    with pytest.raises(ConfigurationError):
        CacheMiddleware(Origin(), cache=cache, **options)


async def test_an_option_error_names_the_option_given(cache: AsyncCache) -> None:
    with pytest.raises(ConfigurationError, match=r"^cache_header=5"):
        CacheMiddleware(Origin(), cache=cache, cache_header=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"^header='X Y'"):
        CacheMiddleware(Origin(), cache=cache, header="X Y")


async def test_cache_must_be_a_backend() -> None:
    with pytest.raises(TypeError, match="CacheBackend"):
        CacheMiddleware(Origin(), cache={})  # type: ignore[arg-type]


async def test_lifespan_and_websocket_scopes_pass_through(cache: AsyncCache) -> None:
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = CacheMiddleware(app, cache=cache)
    await middleware({"type": "websocket"}, None, None)  # type: ignore[arg-type]
    await middleware({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["websocket", "lifespan"]


# -- targeted fields (RFC 9213) ----------------------------------------------------------
@pytest.mark.parametrize(
    ("lines", "stored_"),
    [
        (["Cache-Control: no-store", "CDN-Cache-Control: max-age=60"], True),
        (["Cache-Control: max-age=60", "CDN-Cache-Control: private"], False),
        (["Cache-Control: max-age=60", "CDN-Cache-Control: no-store"], False),
        (["Cache-Control: max-age=60", "CDN-Cache-Control: max-age=0"], False),
        (["Cache-Control: no-store", "CDN-Cache-Control: max-age =60"], False),  # invalid
        (["Cache-Control: max-age=60", "CDN-Cache-Control: max-age=60, &&"], True),  # ignored
    ],
    ids=["cdn-fresh-cc-no-store", "private", "no-store", "max-age-0", "invalid", "ignored"],
)
async def test_cdn_cache_control_is_obeyed_by_default(
    cache: AsyncCache, lines: list[str], stored_: bool
) -> None:
    """RFC 9213: the app can give shared caches (this one) other rules than browsers; the
    field reaches the client unchanged, for the caches further out."""
    origin = Origin(Reply(headers=lines))
    _, http = cached(origin, cache)
    async with http:
        first = await http.get("/a")
        second = await http.get("/a")
    assert first.headers["cdn-cache-control"] == lines[1].partition(": ")[2]
    assert (second.headers["x-cache"] == "HIT") is stored_
    assert origin.calls["/a"] == (1 if stored_ else 2)


async def test_targeted_fields_can_be_turned_off_or_changed(cache: AsyncCache) -> None:
    origin = Origin(Reply(headers=["Cache-Control: no-store", "CDN-Cache-Control: max-age=60"]))
    origin.route("/mine", Reply(headers=["Cache-Control: no-store", "My-CC: max-age=60"]))
    _, plain = cached(origin, cache, targeted_fields=())
    _, mine = cached(origin, cache, targeted_fields=["My-CC", "CDN-Cache-Control"])
    async with plain, mine:
        await plain.get("/a")
        assert (await plain.get("/a")).headers["x-cache"] == "MISS"
        await mine.get("/mine")
        assert (await mine.get("/mine")).headers["x-cache"] == "HIT"
    with pytest.raises(ConfigurationError, match="targeted_fields"):
        CacheMiddleware(origin, cache=cache, targeted_fields="CDN-Cache-Control")
    with pytest.raises(ConfigurationError, match="targeted_fields"):
        CacheMiddleware(origin, cache=cache, targeted_fields=["bad name"])
