"""Fixtures for the CachedSession tests (the root conftest gives ``cache``/``make_cache``).

* ``origin``: an :class:`~aiohttp_origin.Origin` on 127.0.0.1, stopped after the test.
* ``clock``: the :class:`~aiohttp_origin.Clock` that the sessions and the origin share.
* ``make_session``: ``CachedSession(cache=cache, **options)`` on that clock, closed after
  the test.

(No ``__init__.py`` here: under pytest's default import mode it would make this directory
a package named ``aiohttp`` in front of the real one.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp_origin import Clock, Origin

from shardcache import AsyncCache
from shardcache.aiohttp import CachedSession


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def origin(clock: Clock) -> AsyncIterator[Origin]:
    server = Origin(clock)
    await server.server.start_server()
    try:
        yield server
    finally:
        await server.server.close()


@pytest.fixture
async def make_session(
    cache: AsyncCache, clock: Clock
) -> AsyncIterator[Callable[..., CachedSession]]:
    made: list[CachedSession] = []

    def make(**options: Any) -> CachedSession:
        options.setdefault("cache", cache)
        session = CachedSession(**options)
        session._sc_http.clock = clock
        made.append(session)
        return session

    yield make
    for session in made:
        await session.close()
