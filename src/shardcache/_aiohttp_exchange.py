"""The I/O loop of :class:`~shardcache.aiohttp.CachedSession`: lookup, reuse, single flight,
conditional requests, storing. RFC 9111 decisions come from :mod:`shardcache._http`; this
module only performs them, over a :class:`~shardcache.CacheBackend` and ``send`` (aiohttp's
own ``ClientSession._request``)::

    lookup -> FRESH / STALE_OK (refresh in background) -----> stored response, from_cache=True
           -> REVALIDATE (stale) -> single flight -> origin, with the entry's validators
                                                     304 -> freshen, store, stored body
                                                     200 -> store, the real response
                                                     error / 5xx -> stale, if allowed
           -> miss -> single flight -> origin -> store -> the real response (waiters: a copy)

A HEAD is answered from the GET entry while that may be reused (RFC 9110 §9.3.2), else from
its own HEAD entry (``head_key``), which goes through the same loop: a HEAD response is
stored under GET's rules but never at the GET key, since it has no body to answer a GET.

A cache failure never reaches the caller, whatever the backend raises (a
:class:`~shardcache.CacheError`, or a third-party backend's own connection errors): it is
logged once per cause and the request goes to the origin without the cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, NamedTuple, TypeVar

import aiohttp
import msgspec
from aiohttp.typedefs import StrOrURL
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ._aiohttp_response import CachedResponse, refill_content, usual_reason
from ._aiohttp_storage import Found, head_key, invalidate, lookup, redirects, store
from ._breaker import Breaker, open_within, opened
from ._http import (
    ORIGIN_ERROR_STATUSES,
    CachePolicy,
    HeaderList,
    RequestDecision,
    Reuse,
    StoredResponse,
    build_stored_response,
    conditional_headers,
    decide_reuse,
    decide_store,
    freshen,
    invalidation_keys,
    not_modified,
    not_modified_headers,
    primary_key_url,
    redirect_ttl,
    serve_headers,
    storage_ttl,
    unconditional_headers,
)
from ._stampede import single_flight
from ._types import CacheBackend

_R = TypeVar("_R", bound=aiohttp.ClientResponse)
__all__ = ["Call", "HttpCache", "raw_headers"]

logger = logging.getLogger("shardcache.aiohttp")

#: aiohttp's ``ClientSession._request(method, str_or_url, **kwargs)``.
Send = Callable[..., Awaitable[aiohttp.ClientResponse]]

_ORIGIN_FAILURES: Final = (aiohttp.ClientError, asyncio.TimeoutError)
_REUSABLE: Final = (Reuse.FRESH, Reuse.STALE_OK)


class Call(NamedTuple):
    """One request through the cache, with what the RFC 9111 decisions need."""

    method: str
    target: StrOrURL
    kwargs: dict[str, Any]
    url: URL
    primary: str
    headers: CIMultiDict[str]  # the request header fields as aiohttp will send them
    raw: HeaderList  # the same, as raw byte pairs for shardcache._http
    policy: CachePolicy
    decision: RequestDecision
    follow: bool  # allow_redirects

    @property
    def key(self) -> str:
        """Where responses to this request are stored: ``primary`` for a GET, its
        :func:`head_key` for a HEAD (no body: it must never answer a GET)."""
        return head_key(self.primary) if self.method == "HEAD" else self.primary


class _Outcome(NamedTuple):
    """What going to the origin gave one caller, and what other callers may be served."""

    response: aiohttp.ClientResponse | None  # this caller's real response
    stored: StoredResponse | None  # a response any waiter may be served
    url: URL  # the URL a response built from ``stored`` reports
    error: bool = False  # ``stored`` is stale, served because the origin failed
    via_alias: bool = False  # ``stored`` was reached by following redirects


def raw_headers(headers: Mapping[str, str]) -> HeaderList:
    """aiohttp's header fields as the raw byte pairs :mod:`shardcache._http` reads."""
    return [
        (name.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape"))
        for name, value in headers.items()
    ]


def _for_origin(headers: Any, extra: HeaderList) -> CIMultiDict[str]:
    """The caller's header fields without its validators, plus ``extra`` (ours)."""
    fields = unconditional_headers(raw_headers(CIMultiDict(headers or ())))  # RFC 9111 §4.3.2
    return CIMultiDict(
        (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
        for name, value in [*fields, *extra]
    )


def _url_of(primary: str) -> URL:
    # A primary key is "GET <normalized absolute URL>", already percent-encoded.
    return URL(primary.partition(" ")[2], encoded=True)


def _final_key(call: Call, response: aiohttp.ClientResponse) -> str:
    """Where the response to ``call`` is stored: under the URL the redirects led to."""
    if not response.history:
        return call.key
    try:
        primary = primary_key_url("GET", str(response.url))
    except ValueError:
        return call.key
    return head_key(primary) if call.method == "HEAD" else primary


def _own(call: Call, found: Found) -> bool:
    """Whether ``found`` is an entry of the request's own method (a HEAD may find GET's)."""
    return found.primary.startswith(f"{call.method} ")


class HttpCache:
    """The cache side of one :class:`~shardcache.aiohttp.CachedSession`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        send: Send,
        cache: CacheBackend,
        *,
        response_class: type[CachedResponse],
        max_body_size: int | None,
        lock_timeout: float,
    ) -> None:
        self.session = session
        self.send = send
        self.cache = cache
        self.response_class = response_class
        self.max_body_size = max_body_size
        self.lock_timeout = lock_timeout
        self.clock: Callable[[], float] = time.time  # Unix time; the tests move it
        self.refreshing: dict[str, asyncio.Task[None]] = {}
        self._warned: set[str] = set()
        self._breaker = Breaker()  # a failing cache is skipped for a moment (_breaker)

    async def aclose(self) -> None:
        """Cancel the background revalidations and wait for them to end."""
        tasks = list(self.refreshing.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def request(self, call: Call) -> aiohttp.ClientResponse:
        """Answer ``call`` from the cache, the origin, or another caller's fetch."""
        found: Found | None = None
        healthy = not self._breaker.tripped()
        if healthy and call.decision.lookup:
            try:
                if not opened(self.cache):  # a lazy open waits no longer than lock_timeout
                    await open_within(self.cache, self.lock_timeout)
                found = await self._lookup(call)
            except Exception as exc:  # any backend's failure: fail open
                self._warn(exc)
                healthy = False
        if found is not None:
            now = self.clock()
            verdict = decide_reuse(found.stored, call.method, call.raw, call.policy, now=now)
            if verdict.reuse in _REUSABLE:
                if verdict.reuse is Reuse.STALE_OK:
                    self._refresh_later(call, found)
                return await self._respond(call, found.stored, self._found_url(call, found))
            if verdict.reuse is Reuse.NO:
                found = None  # e.g. another Vary variant: its validators are not ours
        if call.decision.only_if_cached:  # RFC 9111 §5.2.1.7
            now = self.clock()
            gateway_timeout = StoredResponse(
                status=504, headers=[], body=b"", request_time=now, response_time=now
            )
            return await self._respond(call, gateway_timeout, call.url)
        if not healthy or not call.decision.store:
            outcome, _ = await self._fetch(call, found, use_cache=healthy)
        else:
            since = time.monotonic()
            outcome, produced = await single_flight(
                self.cache,
                call.key,
                lambda: self._lookup_fresh(call),
                lambda: self._fetch(call, found, since=since),
                lock_timeout=self._wait_limit(call),
                on_failure=self._lease_failed,
            )
            if not produced:
                if self._acceptable(call, outcome):  # another caller's: serve a copy
                    # Reporting the URL this caller asked for (its query order, its
                    # fragment), unless redirects led elsewhere.
                    url = outcome.url if outcome.via_alias else call.url
                    outcome = outcome._replace(response=None, url=url)
                else:
                    outcome, _ = await self._fetch(call, found, since=since)
        if outcome.response is not None:
            if outcome.stored is None or not not_modified(call.raw, outcome.stored):
                return await self._checked(call, outcome.response)
            outcome.response.release()  # the caller's validators match: answer 304
        assert outcome.stored is not None
        return await self._respond(call, outcome.stored, outcome.url)

    async def invalidate_after(
        self, method: str, url: str, response: aiohttp.ClientResponse
    ) -> None:
        """RFC 9111 §4.4: a successful unsafe request drops the stored responses."""
        first = response.history[0] if response.history else response
        try:
            keys = invalidation_keys(method, first.status, url, first.raw_headers, sort_query=True)
            if keys and not self._breaker.tripped():
                await asyncio.wait_for(invalidate(self.cache, keys), self.lock_timeout)
        except ValueError:
            return
        except Exception as exc:  # any backend's failure: fail open
            self._warn(exc)

    async def _lookup(self, call: Call) -> Found | None:
        """The entry that answers ``call``, or that it revalidates or falls back on.

        A HEAD reads the GET entry first and takes it while it may be reused (it is the
        better answer: RFC 9110 §9.3.2). Otherwise its own HEAD entry, unless a GET
        response stored after it supersedes it; failing both, the GET entry, which is then
        only served if the origin fails (stale-if-error), never revalidated by a HEAD.
        """
        aliases = "max_redirects" not in call.kwargs
        found = await lookup(
            self.cache, call.primary, call.raw, follow_alias=call.follow, aliases=aliases
        )
        if call.method != "HEAD":
            return found
        if found is not None:
            verdict = decide_reuse(
                found.stored, call.method, call.raw, call.policy, now=self.clock()
            )
            if verdict.reuse in _REUSABLE:
                return found
            if verdict.reuse is Reuse.NO:
                found = None  # another Vary variant: not even a fallback
        own = await lookup(
            self.cache, call.key, call.raw, follow_alias=call.follow, aliases=aliases
        )
        if own is None or (
            found is not None and found.stored.response_time > own.stored.response_time
        ):
            return found
        return own

    # -- the single flight's two callbacks ------------------------------------------------
    async def _lookup_fresh(self, call: Call) -> _Outcome | None:
        """A response another caller (in any process) has just stored."""
        try:
            found = await self._lookup(call)
        except Exception as exc:  # any backend's failure: fail open
            self._warn(exc)
            return None
        if found is None:
            return None
        verdict = decide_reuse(found.stored, call.method, call.raw, call.policy, now=self.clock())
        if verdict.reuse is not Reuse.FRESH:
            return None
        return _Outcome(None, found.stored, self._found_url(call, found), via_alias=found.via_alias)

    async def _fetch(
        self,
        call: Call,
        found: Found | None,
        *,
        use_cache: bool = True,
        since: float | None = None,
    ) -> tuple[_Outcome, bool]:
        """Go to the origin; store what may be stored. ``(outcome, shareable)``.

        ``since``: when the caller started waiting for another request's fetch; its own
        fetch then gets what is left of its total timeout, not a fresh one."""
        kwargs = call.kwargs
        if since is not None:
            kwargs = self._within_budget(call, kwargs, time.monotonic() - since)
        conditional: HeaderList = []
        if use_cache and call.decision.store:
            # The response is wanted for storing: the cache's validators replace the
            # caller's, whose preconditions are evaluated against the result (§4.3.2).
            # Only the request's own entry is revalidated: a 304 to a HEAD is not
            # about the GET entry it may have found.
            if found is not None and _own(call, found):
                conditional = conditional_headers(found.stored)  # RFC 9111 §4.3.1
            if conditional or unconditional_headers(call.raw) != call.raw:
                kwargs = {**kwargs, "headers": _for_origin(kwargs.get("headers"), conditional)}
        # The caller's raise_for_status applies to what it is given (_respond, _checked),
        # after the response is stored: a 404 is an answer worth storing like a 200.
        kwargs = {**kwargs, "raise_for_status": False}
        started = self.clock()
        try:
            response = await self.send(call.method, call.target, **kwargs)
        except _ORIGIN_FAILURES as exc:
            return self._stale(call, found, exc), True
        received = self.clock()
        if response.status in ORIGIN_ERROR_STATUSES and found is not None:
            stale = self._stale_or_none(call, found)
            if stale is not None:
                response.release()
                return stale, True
        if conditional and response.status == 304:
            return await self._freshen(call, found, response, started, received)
        if not use_cache or self._breaker.tripped():
            # Not stored when the cache just failed (its lease could not be taken): the
            # store would wait as long again.
            return _Outcome(response, None, response.url), False
        try:
            stored = await self._store(call, response, started, received)
        except _ORIGIN_FAILURES as exc:  # the body did not arrive whole
            return self._stale(call, found, exc), True
        outcome = _Outcome(response, stored, response.url, via_alias=bool(response.history))
        return outcome, stored is not None

    def _acceptable(self, call: Call, outcome: _Outcome) -> bool:
        """Whether another caller's outcome answers this request (its Vary, its limits)."""
        if outcome.stored is None or (
            outcome.via_alias and (not call.follow or "max_redirects" in call.kwargs)
        ):
            return False
        if call.follow and redirects(outcome.stored):
            return False  # a redirect that another request did not follow; this one does
        verdict = decide_reuse(
            outcome.stored,
            call.method,
            call.raw,
            call.policy,
            now=self.clock(),
            error=outcome.error,
        )
        return verdict.reuse in _REUSABLE

    def _wait_limit(self, call: Call) -> float:
        """How long this request may wait for another one's fetch: ``lock_timeout``, and
        no longer than its own total timeout (after which it fetches itself)."""
        total = self._timeout(call).total
        return min(self.lock_timeout, total) if total and total > 0 else self.lock_timeout

    def _timeout(self, call: Call) -> aiohttp.ClientTimeout:
        """The request's timeout: its own ``timeout=`` (a number is a total), else the
        session's."""
        timeout = call.kwargs.get("timeout")
        if isinstance(timeout, aiohttp.ClientTimeout):
            return timeout
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
            return aiohttp.ClientTimeout(total=timeout)
        return self.session.timeout

    def _within_budget(self, call: Call, kwargs: dict[str, Any], waited: float) -> dict[str, Any]:
        """``kwargs`` with a total timeout cut by ``waited``: aiohttp's ``total`` bounds
        the whole request, the wait for another caller's fetch included."""
        timeout = self._timeout(call)
        if not timeout.total or timeout.total <= 0 or waited <= 0:
            return kwargs
        left = timeout.total - waited
        if left <= 0:  # spent waiting: a TimeoutError, and a ClientError too
            raise aiohttp.ServerTimeoutError(f"timeout of {timeout.total} s spent waiting")
        cut = aiohttp.ClientTimeout(
            total=left,
            connect=timeout.connect,
            sock_read=timeout.sock_read,
            sock_connect=timeout.sock_connect,
            ceil_threshold=timeout.ceil_threshold,
        )
        return {**kwargs, "timeout": cut}

    def _found_url(self, call: Call, found: Found) -> URL:
        return _url_of(found.primary) if found.via_alias else call.url

    # -- origin failures (RFC 5861 §4) -------------------------------------------------------
    def _stale_or_none(self, call: Call, found: Found | None) -> _Outcome | None:
        """The stale entry, when it may be served because the origin failed."""
        if found is None:
            return None
        now = self.clock()
        verdict = decide_reuse(
            found.stored, call.method, call.raw, call.policy, now=now, error=True
        )
        if verdict.reuse not in _REUSABLE:
            return None
        url = self._found_url(call, found)
        logger.info("shardcache: %s failed; serving the stored response (%s)", url, verdict.reason)
        return _Outcome(None, found.stored, url, error=True, via_alias=found.via_alias)

    def _stale(self, call: Call, found: Found | None, exc: BaseException) -> _Outcome:
        """The stale entry after ``exc``, or ``exc`` raised again."""
        if isinstance(exc, aiohttp.ClientResponseError) and exc.status not in ORIGIN_ERROR_STATUSES:
            raise exc  # raise_for_status on a 4xx: an answer, not an origin failure
        stale = self._stale_or_none(call, found)
        if stale is None:
            raise exc
        return stale

    # -- storing ---------------------------------------------------------------------------
    async def _freshen(
        self,
        call: Call,
        found: Found | None,
        response: aiohttp.ClientResponse,
        started: float,
        received: float,
    ) -> tuple[_Outcome, bool]:
        """A 304 to the cache's conditional request: the stored body, the new headers."""
        assert found is not None
        same = _final_key(call, response) == found.primary
        headers = response.raw_headers
        response.release()
        fresh = None
        if same:  # else the redirects now lead elsewhere: the 304 is not about our entry
            fresh = freshen(
                found.stored,
                headers,
                request_time=started,
                response_time=received,
                policy=call.policy,
            )
        if fresh is None:  # RFC 9111 §4.3.4: another representation; fetch it whole
            return await self._fetch(call, None)
        outcome = _Outcome(None, fresh, self._found_url(call, found), via_alias=found.via_alias)
        decision = decide_store("GET", call.raw, fresh.status, fresh.headers, call.policy)
        ttl = storage_ttl(fresh, call.policy, now=received, revalidate=True)
        try:
            if decision.store and (ttl is None or ttl > 0):
                limit = self._wait_limit(call)
                await asyncio.wait_for(store(self.cache, found.primary, fresh, ttl=ttl), limit)
                return outcome, True
            await asyncio.wait_for(invalidate(self.cache, [found.primary]), self.lock_timeout)
        except Exception as exc:  # any backend's failure: fail open
            self._warn(exc)
        return outcome, False

    async def _store(
        self, call: Call, response: aiohttp.ClientResponse, started: float, received: float
    ) -> StoredResponse | None:
        """Read and store the response when RFC 9111 §3 and the options allow it."""
        if not call.decision.store:
            return None
        # A HEAD response is stored under GET's rules (RFC 9111 §3 allows it), read for
        # the HEAD exchange itself: its status, its fields, this request.
        decision = decide_store("GET", call.raw, response.status, response.raw_headers, call.policy)
        if not decision.store:
            logger.debug("shardcache: %s not stored: %s", response.url, decision.reason)
            return None
        if call.method == "HEAD":
            body = b""  # its Content-Length is the GET body's: no size to limit here
        else:
            limit = self.max_body_size
            if limit is not None and (response.content_length or 0) > limit:
                return None  # unread: the caller streams it from the network untouched
            body = await response.read()
            # read() drained the stream: the caller may read it as a stream too.
            refill_content(response, body)
            if limit is not None and len(body) > limit:
                return None
        stored = build_stored_response(
            # The fields the lookup keys Vary with: as aiohttp sends them, before a client
            # middleware adds any (a hit never runs the middlewares).
            request_headers=call.raw,
            status=response.status,
            headers=response.raw_headers,
            body=body,
            request_time=started,
            response_time=received,
            policy=call.policy,
        )
        if response.reason and response.reason != usual_reason(response.status):
            stored = msgspec.structs.replace(stored, reason=response.reason)  # rare: a copy
        ttl = storage_ttl(stored, call.policy, now=received, revalidate=True)
        if ttl is not None and ttl <= 0:
            return None
        # The final response lives under the final URL; the requested URL, when the
        # redirects led elsewhere, becomes an alias of it for as long as every redirect
        # on the way may be reused (a no-store, Set-Cookie or 302 redirect: not at all).
        alias_ttl = ttl
        for hop in response.history:
            hop_ttl = redirect_ttl(hop.status, hop.raw_headers, call.raw, call.policy, now=received)
            if hop_ttl is not None and (alias_ttl is None or hop_ttl < alias_ttl):
                alias_ttl = hop_ttl
        aliases = (call.key,) if alias_ttl is None or alias_ttl > 0 else ()
        try:
            where = _final_key(call, response)
            # Bounded like a wait for another caller: a locked shard must not hold the
            # response past lock_timeout or the request's own timeout.
            await asyncio.wait_for(
                store(self.cache, where, stored, ttl=ttl, aliases=aliases, alias_ttl=alias_ttl),
                self._wait_limit(call),
            )
        except Exception as exc:  # any backend's failure: fail open
            self._warn(exc)
            return None
        return stored

    # -- answering from the cache ------------------------------------------------------------
    async def _respond(self, call: Call, stored: StoredResponse, url: URL) -> CachedResponse:
        """A response answered by the cache (a 304 when the client's validators match)."""
        now = self.clock()
        reason = None
        if not_modified(call.raw, stored):  # RFC 9111 §4.3.2
            status, headers, body = 304, not_modified_headers(stored, now=now), b""
        else:
            status, headers = stored.status, serve_headers(stored, now=now)
            body = stored.body if call.method == "GET" else b""
            reason = stored.reason
        session = self.session
        response = self.response_class._rebuild(
            method=call.method,
            url=url,
            status=status,
            reason=reason,
            raw_headers=headers,
            body=body,
            request_headers=CIMultiDictProxy(call.headers),
            session=session,
            loop=session._loop,
        )
        return await self._checked(call, response)

    async def _checked(self, call: Call, response: _R) -> _R:
        """The caller's ``raise_for_status`` (the request's, else the session's) applied
        to the response it gets, from the cache or from the origin."""
        check = call.kwargs.get("raise_for_status")
        if check is None:
            check = self.session.raise_for_status
        if callable(check):
            await check(response)
        elif check:
            response.raise_for_status()
        return response

    # -- background revalidation, failures -------------------------------------------------
    def _refresh_later(self, call: Call, found: Found) -> None:
        """RFC 5861 §3: serve the stale entry now, revalidate it once in the background."""
        key = call.key
        # A HEAD cannot refresh the GET entry it was served from (it brings no body).
        if not _own(call, found) or key in self.refreshing:
            return
        task = asyncio.get_running_loop().create_task(self._refresh(call, found))
        self.refreshing[key] = task
        task.add_done_callback(lambda _: self.refreshing.pop(key, None))

    async def _refresh(self, call: Call, found: Found) -> None:
        try:
            outcome, produced = await single_flight(
                self.cache,
                call.key,
                lambda: self._lookup_fresh(call),
                lambda: self._fetch(call, found),
                lock_timeout=self.lock_timeout,
            )
        except Exception as exc:  # the stale entry keeps being served meanwhile
            logger.warning("shardcache: background revalidation of %s failed: %r", call.url, exc)
            return
        if produced and outcome.response is not None:
            outcome.response.release()

    def _lease_failed(self, exc: Exception) -> None:
        """The stampede lease could not be taken (logged): skip the cache for a moment,
        this request's store included."""
        self._breaker.trip()

    def _warn(self, exc: Exception) -> None:
        self._breaker.trip()
        cause = type(exc).__name__
        if cause not in self._warned:
            self._warned.add(cause)
            logger.warning(
                "shardcache: the HTTP cache failed (%r); requests go to the network", exc
            )
