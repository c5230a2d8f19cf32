"""Response caching for ASGI applications: :class:`CacheMiddleware`, a shared HTTP cache.

Put it in front of any ASGI app (FastAPI, Starlette, Litestar, a bare coroutine)::

    from shardcache import AsyncCache
    from shardcache.asgi import CacheMiddleware

    cache = AsyncCache("/var/cache/myapp")
    app.add_middleware(CacheMiddleware, cache=cache, ttl=60)  # Starlette / FastAPI
    app = CacheMiddleware(app, cache=cache, ttl=60)           # any ASGI app

It is a shared cache with the rules of RFC 9111, written once in :mod:`shardcache._http`
(pure functions, no I/O); this module is the short I/O loop around them. A request::

    GET/HEAD ─key─▶ cache.get(P) ─ StoredResponse ─▶ ReusePlan.fresh_for ─ yes ─▶ 200, HIT
                       │          └ Vary names ─▶ cache.get(variant) ─┘   no ─▶ decide_reuse
                       │                                                        ─▶ 200/304
                       ├ "pass: ..." (hit-for-pass) ───▶ the app (once a second: stored if
                       │                                 storable, Varnish's hit-for-miss)
                       └ nothing, or stale ─────────────▶ single_flight(P): ONE request per
                                                          key reaches the app, in this
                                                          process and across processes
    a plain request for a key this process knows as "pass" ─▶ the app, nothing read
    (``_asgi_pass``: the cache is read again after a second)
    other methods ──▶ the app; a 2xx/3xx answer to an unsafe one drops the URL (§4.4)

The storage layout is the one :mod:`shardcache._http` describes: the primary key ``P``
(``"GET http://host/path?query"``) holds the :class:`~shardcache._http.StoredResponse`,
or the list of ``Vary`` names, each variant then living under ``variant_key(P, ...)``
tagged ``P``; or a ``"pass: <reason>"`` string for a while after a response that may not
be stored. The middleware depends only on :class:`~shardcache.CacheBackend`.

Fail open: a cache that fails (closed, disk full, corrupt) never fails a request; the
request goes to the app and the failure is logged once per cause.

Private helpers, one concept each: ``_asgi_exchange`` (one trip to the app: buffer, store,
answer), ``_asgi_lookup`` (keys, rules, the per-entry HIT plans), ``_asgi_pass``
(hit-for-pass remembered in the process), ``_asgi_refresh`` (stale-while-revalidate in the
background), ``_asgi_fastapi`` (:func:`cache_for`), ``_asgi_options`` (the options,
checked once).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, Literal

from ._asgi_exchange import (
    BODY,
    LAYER,
    START,
    TOO_LARGE,
    Exchange,
    Message,
    Receive,
    Scope,
    Send,
)
from ._asgi_fastapi import cache_for
from ._asgi_lookup import MEMO_SIZE, HitPlans, KeyFunction
from ._asgi_options import UNSET, Unset, check_options
from ._asgi_pass import PassMemo, Renewal
from ._asgi_refresh import Refresher
from ._breaker import Breaker, open_within, opened
from ._http import (
    HEURISTICALLY_CACHEABLE_STATUSES,
    SAFE_METHODS,
    CachePolicy,
    Reuse,
    StoredResponse,
    decide_request,
    decide_reuse,
    not_modified,
    not_modified_headers,
    plain_request,
    request_has_credentials,
    serve_headers,
    variant_key,
    vary_names,
    vary_values,
)
from ._stampede import _warn_once, single_flight
from ._types import CacheBackend

__all__ = ["DEFAULT_STATUSES", "ASGIApp", "CacheMiddleware", "KeyFunction", "cache_for"]
cache_for.__module__ = __name__  # public here, whatever private module holds it

ASGIApp = Callable[[Scope, Receive, Send], Any]

#: The statuses stored by default: RFC 9110 §15.1's heuristically cacheable ones, less
#: 206 (partial content is never stored) and 501 (a server error: caching it would
#: prolong a bad deploy).
DEFAULT_STATUSES: Final = HEURISTICALLY_CACHEABLE_STATUSES - {501}

# What the primary key holds: a response, the Vary names of its variants, or a marker.
_SLOT: Final[Any] = StoredResponse | list[str] | str
_PROBE_INTERVAL: Final = 1.0  # seconds between storability checks of a "pass" URL


class CacheMiddleware:
    """A shared HTTP cache (RFC 9111) in front of an ASGI application.

    Example::

        app.add_middleware(CacheMiddleware, cache=cache, ttl=60)

    What is stored: the response to a ``GET`` whose status is in ``statuses``, whose body
    fits ``max_body_size`` and that the rules allow (no ``Set-Cookie``, ``private``,
    ``no-store`` or ``Vary: *``; for a request with ``Authorization`` only a ``public`` or
    ``s-maxage`` response; for a request with ``Cookie`` only a response with explicit
    freshness, or one that varies on ``Cookie``). It is fresh for ``s-maxage``, else
    ``max-age``, else ``Expires``, else ``ttl``. ``HEAD`` is answered from the ``GET``
    entry. Responses get ``Age`` and the ``header`` (``HIT``/``MISS``).

    Options (keyword-only):

    * ``cache`` -- any :class:`~shardcache.CacheBackend` (an open or lazily opened
      :class:`~shardcache.AsyncCache`).
    * ``ttl`` -- seconds a response without explicit freshness stays fresh; ``0`` (the
      default) stores only responses that say how long they are fresh; ``None``: forever.
    * ``methods`` -- the methods answered from the cache, a subset of GET and HEAD.
    * ``statuses`` -- the statuses that may be stored (default :data:`DEFAULT_STATUSES`).
    * ``max_body_size`` -- bodies up to this many bytes are buffered and stored; a larger
      one streams through untouched.
    * ``key`` -- ``key(scope, default_key)`` returns the primary key to use (``None``:
      do not cache this request); the default key is method + scheme + host + path +
      query. Also applied to the keys an unsafe request invalidates.
    * ``header`` -- the response header saying ``HIT`` or ``MISS`` (default ``X-Cache``);
      ``None``: none. ``cache_header`` is another name for it.
    * ``cache_private`` -- store ``Cache-Control: private`` responses too (only when every
      client may see every response, e.g. behind a per-user cache key).
    * ``cookies`` -- ``"explicit"`` (default): a request with ``Cookie`` is answered from
      the cache, and its response stored, only when the response has explicit freshness
      (``max-age``, ``s-maxage``, ``Expires``, ``public``) or varies on ``Cookie``;
      ``"ignore"``: cookies do not matter, as in RFC 9111.
    * ``targeted_fields`` -- targeted cache-control fields (RFC 9213) this cache obeys, in
      order of preference (default ``("CDN-Cache-Control",)``): the first one a response
      carries with a valid value replaces its ``Cache-Control`` and ``Expires`` here, so
      an app can give the shared caches in front of it (this one included) other rules
      than browsers. The field is passed on unchanged; ``()`` ignores them.
    * ``rules`` -- ``{path glob: ttl}``, first match wins: the ``ttl`` for matching paths;
      ``0``, ``"no-cache"`` or ``"no-store"`` means "never cache these paths".
    * ``pass_ttl`` -- seconds to remember that a URL's response may not be stored, so that
      its requests go straight to the app instead of waiting on each other; ``0``: never.
    * ``lock_timeout`` -- the longest a request waits for another one to compute the same
      response before it asks the app itself.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        cache: CacheBackend,
        ttl: float | None = 0.0,
        methods: Iterable[str] = ("GET", "HEAD"),
        statuses: Iterable[int] = DEFAULT_STATUSES,
        max_body_size: int = 2**20,
        key: KeyFunction | None = None,
        header: str | Unset | None = UNSET,
        cache_private: bool = False,
        cookies: Literal["explicit", "ignore"] = "explicit",
        targeted_fields: Iterable[str] = ("CDN-Cache-Control",),
        rules: Mapping[str, float | str | None] | None = None,
        pass_ttl: float = 30.0,
        lock_timeout: float = 10.0,
        cache_header: str | Unset | None = UNSET,
    ) -> None:
        if not isinstance(cache, CacheBackend):
            raise TypeError(
                f"cache must implement shardcache.CacheBackend (an AsyncCache), "
                f"got {type(cache).__name__}"
            )
        options = check_options(
            ttl=ttl,
            methods=methods,
            statuses=statuses,
            max_body_size=max_body_size,
            key=key,
            header=header,
            cache_header=cache_header,
            cache_private=cache_private,
            cookies=cookies,
            targeted_fields=targeted_fields,
            rules=rules,
            pass_ttl=pass_ttl,
            lock_timeout=lock_timeout,
        )
        self.app = app
        self.cache = cache
        self.max_body_size = options.max_body_size
        self._methods = options.methods
        self._pass_ttl = options.pass_ttl
        self._lock_timeout = options.lock_timeout
        self._routing = options.routing
        name = options.header
        #: The lowercase name of the HIT/MISS header, never stored with a response.
        self.cache_header_name = name
        self._hit: tuple[tuple[bytes, bytes], ...] = () if name is None else ((name, b"HIT"),)
        #: The header pair added to responses that came from the app (empty when disabled).
        self.miss_header: tuple[tuple[bytes, bytes], ...] = (
            () if name is None else ((name, b"MISS"),)
        )
        self._plans = HitPlans(self._hit)
        self._passing = PassMemo(
            interval=_PROBE_INTERVAL, horizon=options.pass_ttl, limit=MEMO_SIZE
        )
        self._refresher = Refresher(self, options.lock_timeout)
        self._breaker = Breaker()  # a failing cache is skipped for a moment (_breaker)

    # -- the request ------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                receive = self._refresher.lifespan_receive(receive)
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        if method not in self._methods or scope.get(LAYER) is self.cache:
            if method in SAFE_METHODS:
                await self.app(scope, receive, send)
            else:
                await self._unsafe(scope, receive, send, method)
            return
        policy = self._routing.policy(scope)
        key = None if policy is None else self._routing.primary_key(scope)
        headers = scope["headers"]
        if key is None or policy is None or self._breaker.tripped() or _has_body(headers):
            await self._pass(scope, receive, send)
            return
        if self._passing.passing(key) and plain_request(headers):
            # Hit-for-pass, known in this process: not even a cache read (_asgi_pass).
            await self._pass(scope, receive, send)
            return
        try:
            if not opened(self.cache):  # a lazy open waits no longer than lock_timeout
                await open_within(self.cache, self._lock_timeout)
            found = await self.cache.get(key, type=_SLOT)
            found_key = key
            if type(found) is list:  # the Vary names: one more read for this variant
                found_key = variant_key(key, vary_values(found, headers))
                found = await self.cache.get(found_key, type=StoredResponse)
        except Exception as exc:
            _warn_once("read", exc, self.cache)
            self._breaker.trip()
            await self._pass(scope, receive, send)
            return
        if type(found) is StoredResponse:
            # The hot path: a plain request for a fresh entry, settled by the entry's
            # ReusePlan (worked out once per stored response) from field names and clock.
            now = time.time()
            plan = self._plans.get(found_key, found, policy)
            if plan.reuse.fresh_for(method, headers, now=now):
                response_headers = plan.response_headers(now)
                await send({"type": START, "status": found.status, "headers": response_headers})
                await send({"type": BODY, "body": found.body if method == "GET" else b""})
                return
        if type(found) is str and plain_request(headers):
            # A "pass" URL, and a request the rules decide by its method alone: no
            # decide_request on the path of every request to an uncacheable endpoint.
            if method == "GET" and self._passing.probe_due(key) and found != TOO_LARGE:
                await self.fetch(scope, receive, send, key, policy, store=True)
            else:
                await self._pass(scope, receive, send)
            return
        request = decide_request(method, headers, policy)
        if not request.lookup:
            if request.only_if_cached:
                await self._gateway_timeout(send)
            else:
                await self.fetch(scope, receive, send, key, policy, store=request.store)
            return
        coalesce = True
        mark = found is None  # a marker where nothing is stored, if the response says so
        stale: StoredResponse | None = None  # an entry to revalidate with the app
        if type(found) is StoredResponse:
            now = time.time()
            verdict = decide_reuse(found, method, headers, policy, now=now).reuse
            if verdict is Reuse.FRESH:
                await self.serve(send, found, method, headers, now)
                return
            if verdict is Reuse.STALE_OK:
                await self.serve(send, found, method, headers, now)
                if request.store:
                    self._refresher.start(scope, key, found_key, policy, found)
                return
            coalesce = verdict is Reuse.REVALIDATE  # NO: this request cannot share it
            if coalesce:
                stale = found
        elif found is not None:  # a hit-for-pass marker
            if request.only_if_cached:
                await self._gateway_timeout(send)
            elif request.store and self._passing.probe_due(key) and found != TOO_LARGE:
                # Hit-for-miss, once a second: a response that became storable replaces
                # the marker, and a stray request cannot keep a URL uncached.
                await self.fetch(scope, receive, send, key, policy, store=True)
            else:  # hit-for-pass: straight to the app, side by side
                await self._pass(scope, receive, send)
            return
        elif request.store and (renewal := self._passing.renewal(key)) is not Renewal.MISS:
            # Its response was not storable a moment ago (its marker is being written, or
            # just expired): this request asks the app without a lease, and marks the URL
            # again if it is its turn; a storable response is stored as usual.
            coalesce = False
            mark = renewal is Renewal.MARK
        else:
            # Nothing known about this URL: a request with credentials would most likely
            # get a response it cannot share, so it does not make others wait for it.
            coalesce = not request_has_credentials(headers, policy)
        if request.only_if_cached:
            await self._gateway_timeout(send)  # RFC 9111 §5.2.1.7
        elif coalesce and request.store:
            await self._coalesced(scope, receive, send, key, found_key, policy, stale)
        else:
            await self.fetch(
                scope, receive, send, key, policy, store=request.store, mark=mark, stale=stale
            )

    async def _lookup(self, key: str, headers: Any) -> tuple[Any, str]:
        """What the cache holds for this request, and the key it holds it under."""
        found = await self.cache.get(key, type=_SLOT)
        if type(found) is list:
            variant = variant_key(key, vary_values(found, headers))
            return await self.cache.get(variant, type=StoredResponse), variant
        return found, key

    async def lookup_usable(
        self, key: str, method: str, headers: Any, policy: CachePolicy
    ) -> StoredResponse | str | None:
        """For a stampede waiter: a stored response fresh for this request, a pass
        marker (stop waiting, ask the app), or ``None`` (keep waiting)."""
        try:
            found, _ = await self._lookup(key, headers)
        except Exception as exc:
            _warn_once("read", exc, self.cache)
            return None
        if type(found) is StoredResponse:
            verdict = decide_reuse(found, method, headers, policy, now=time.time())
            return found if verdict.reuse is Reuse.FRESH else None
        return found  # type: ignore[no-any-return]

    async def serve(
        self,
        send: Send,
        stored: StoredResponse,
        method: str,
        headers: Any,
        now: float,
        tag: tuple[tuple[bytes, bytes], ...] | None = None,
    ) -> None:
        """Answer with a stored response, or a 304 (RFC 9111 §4.3.2), tagged ``tag``
        (default: HIT; an exchange that revalidated it with the app passes MISS)."""
        tag = self._hit if tag is None else tag
        if not_modified(headers, stored):
            await send(
                {
                    "type": START,
                    "status": 304,
                    "headers": not_modified_headers(stored, now=now) + list(tag),
                }
            )
            await send({"type": BODY, "body": b""})
            return
        response_headers = serve_headers(stored, now=now)
        response_headers += tag
        await send({"type": START, "status": stored.status, "headers": response_headers})
        await send({"type": BODY, "body": stored.body if method == "GET" else b""})

    async def fetch(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        key: str,
        policy: CachePolicy,
        *,
        store: bool,
        mark: bool = False,
        stale: StoredResponse | None = None,
        on_pass: Callable[[str | None], None] | None = None,
    ) -> Exchange:
        """One trip to the app, storing its response when allowed; no waiting on others.

        With ``stale`` (an entry that needs revalidation), the trip is a conditional
        request; if the app's 304 names another representation, a second, unconditional
        one follows (RFC 9111 §4.3.4).
        """
        exchange = Exchange(
            self, scope, send, key=key, policy=policy, store=store, stale=stale, on_pass=on_pass
        )
        await exchange.run(receive)
        if exchange.refetch:
            exchange = Exchange(
                self, scope, send, key=key, policy=policy, store=store, on_pass=on_pass
            )
            await exchange.run(_replayed_end)
        if exchange.stored is not None:
            self._passing.forget(key)  # hit-for-miss found it storable: serve it from now on
        elif mark and exchange.pass_reason is not None:
            await self._mark_pass(key, exchange.pass_reason)
        return exchange

    async def _coalesced(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        key: str,
        flight_key: str,
        policy: CachePolicy,
        stale: StoredResponse | None = None,
    ) -> None:
        """A miss that concurrent identical misses share: one of them reaches the app
        (with ``stale``'s validators, when there is a stale entry to revalidate)."""
        method: str = scope["method"]
        headers = scope["headers"]
        started = False
        marking: asyncio.Task[None] | None = None  # this request's marker write, if its turn

        def lookup() -> Awaitable[Any]:
            return self.lookup_usable(key, method, headers, policy)

        handover: list[Callable[[Any, bool], None]] = []  # single_flight's publish, if leader

        def passing(reason: str | None) -> None:
            # The response will not be stored, and its body is about to stream (an event
            # stream may last minutes): the requests waiting for it go to the app now.
            nonlocal marking
            if handover:
                handover[0](None, False)
            # One request per URL writes the marker (the first to find the response not
            # storable, usually the leader); from now on, requests that find nothing stored
            # yet do not queue behind a lease (_asgi_pass), and those polling from other
            # processes find it at once. Queued, not awaited: the body is not held for it.
            if reason is not None and marking is None and self._passing.marking(key):
                marking = asyncio.ensure_future(self._mark_pass(key, reason))

        async def produce() -> tuple[Any, bool]:
            nonlocal started
            started = True
            exchange = await self.fetch(
                scope, receive, send, key, policy, store=True, stale=stale, on_pass=passing
            )
            if exchange.incomplete:
                raise _Incomplete  # a failed leader: one waiting request takes over
            if exchange.stored is None:
                passing(exchange.pass_reason)  # decided at the end (stale on arrival...)
            return exchange.stored, exchange.stored is not None

        try:
            result, produced = await single_flight(
                self.cache,
                flight_key,
                lookup,
                produce,
                lock_timeout=self._lock_timeout,
                handover=handover.append,
                # A lease that could not be taken: skip the cache for a moment, this
                # request's store included (it would wait lock_timeout again).
                on_failure=lambda _: self._breaker.trip(),
            )
        except _Incomplete:
            return  # this client got what the app sent; a waiting request took over
        except Exception as exc:
            if started:
                raise  # the app's own error
            _warn_once("lease", exc, self.cache)
            self._breaker.trip()
            await self._pass(scope, receive, send)
            return
        finally:
            if marking is not None:
                await marking  # owned by this request; bounded by lock_timeout, never raises
        if produced:
            return
        if type(result) is StoredResponse:
            now = time.time()
            if decide_reuse(result, method, headers, policy, now=now).reuse is Reuse.FRESH:
                await self.serve(send, result, method, headers, now)
                return
        elif type(result) is str:  # another process marked it: pass from now on, here too
            self._passing.note(key)
            if result == TOO_LARGE:
                await self._pass(scope, receive, send)
                return
        if type(result) is StoredResponse and flight_key == key:
            # The URL was cold and the leader's response varies: its Vary names are stored
            # now, so requests for another variant coalesce again, each on its own.
            names = vary_names(result.headers)
            if names and (variant := variant_key(key, vary_values(names, headers))) != key:
                await self._coalesced(scope, receive, send, key, variant, policy)
                return
        # A response this request may not share: ask the app.
        await self.fetch(scope, receive, send, key, policy, store=True)

    async def _pass(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Straight to the app: nothing looked up, nothing stored; only tagged MISS."""
        if not self.miss_header:
            await self.app(scope, receive, send)
            return
        miss = self.miss_header

        async def tagged(message: Message) -> None:
            if message["type"] == START:
                message = {**message, "headers": [*message.get("headers", ()), *miss]}
            await send(message)

        await self.app(scope, receive, tagged)

    async def _gateway_timeout(self, send: Send) -> None:
        # RFC 9111 §5.2.1.7: only-if-cached and nothing stored that may answer.
        headers = [(b"content-length", b"0"), *self.miss_header]
        await send({"type": START, "status": 504, "headers": headers})
        await send({"type": BODY, "body": b""})

    def tag_miss(self, message: Message, headers: list[tuple[bytes, bytes]]) -> Message:
        """``message`` (a response start) with ``headers`` and the MISS header."""
        return {**message, "headers": [*headers, *self.miss_header]}

    # -- the cache ----------------------------------------------------------------------
    async def store(self, key: str, stored: StoredResponse, ttl: float | None) -> None:
        """Write a response under its primary key, or as a ``Vary`` variant of it."""
        names = vary_names(stored.headers)
        if names:
            variant = variant_key(key, stored.vary)
            await self._write("write", self.cache.set(variant, stored, ttl=ttl, tag=key))
            await self._write("write", self.cache.set(key, list(names), ttl=ttl))
        else:
            await self._write("write", self.cache.set(key, stored, ttl=ttl))

    async def _mark_pass(self, key: str, reason: str) -> None:
        # Hit-for-pass: only where nothing live is stored, so that it never hides a
        # response (a request cannot use it to evict a good entry).
        # The next GET reads it back and probes the app (hit-for-miss) before this process
        # passes without reading (_asgi_pass).
        self._passing.marked(key)
        if self._pass_ttl > 0:
            await self._write("write", self.cache.add(key, reason, ttl=self._pass_ttl))

    async def _write(self, what: str, operation: Awaitable[Any]) -> None:
        """A cache write on a response's path: bounded by lock_timeout, failing open;
        skipped while the cache is known to fail (_breaker)."""
        if self._breaker.tripped():
            if inspect.iscoroutine(operation):
                operation.close()  # never started: nothing to undo, no "never awaited"
            return
        try:
            await asyncio.wait_for(operation, self._lock_timeout)
        except Exception as exc:  # TimeoutError included: a shard locked for too long
            _warn_once(what, exc, self.cache)
            self._breaker.trip()

    async def _unsafe(self, scope: Scope, receive: Receive, send: Send, method: str) -> None:
        """An unsafe request: once it succeeds, drop what is stored for its URL (§4.4)."""

        async def watch(message: Message) -> None:
            if message["type"] == START and 200 <= message["status"] < 400:
                await self._invalidate(scope, method, message["status"], message.get("headers", ()))
            await send(message)

        await self.app(scope, receive, watch)

    async def _invalidate(self, scope: Scope, method: str, status: int, headers: Any) -> None:
        keys = self._routing.invalidated(scope, method, status, headers)
        for key in keys:
            self._passing.forget(key)  # other processes notice within _PROBE_INTERVAL
        if not keys or self._breaker.tripped():
            return  # (not at all while the cache is known to fail: it would only wait)
        # The entries (or Vary lists, or pass markers) and their variants, all at once and
        # bounded once by lock_timeout.
        writes = [op for key in keys for op in (self.cache.delete(key), self.cache.evict(key))]
        await self._write("invalidation", asyncio.gather(*writes))


class _Incomplete(Exception):
    """The app returned mid-body: the leader's response is nothing to share."""


async def _replayed_end() -> Message:
    """``receive`` for asking the app a second time: the request body, read by the first
    trip, was empty (a GET or HEAD the cache handles carries none)."""
    return {"type": "http.request", "body": b"", "more_body": False}


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a GET/HEAD request carries content. The key leaves the body out, so two
    requests with other bodies (a search API taking a query document) would share one
    answer: such requests go to the app, uncached."""
    for name, value in headers:
        if name == b"content-length":
            if value.strip() not in (b"", b"0"):
                return True
        elif name == b"transfer-encoding":
            return True
    return False
