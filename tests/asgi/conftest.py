"""The middleware tests use a small cache (2 shards: opening 8 SQLite files per test is
most of a test's time, and nothing here depends on the shard count)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shardcache import AsyncCache


@pytest.fixture
def cache(make_cache: Callable[..., AsyncCache]) -> AsyncCache:
    return make_cache(shards=2)
