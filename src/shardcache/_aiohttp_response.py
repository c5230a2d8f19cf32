"""The response a :class:`~shardcache.aiohttp.CachedSession` returns.

It is aiohttp's own :class:`aiohttp.ClientResponse`, so ``text()``, ``json()``,
``raise_for_status()``, ``content_type``, ``links``... behave exactly as aiohttp's do. A
response from the network is created by aiohttp (the session's ``response_class``) and has
``from_cache = False``; a response answered from the cache is rebuilt here from a
:class:`~shardcache._http.StoredResponse`: its body is already in memory, its connection is
``None``, and ``from_cache`` is ``True``.

Rebuilding one without a connection sets the attributes that aiohttp's ``start()`` would
have set (status, headers, body, stream); every other attribute keeps its class default.
``tests/aiohttp/test_aiohttp_response.py`` exercises the whole public surface, so that an
aiohttp release that renames one of them fails there, not in a user's scraper.
"""

from __future__ import annotations

import asyncio
import http
from collections.abc import Sequence

import aiohttp
from aiohttp.base_protocol import BaseProtocol
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

__all__ = ["CachedResponse", "decode_headers", "refill_content", "usual_reason"]

# A stream that holds the whole body never pauses its (absent) transport: its limit is
# at least the body size, so StreamReader never calls protocol.pause_reading().
_STREAM_LIMIT = 2**16


def usual_reason(status: int) -> str:
    """The IANA reason phrase of ``status`` (``""`` for an unregistered one)."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def decode_headers(raw: Sequence[tuple[bytes, bytes]]) -> CIMultiDictProxy[str]:
    """Raw header pairs as aiohttp exposes them (``utf-8`` with ``surrogateescape``)."""
    return CIMultiDictProxy(
        CIMultiDict(
            (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))
            for name, value in raw
        )
    )


def _stream_of(body: bytes, loop: asyncio.AbstractEventLoop) -> aiohttp.StreamReader:
    """A finished stream that yields ``body`` (the same bytes object: nothing is copied)."""
    stream = aiohttp.StreamReader(BaseProtocol(loop), max(_STREAM_LIMIT, len(body)), loop=loop)
    if body:
        stream.feed_data(body)
    stream.feed_eof()
    return stream


def refill_content(response: aiohttp.ClientResponse, body: bytes) -> None:
    """After ``read()`` took the body for storing: ``response.content`` yields it again, so
    a caller that streams (``content.read()``, ``iter_chunked``) gets the whole body."""
    response.content = _stream_of(body, asyncio.get_running_loop())


class CachedResponse(aiohttp.ClientResponse):
    """An :class:`aiohttp.ClientResponse` with ``from_cache``.

    ``from_cache`` is ``False`` for the real response from the network and ``True`` for
    one answered by the cache (a fresh hit, a stale entry served under
    ``stale-while-revalidate``/``stale_if_error``, or an entry refreshed by a ``304``).
    A cached response has its body in memory; ``history`` is empty and ``url`` is the
    final URL of the stored exchange.

    Example::

        async with session.get("https://example.com/") as resp:
            print(resp.status, resp.from_cache, await resp.text())
    """

    from_cache: bool = False

    @classmethod
    def _rebuild(
        cls,
        *,
        method: str,
        url: URL,
        status: int,
        reason: str | None = None,
        raw_headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        request_headers: CIMultiDictProxy[str],
        session: aiohttp.ClientSession,
        loop: asyncio.AbstractEventLoop,
    ) -> CachedResponse:
        """A response answered from the cache: what ``ClientResponse.start()`` would set."""
        self = cls.__new__(cls)
        self.method = method
        self._real_url = url
        self._url = url.with_fragment(None)
        self._request_info = aiohttp.RequestInfo(url, method, request_headers, url)
        self._cache = {}  # aiohttp's @reify stores computed properties here
        self._traces = []
        self._loop = loop
        self._resolve_charset = session._resolve_charset
        self.version = aiohttp.HttpVersion11
        self.status = status
        self.reason = usual_reason(status) if reason is None else reason
        self._raw_headers = tuple(raw_headers)
        self._headers = decode_headers(raw_headers)
        cookies = self._headers.getall("Set-Cookie", ())
        if cookies:
            self._raw_cookie_headers = tuple(cookies)
        self._body = body
        # The stream and _body share one bytes object: nothing is copied.
        self.content = _stream_of(body, loop)
        self.from_cache = True
        return self
