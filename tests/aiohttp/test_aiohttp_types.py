"""Static typing of CachedSession: ``session.get(...)`` gives a :class:`CachedResponse`, so
``resp.from_cache`` type-checks (``mypy --strict tests/aiohttp/test_aiohttp_types.py``;
``assert_type`` fails on any other type, ``Any`` included). The test runs the same code, so
the claims hold at runtime too, with ``base_url``."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from typing_extensions import assert_type

from shardcache import AsyncCache
from shardcache.aiohttp import CachedResponse, CachedSession


async def use(cache: AsyncCache, url: str) -> list[bool]:
    hits: list[bool] = []
    async with CachedSession(cache=cache, base_url=url) as session:
        assert_type(session, CachedSession)
        for _ in range(2):
            async with session.get("page") as resp:
                assert_type(resp, CachedResponse)
                assert_type(resp.from_cache, bool)
                assert_type(await resp.text(), str)
                hits.append(resp.from_cache)
        head = await session.head("page")
        assert_type(head, CachedResponse)
        hits.append(head.from_cache)
        head.release()
    return hits


async def test_types_and_base_url(origin: Any, cache: AsyncCache) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="typed")

    origin.handlers["/page"] = handler
    assert await use(cache, origin.url("/")) == [False, True, True]
