"""``single_flight`` (the HTTP drivers' stampede protection): waiters are not held up by
the leader's lease release."""

from __future__ import annotations

import asyncio
from typing import Any

from shardcache import AsyncCache
from shardcache._stampede import single_flight


class HeldRelease:
    """An AsyncCache whose lease releases wait until ``release`` is set (a writer thread
    that is slow to commit under load)."""

    def __init__(self, inner: AsyncCache) -> None:
        self.inner = inner
        self.release = asyncio.Event()
        self.releases_started = 0

    async def release_lease(self, key: Any, owner: str) -> None:
        self.releases_started += 1
        await self.release.wait()
        await self.inner.release_lease(key, owner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def none() -> None:
    return None


async def test_waiters_get_an_unshareable_result_before_the_lease_release_commits(
    cache: AsyncCache,
) -> None:
    backend = HeldRelease(cache)
    leader_ran = asyncio.Event()
    went_to_source: list[int] = []

    async def lead() -> tuple[Any, bool]:
        leader_ran.set()
        await asyncio.sleep(0.01)  # the waiters queue behind the flight meanwhile
        return "private", False

    def waiter_produce(i: int) -> Any:
        async def produce() -> tuple[Any, bool]:
            went_to_source.append(i)
            return f"own {i}", False

        return produce

    leader = asyncio.ensure_future(single_flight(backend, "url", none, lead))
    await leader_ran.wait()
    waiters = [
        asyncio.ensure_future(single_flight(backend, "url", none, waiter_produce(i)))
        for i in range(5)
    ]
    # A bound, not a speed check: without the early hand-off they wait for the release.
    done, _ = await asyncio.wait(waiters, timeout=30)
    assert done == set(waiters), "waiters were held until the lease release committed"
    assert not leader.done() and backend.releases_started == 1
    assert sorted(went_to_source) == list(range(5))
    assert [w.result() for w in waiters] == [(f"own {i}", True) for i in range(5)]
    backend.release.set()
    assert await leader == ("private", True)


async def test_a_shared_result_reaches_waiters_and_newcomers_before_the_release(
    cache: AsyncCache,
) -> None:
    backend = HeldRelease(cache)
    leader_ran = asyncio.Event()
    produced: list[str] = []

    async def lead() -> tuple[Any, bool]:
        leader_ran.set()
        await asyncio.sleep(0.01)
        produced.append("leader")
        return "shared response", True

    async def other() -> tuple[Any, bool]:
        produced.append("other")
        return "another", True

    leader = asyncio.ensure_future(single_flight(backend, "url", none, lead))
    await leader_ran.wait()
    waiter = asyncio.ensure_future(single_flight(backend, "url", none, other))
    done, _ = await asyncio.wait([waiter], timeout=30)
    assert done == {waiter}
    assert waiter.result() == ("shared response", False)
    # A newcomer while the release is still pending takes the published result too.
    assert await single_flight(backend, "url", none, other) == ("shared response", False)
    assert produced == ["leader"]
    backend.release.set()
    assert await leader == ("shared response", True)
