"""Static typing of ``@acached``, checked by ``mypy --strict tests/typing`` (``make typecheck``).

``assert_type`` fails when the wrapper's types differ (``Any`` included), and each
``# type: ignore[...]`` below marks a call that must be rejected: under ``--strict``
(``warn_unused_ignores``) an ignore that is no longer needed is itself an error, so these
lines fail the check the moment the wrapper stops carrying the wrapped signature.
The test at the bottom runs the same kind of functions, so the claims hold at runtime too.
"""

from __future__ import annotations

from pathlib import Path

from typing_extensions import assert_type

from shardcache import AsyncCache, CachedFunction, acached


async def greet(name: str) -> str:
    """Say hello."""
    return f"hello {name}"


def sync_function(x: int) -> int:
    return x


class Users:
    @acached(ignore=("self",), ttl=60)  # the default cache, opened only when called
    async def get(self, user_id: int) -> str:
        return f"user {user_id}"


async def _checked_by_mypy_only(cache: AsyncCache) -> None:
    """Never run: every line is a claim about types."""

    @acached(cache, ttl=60, tag="users", stale_ttl=5, version=2)
    async def f(user_id: int, *, verbose: bool = False) -> dict[str, int]:
        return {}

    assert_type(await f(1), dict[str, int])
    assert_type(await f(user_id=1, verbose=True), dict[str, int])
    assert_type(await f.refresh(1), dict[str, int])
    assert_type(await f.invalidate(1, verbose=False), bool)
    await f("1")  # type: ignore[arg-type]
    await f(1, True)  # type: ignore[call-arg]
    await f(1, colour="red")  # type: ignore[call-arg]
    f.cache_key("1")  # type: ignore[arg-type]
    await f.invalidate("1")  # type: ignore[arg-type]
    await f.refresh()  # type: ignore[call-arg]

    @acached
    async def g(x: int) -> str | None:
        return None

    assert_type(await g(1), str | None)
    await g(None)  # type: ignore[arg-type]
    bare = acached(greet)
    assert_type(await bare("ada"), str)
    await bare(1)  # type: ignore[arg-type]

    users = Users()
    assert_type(await users.get(1), str)
    assert_type(await users.get.refresh(1), str)
    await users.get("1")  # type: ignore[arg-type]
    users.get.cache_key(1, 2)  # type: ignore[call-arg]
    assert_type(await Users.get(users, 1), str)

    acached(sync_function)  # type: ignore[arg-type]
    acached(cache)(sync_function)  # type: ignore[arg-type]


async def test_types_hold_at_runtime(tmp_path: Path) -> None:
    async with AsyncCache(tmp_path) as cache:

        @acached(cache, ttl=60)
        async def f(user_id: int, *, verbose: bool = False) -> dict[str, int]:
            return {"id": user_id, "verbose": int(verbose)}

        assert await f(1, verbose=True) == {"id": 1, "verbose": 1}
        assert await f.refresh(1, verbose=True) == {"id": 1, "verbose": 1}
        assert await f.invalidate(1, verbose=True) is True
        bare = acached(greet)
        assert isinstance(bare, CachedFunction)
        assert bare.__doc__ == "Say hello."
        assert Users().get.cache_key(1) == Users().get.cache_key(1)
