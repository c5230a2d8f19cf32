"""The origin server and clock of the CachedSession tests (fixtures in ``conftest.py``).

* :class:`Origin`: a real aiohttp web server on 127.0.0.1 (an ephemeral port). Each test
  registers its handlers with ``@origin.route(path)``; the server counts hits per path and
  keeps each request's method and headers. Its ``Date`` header follows the clock.
* :class:`Clock`: the real time plus an offset that ``advance(seconds)`` moves, so that
  freshness is tested without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy

from shardcache._http import format_http_date
from shardcache.aiohttp import CachedResponse

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
WAIT = 10.0  # seconds: the bound of every wait in these tests


class Clock:
    """Wall-clock time plus an adjustable offset."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class Origin:
    """An HTTP origin whose handlers the test defines, counting hits per path."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.hits: Counter[str] = Counter()
        self.requests: defaultdict[str, list[tuple[str, CIMultiDictProxy[str]]]] = defaultdict(list)
        self.handlers: dict[str, Handler] = {}
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        app.on_response_prepare.append(self._date)
        self.server = TestServer(app, host="127.0.0.1")

    def route(self, path: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.handlers[path] = handler
            return handler

        return register

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def headers(self, path: str, index: int = -1) -> CIMultiDictProxy[str]:
        """The request headers of one hit on ``path`` (the last one by default)."""
        return self.requests[path][index][1]

    async def wait_hits(self, path: str, count: int) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.hits[path] >= count), WAIT)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.hits[request.path] += 1
        headers = CIMultiDictProxy(request.headers.copy())
        self.requests[request.path].append((request.method, headers))
        async with self._changed:
            self._changed.notify_all()
        handler = self.handlers.get(request.path)
        if handler is None:
            return web.Response(status=404, text="no such route")
        return await handler(request)

    async def _date(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Date"] = format_http_date(self.clock()).decode()


async def fetch(
    session: aiohttp.ClientSession, url: str, method: str = "GET", **kwargs: Any
) -> tuple[int, bytes, bool]:
    """``(status, body, from_cache)`` of one request."""
    async with session.request(method, url, **kwargs) as resp:
        assert isinstance(resp, CachedResponse)
        return resp.status, await resp.read(), resp.from_cache


def counting(origin: Origin, path: str, **headers: str) -> None:
    """A route answering ``v<hit number>`` with these header fields."""

    @origin.route(path)
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=f"v{origin.hits[path]}", headers=headers)
