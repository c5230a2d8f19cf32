"""A cached :class:`aiohttp.ClientSession` for scrapers and API clients (API.md §4).

::

    from shardcache import AsyncCache
    from shardcache.aiohttp import CachedSession

    async with AsyncCache("/tmp/http-cache") as cache:
        async with CachedSession(cache=cache, ttl=3600) as session:
            async with session.get("https://example.com/") as resp:
                html = await resp.text()
                resp.from_cache  # False the first time, True afterwards, in any process

:class:`CachedSession` is a private HTTP cache (RFC 9111) in front of aiohttp. The rules
live in :mod:`shardcache._http` (``CachePolicy(shared=False)``, one per ``urls_ttl``
pattern), the entries in any :class:`~shardcache.CacheBackend`, and the I/O loop between
them in ``_aiohttp_exchange``; this module adapts aiohttp: it overrides
``ClientSession._request`` (every verb goes through it), works out the URL and the header
fields aiohttp will send, and leaves everything it does not cache to aiohttp untouched.

Concurrent requests for one URL reach the network once, in this process and in every
process sharing the cache (``shardcache._stampede.single_flight``); a response that may not
be stored (``no-store``, ``Set-Cookie``...) is never handed to the other waiters. A failing
cache (closed, disk full, corrupt shard) is logged once per cause and the request goes to
the network as if there were no cache.

Importing this module without aiohttp raises ``ImportError`` naming the extra to install.
"""

from __future__ import annotations

try:
    import aiohttp
    from aiohttp import hdrs
except ImportError as exc:
    raise ImportError(
        "shardcache.aiohttp needs aiohttp: pip install 'shardcache[aiohttp]'"
    ) from exc

import warnings
from collections.abc import Iterable, Mapping
from http.cookies import BaseCookie, Morsel
from typing import TYPE_CHECKING, Any, Final

from aiohttp.http import SERVER_SOFTWARE
from aiohttp.typedefs import StrOrURL
from multidict import CIMultiDict
from yarl import URL

from ._aiohttp_exchange import Call, HttpCache, raw_headers
from ._aiohttp_options import (
    DO_NOT_CACHE,
    UrlRules,
    check_flag,
    check_lock_timeout,
    check_max_body_size,
    check_methods,
    check_stale_if_error,
    check_statuses,
)
from ._aiohttp_response import CachedResponse
from ._http import (
    HEURISTICALLY_CACHEABLE_STATUSES,
    SAFE_METHODS,
    CachePolicy,
    decide_request,
    primary_key_url,
)
from ._options import check_ttl
from ._types import CacheBackend

if TYPE_CHECKING:
    from aiohttp.client import _BaseRequestContextManager

__all__ = ["DO_NOT_CACHE", "CachedResponse", "CachedSession"]
CachedResponse.__module__ = __name__  # public here, whatever private module holds it

_MIB: Final = 2**20


def _cookie_header(existing: str | None, jar: BaseCookie[str], extra: Any) -> str | None:
    # As ClientRequest.update_cookies builds it: "name=value; name=value".
    parts = [existing] if existing else []
    parts += [f"{name}={morsel.coded_value}" for name, morsel in jar.items()]
    pairs = extra.items() if isinstance(extra, Mapping) else (extra or ())
    for name, value in pairs:
        parts.append(f"{name}={value.coded_value if isinstance(value, Morsel) else value}")
    return "; ".join(parts) or None


with warnings.catch_warnings():
    # aiohttp "discourages" subclassing ClientSession because its internals change. The
    # session overrides one of them, _request (every verb and ws_connect go through it),
    # as aiohttp-client-cache does; the tests pin each internal it relies on.
    warnings.simplefilter("ignore", DeprecationWarning)

    class CachedSession(aiohttp.ClientSession):
        """An :class:`aiohttp.ClientSession` whose GET/HEAD responses live in ``cache``.

        Every ``aiohttp.ClientSession`` argument is accepted (``base_url``, ``headers``,
        ``timeout``, ``connector``...); the cache options are keyword-only:

        * ``cache`` -- a :class:`~shardcache.CacheBackend` (an ``AsyncCache``); not closed
          by the session.
        * ``ttl`` -- the freshness lifetime of a response that gives none (no
          ``max-age``/``Expires``), in seconds; ``None`` (default): it never goes stale;
          ``0`` (``DO_NOT_CACHE``): do not cache. Stale entries with ``ETag`` or
          ``Last-Modified`` stay in the cache and are revalidated.
        * ``urls_ttl`` -- ``{glob on host[:port]/path: ttl}``, first match wins, ``0`` =
          do not cache, e.g. ``{"*.example.com/api/*": 60, "example.com/static/*": None}``.
        * ``cache_control`` -- honour ``Cache-Control``/``Pragma``/``Expires`` of requests
          and responses (default); ``False``: every storable response is fresh for ``ttl``.
        * ``methods`` -- of ``{"GET", "HEAD"}``; HEAD is answered from the GET entry, else
          from a stored HEAD response (kept apart: it never answers a GET).
        * ``statuses`` -- the statuses stored (RFC 9110 §15.1 heuristically cacheable ones).
        * ``allow_set_cookie`` -- store responses with ``Set-Cookie`` (default: never).
        * ``stale_if_error`` -- ``True`` or seconds: serve a stale entry when the origin
          fails (connection error, timeout, 500/502/503/504).
        * ``max_body_size`` -- larger bodies are not stored (64 MiB; ``None``: no limit);
          one announced larger by ``Content-Length`` is not even read by the session.
        * ``lock_timeout`` -- how long a request waits for another one fetching the same
          URL (in any process) before fetching it itself.

        Responses are :class:`CachedResponse` (``response_class`` must subclass it).
        Example::

            async with CachedSession(cache=cache, urls_ttl={"example.com/api/*": 60}) as s:
                async with s.get("https://example.com/api/items") as resp:
                    items, hit = await resp.json(), resp.from_cache
        """

        ATTRS = aiohttp.ClientSession.ATTRS | frozenset(
            {
                "_sc_http",
                "_sc_rules",
                "_sc_methods",
            }
        )

        def __init__(
            self,
            base_url: StrOrURL | None = None,
            *,
            cache: CacheBackend,
            ttl: float | None = None,
            urls_ttl: Mapping[str, float | None] | None = None,
            cache_control: bool = True,
            methods: Iterable[str] = ("GET", "HEAD"),
            statuses: Iterable[int] = HEURISTICALLY_CACHEABLE_STATUSES,
            allow_set_cookie: bool = False,
            stale_if_error: bool | float = False,
            max_body_size: int | None = 64 * _MIB,
            lock_timeout: float = 60.0,
            **kwargs: Any,
        ) -> None:
            # Every option is checked before aiohttp opens anything.
            if not isinstance(cache, CacheBackend):
                raise TypeError(f"cache={cache!r}: expected a shardcache.CacheBackend")
            response_class = kwargs.setdefault("response_class", CachedResponse)
            if not (
                isinstance(response_class, type) and issubclass(response_class, CachedResponse)
            ):
                raise TypeError(
                    f"response_class={response_class!r}: expected a subclass of "
                    "shardcache.aiohttp.CachedResponse"
                )
            common: dict[str, Any] = {
                "shared": False,
                "cache_control": check_flag("cache_control", cache_control),
                "cacheable_statuses": check_statuses(statuses),
                "allow_set_cookie": check_flag("allow_set_cookie", allow_set_cookie),
                "stale_if_error": check_stale_if_error(stale_if_error),
            }

            def make_policy(seconds: float | None) -> CachePolicy | None:
                if seconds == DO_NOT_CACHE:
                    return None
                return CachePolicy(default_ttl=seconds, **common)

            rules = UrlRules(urls_ttl or {}, make_policy, make_policy(check_ttl(ttl)))
            methods_ = check_methods(methods)
            max_body = check_max_body_size(max_body_size)
            lock_timeout = check_lock_timeout(lock_timeout)
            super().__init__(base_url, **kwargs)
            self._sc_rules = rules
            self._sc_methods = methods_
            self._sc_http = HttpCache(
                self,
                super()._request,
                cache,
                response_class=response_class,
                max_body_size=max_body,
                lock_timeout=lock_timeout,
            )

        if TYPE_CHECKING:
            # Runtime is aiohttp's; these only say that responses are CachedResponse.
            def request(
                self, method: str, url: StrOrURL, **kwargs: Any
            ) -> _BaseRequestContextManager[CachedResponse]: ...
            def get(
                self, url: StrOrURL, **kwargs: Any
            ) -> _BaseRequestContextManager[CachedResponse]: ...
            def head(
                self, url: StrOrURL, **kwargs: Any
            ) -> _BaseRequestContextManager[CachedResponse]: ...
            def options(
                self, url: StrOrURL, **kwargs: Any
            ) -> _BaseRequestContextManager[CachedResponse]: ...
            def post(
                self, url: StrOrURL, **kwargs: Any
            ) -> _BaseRequestContextManager[CachedResponse]: ...
            def put(
                self, url: StrOrURL, **kwargs: Any
            ) -> _BaseRequestContextManager[CachedResponse]: ...
            def patch(
                self, url: StrOrURL, **kwargs: Any
            ) -> _BaseRequestContextManager[CachedResponse]: ...
            def delete(
                self, url: StrOrURL, **kwargs: Any
            ) -> _BaseRequestContextManager[CachedResponse]: ...

        async def __aenter__(self) -> CachedSession:
            return self

        async def close(self) -> None:
            """Cancel background revalidations, then close as aiohttp does (not the cache)."""
            await self._sc_http.aclose()
            await super().close()

        # -- the request path ---------------------------------------------------------
        async def _request(
            self, method: str, str_or_url: StrOrURL, **kwargs: Any
        ) -> aiohttp.ClientResponse:
            method = method.upper()
            if self.closed:  # as aiohttp does, even for an answer the cache holds
                raise RuntimeError("Session is closed")
            call = self._sc_prepare(method, str_or_url, kwargs)
            if call is not None:
                return await self._sc_http.request(call)
            response = await super()._request(method, str_or_url, **kwargs)
            if method not in SAFE_METHODS:
                try:
                    url = str(self._sc_url(str_or_url, kwargs))
                except (ValueError, TypeError):
                    return response
                await self._sc_http.invalidate_after(method, url, response)
            return response

        def _sc_prepare(self, method: str, target: StrOrURL, kwargs: dict[str, Any]) -> Call | None:
            """The cached request, or ``None`` when it bypasses the cache."""
            if method not in self._sc_methods:
                return None
            if kwargs.get("data") is not None or kwargs.get("json") is not None:
                return None  # a request body is not part of the key
            decompress = kwargs.get("auto_decompress")
            if (self.auto_decompress if decompress is None else decompress) is False:
                return None  # stored bodies are decoded; this caller wants them encoded
            try:
                url = self._sc_url(target, kwargs)
                policy = self._sc_rules.policy_for(str(url))
                if policy is None:
                    return None  # DO_NOT_CACHE
                primary = primary_key_url(method, str(url))
            except (ValueError, TypeError):
                return None  # aiohttp reports the bad URL itself
            headers = self._sc_request_headers(url, kwargs)
            if hdrs.UPGRADE in headers:
                return None  # a WebSocket (or h2c) handshake is never cached
            raw = raw_headers(headers)
            # A HEAD follows GET's request rules: its response is stored too (RFC 9111 §3
            # allows it), at a key of its own (_aiohttp_storage.head_key).
            decision = decide_request("GET" if method == "HEAD" else method, raw, policy)
            follow = bool(kwargs.get("allow_redirects", True))
            return Call(
                method, target, kwargs, url, primary, headers, raw, policy, decision, follow
            )

        def _sc_url(self, target: StrOrURL, kwargs: Mapping[str, Any]) -> URL:
            url = self._build_url(target)
            params = kwargs.get("params")
            return url.extend_query(params) if params else url

        def _sc_request_headers(self, url: URL, kwargs: Mapping[str, Any]) -> CIMultiDict[str]:
            """The header fields aiohttp will send (``ClientRequest`` adds the automatic
            ones, the credentials and the cookies), for ``Vary`` and request directives."""
            headers = self._prepare_headers(kwargs.get("headers"))
            skip = {name.lower() for name in self.skip_auto_headers}
            skip.update(name.lower() for name in kwargs.get("skip_auto_headers") or ())
            automatic = {**self._request_class.DEFAULT_HEADERS, hdrs.USER_AGENT: SERVER_SOFTWARE}
            for name, value in automatic.items():
                if name not in headers and name.lower() not in skip:
                    headers[name] = value
            auth = kwargs.get("auth") or aiohttp.BasicAuth.from_url(url) or self.auth
            if auth is not None and hdrs.AUTHORIZATION not in headers:
                headers[hdrs.AUTHORIZATION] = auth.encode()
            cookie = _cookie_header(
                headers.get(hdrs.COOKIE), self.cookie_jar.filter_cookies(url), kwargs.get("cookies")
            )
            if cookie:
                headers[hdrs.COOKIE] = cookie
            return headers
