"""Static typing of ``AsyncCache``'s reads, checked by ``mypy --strict tests/typing``.

``assert_type`` fails when a type differs (``Any`` included): ``get(key, type=User)`` is a
``User | None``, a default joins the union, a type form that is not a class (``User | None``,
``Literal[...]``) is accepted and reads as ``Any``, ``get_or_set`` returns its factory's
type, and ``async with`` keeps a subclass. The test at the bottom runs the same calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec
from typing_extensions import assert_type

from shardcache import AsyncCache


class User(msgspec.Struct):
    id: int


class MyCache(AsyncCache):
    """A subclass, as an app might make one."""


async def make_user() -> User:
    return User(id=7)


async def _checked_by_mypy_only(cache: AsyncCache, path: Path) -> None:
    """Never run: every line is a claim about types."""
    assert_type(await cache.get("u", type=User), User | None)
    assert_type(await cache.get("u", None, type=User), User | None)
    assert_type(await cache.get("n", 0, type=int), int)
    assert_type(await cache.get("n", "none", type=int), int | str)
    assert_type(await cache.get("u", type=User | None), Any)
    assert_type(await cache.get("l", type=Literal["a", "b"]), Any)
    assert_type(await cache.get("k"), Any)
    assert_type(await cache.get_or_set("u", make_user), User)
    async with MyCache(path) as mine:
        assert_type(mine, MyCache)


async def test_types_hold_at_runtime(tmp_path: Path) -> None:
    async with MyCache(tmp_path) as cache:
        assert isinstance(cache, MyCache)
        assert await cache.get("u", type=User) is None
        assert await cache.get("n", 0, type=int) == 0
        assert await cache.get_or_set("u", make_user) == User(id=7)
        assert await cache.get("u", type=User) == User(id=7)
        assert await cache.get("u", type=User | None) == User(id=7)
        await cache.set("l", "a")
        assert await cache.get("l", type=Literal["a", "b"]) == "a"
