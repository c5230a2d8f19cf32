"""Fixtures shared by the whole suite.

* Every async test runs twice, on the default asyncio loop and on uvloop, through
  pytest-asyncio's ``pytest_asyncio_loop_factories`` hook (the 1.x replacement of the
  ``event_loop_policy`` fixture). ``@pytest.mark.asyncio(loop_factories=["asyncio"])``
  picks one of them for a test whose claim does not depend on the loop.
* ``cache_dir`` is a fresh directory path per test that does not exist yet, so the cache
  creates it (and its mode can be checked).
* ``cache`` is an open-on-first-use :class:`AsyncCache` on ``cache_dir``; ``make_cache``
  builds more (other options, other directories). Both use ``SHARDS`` shards unless told
  otherwise: several shards, so routing and per-shard work are exercised, at half the
  opening cost of the default 8. Every cache built here is closed after the test,
  whatever the test did to it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from _helpers import SHARDS
from shardcache import AsyncCache

LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
}
if sys.platform != "win32":
    import uvloop

    LOOP_FACTORIES["uvloop"] = uvloop.new_event_loop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return LOOP_FACTORIES


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
async def make_cache(cache_dir: Path) -> AsyncIterator[Callable[..., AsyncCache]]:
    made: list[AsyncCache] = []

    def make(directory: Path | None = None, **options: Any) -> AsyncCache:
        options.setdefault("shards", SHARDS)
        cache = AsyncCache(cache_dir if directory is None else directory, **options)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.aclose()


@pytest.fixture
def cache(make_cache: Callable[..., AsyncCache]) -> AsyncCache:
    return make_cache()
